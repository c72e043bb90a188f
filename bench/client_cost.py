"""What one webhook delivery costs the sending process's CPU: Tally's `Sender` (aiohttp), and
for comparison httpx doing the same requests (what the dispatcher used before).

    .venv/bin/python bench/client_cost.py [--deliveries 5000] [--in-flight 8]

The receiver (`refs/receiver.py`, answering `204` at once) runs in a process of its own, so
only the client's CPU is counted: user + system time of this process while the deliveries are
made, `in_flight` at a time as the dispatcher makes them to one endpoint. See "Webhook
delivery" in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from harness.procs import reference_server

from tally.delivery.sender import Sender

Post = Callable[[str, str, dict[str, str]], Awaitable[int | None]]

BODY = json.dumps(
    {
        "id": "evt_01JBENCHBENCHBENCHBENCHBENCH",
        "type": "points.awarded",
        "created_at": "2026-12-05T08:00:00Z",
        "data": {"member_id": "m42", "points": 10, "balance": 1510, "reason": "bench hook"},
    }
)
HEADERS = {
    "webhook-id": "evt_01JBENCHBENCHBENCHBENCHBENCH",
    "webhook-timestamp": "1796457600",
    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
}


async def cpu_per_delivery(post: Post, url: str, *, deliveries: int, in_flight: int) -> float:
    """Microseconds of this process's CPU per delivery (after a warm-up of `in_flight` each)."""
    queue = iter(range(deliveries))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for _ in queue:
            failed += (await post(url, BODY, HEADERS)) != 204

    await asyncio.gather(*(post(url, BODY, HEADERS) for _ in range(in_flight)))
    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    used = time.process_time() - started
    if failed:
        raise RuntimeError(f"{failed} of {deliveries} deliveries failed")
    return used / deliveries * 1e6


async def measure(url: str, *, deliveries: int, in_flight: int) -> dict[str, float]:
    sender = Sender(timeout=10, allow_private=True)

    async def with_sender(target: str, body: str, headers: dict[str, str]) -> int | None:
        return (await sender.send(target, body=body, headers=headers)).status_code

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    client = httpx.AsyncClient(timeout=10, limits=limits, follow_redirects=False, trust_env=False)

    async def with_httpx(target: str, body: str, headers: dict[str, str]) -> int | None:
        sent = {**headers, "content-type": "application/json", "user-agent": "Tally-Webhooks/1"}
        async with client.stream("POST", target, content=body.encode(), headers=sent) as answer:
            async for _ in answer.aiter_raw():
                pass
            return answer.status_code

    found = {}
    try:
        for name, post in (("Sender (aiohttp)", with_sender), ("httpx", with_httpx)):
            found[name] = await cpu_per_delivery(
                post, url, deliveries=deliveries, in_flight=in_flight
            )
    finally:
        await sender.aclose()
        await client.aclose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tally-bench-logs-") as logs,
        reference_server("refs.receiver", workers=1, log_dir=Path(logs)) as receiver,
    ):
        found = asyncio.run(
            measure(receiver.url + "/hook", deliveries=args.deliveries, in_flight=args.in_flight)
        )
    print(f"{args.deliveries:,} deliveries, {args.in_flight} in flight; CPU of the sender:")
    for name, micros in found.items():
        print(f"- {name}: {micros:,.0f} µs per delivery")


if __name__ == "__main__":
    main()
