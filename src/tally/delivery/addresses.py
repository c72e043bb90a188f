"""The SSRF guard: an endpoint's host must resolve only to public addresses.

Checked when an endpoint is created or its URL changed, and again before every attempt, after
DNS, on the addresses the attempt then connects to (`sender.py` connects to the address checked
here, never resolving again, so a name that changes its answer between the check and the
connection cannot point it inside the network). `TALLY_WEBHOOKS_ALLOW_PRIVATE=true` turns the
guard off (tests, endpoints on a private network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

RESOLVE_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(Exception):
    """The endpoint's host is not one Tally may send to; the message says why."""


def refusal(address: IPAddress) -> str | None:
    """Why an address is refused (`"loopback"`, `"private"`, ...), or None if it is public.

    An IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not global"  # shared address space (100.64.0.0/10) and the like
    return None


async def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, if each of them is public; raises `RefusedAddress`."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [str(literal)]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_SECONDS):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise RefusedAddress(f"the host {host} does not resolve") from None
        found = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
        if not found:
            raise RefusedAddress(f"the host {host} does not resolve")
    for text in found:
        why = refusal(ipaddress.ip_address(text))
        if why is not None:
            raise RefusedAddress(
                f"the host {host} resolves to {text}, a {why} address; set "
                "TALLY_WEBHOOKS_ALLOW_PRIVATE=true to allow private endpoints"
            )
    return found
