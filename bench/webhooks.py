"""Webhook throughput: how long the dispatcher takes to deliver N events to a fast local receiver.

    .venv/bin/python bench/webhooks.py [--events 10000] [--database URL]

The events are written straight into the outbox (what the API's writes would have written),
one endpoint takes every type, and `tally deliver --once`'s dispatcher (in this process)
delivers them to a receiver in a process of its own on 127.0.0.1 that answers 200 at once.
The time is from the first fan-out to the last recorded success; every delivery is checked to
have succeeded. The target (issue #12) is 10,000 events in under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tally.commands import EndpointDraft
from tally.delivery.dispatcher import Dispatcher
from tally.delivery.sender import Sender
from tally.domain import DeliveryStatus, WebhookEndpoint
from tally.maintenance import run_async
from tally.service import Ledger, WebhookPolicy, outbox
from tally.storage import open_store

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _receiver(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def measure(database_url: str, events: int) -> float:
    """Seconds to deliver `events` events; every delivery is checked to have succeeded."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    receiver = multiprocessing.get_context("fork").Process(
        target=_receiver, args=(sock,), daemon=True
    )
    receiver.start()
    store = open_store(database_url)
    try:
        store.migrate()
        ledger = Ledger(store, webhooks=WebhookPolicy(allow_private=True))
        now = datetime.now(UTC)
        program = store.transact(lambda tx: tx.programs.ensure("bench", now=now))

        def shown(endpoint: WebhookEndpoint) -> tuple[int, bytes]:
            return 201, endpoint.id.encode()

        async def create() -> str:
            draft = EndpointDraft(f"http://127.0.0.1:{port}/hook", ["*"], "bench")
            reply = await ledger.webhooks.create(program.id, draft, idempotency=None, render=shown)
            return reply.body.decode()

        endpoint_id = run_async(store, create)
        for start in range(0, events, 1000):
            batch = [
                outbox.event(program.id, "member.created", {"member_id": f"m{i}"}, now)
                for i in range(start, min(events, start + 1000))
            ]
            store.transact(lambda tx, batch=batch: tx.events.append(batch))

        async def deliver() -> None:
            sender = Sender(timeout=15, allow_private=True)
            try:
                await Dispatcher(ledger.webhooks, sender).run_once()
            finally:
                await sender.aclose()

        began = time.perf_counter()
        run_async(store, deliver)
        took = time.perf_counter() - began
        done = store.transact(
            lambda tx: tx.webhooks.count_deliveries(endpoint_id, DeliveryStatus.SUCCEEDED)
        )
        if done != events:
            raise AssertionError(f"only {done} of {events} deliveries succeeded")
        return took
    finally:
        store.close()
        receiver.kill()
        receiver.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--database", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        took = measure(url, args.events)
    backend = url.split(":", 1)[0]
    print(
        f"{args.events} events delivered on {backend} in {took:.2f} s "
        f"({args.events / took:,.0f} deliveries/s)",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
