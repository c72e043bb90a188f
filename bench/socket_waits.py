"""What one wait for a readable socket costs the event loop's CPU: the connection's socket
registered with the loop for that one wait and unregistered after it (what the pipe did until
2026-12-07, and what psycopg's own `wait_async` does), against `Readable`, which registers it
once and keeps it.

    .venv/bin/python bench/socket_waits.py [--waits 50000] [--loop uvloop|asyncio]

A socketpair stands in for the database connection: each wait is preceded by one byte sent to
the other end and followed by reading it, as a round trip's answer would be. The figure is CPU
(user + system) per wait, both ways in one process, three times each, interleaved. See "The
socket stays with the event loop" in bench/README.md; `strace -f -c` around one way or the
other shows the system calls (six `epoll_ctl`, three of them failing, and an `ioctl` per wait
registered anew; none with `Readable`).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast

import uvloop
from psycopg import pq

from tally.storage.pipeline import Readable

Way = Callable[[socket.socket, socket.socket, int], Awaitable[None]]


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def registered_per_wait(ours: socket.socket, theirs: socket.socket, waits: int) -> None:
    loop = asyncio.get_running_loop()
    fd = ours.fileno()
    for _ in range(waits):
        theirs.send(b"x")
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        ours.recv(16)


class _Socket:
    """The one thing `Readable` asks of a libpq connection: its socket's number."""

    def __init__(self, fd: int) -> None:
        self.socket = fd


async def registered_once(ours: socket.socket, theirs: socket.socket, waits: int) -> None:
    readable = Readable(cast(pq.abc.PGconn, _Socket(ours.fileno())))
    try:
        for _ in range(waits):
            theirs.send(b"x")
            await readable.wait()
            ours.recv(16)
    finally:
        readable.stop()


async def cpu_per_wait(way: Way, waits: int) -> float:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        started = time.process_time()
        await way(ours, theirs, waits)
        return (time.process_time() - started) / waits * 1e6
    finally:
        ours.close()
        theirs.close()


async def measure(waits: int) -> None:
    for _ in range(3):
        for way in (registered_per_wait, registered_once):
            micros = await cpu_per_wait(way, waits)
            print(f"{way.__name__}: {micros:.1f} µs CPU per wait")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=50_000)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        uvloop.run(measure(args.waits))
    else:
        asyncio.run(measure(args.waits))


if __name__ == "__main__":
    main()
