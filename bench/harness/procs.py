"""Server processes on 127.0.0.1: start, wait until they answer, measure memory, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.config import BENCH_DIR

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process group; `url` is where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def pids(self) -> list[int]:
        """The server's process and all its descendants (uvicorn workers)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                parent = _parent_pid(entry)
                if parent is not None:
                    children.setdefault(parent, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def rss_by_pid(self) -> dict[int, float]:
        """Resident set of each server process, in MiB."""
        return {pid: _rss_kib(pid) / 1024 for pid in self.pids()}

    def rss_mb(self) -> float:
        """The largest resident set of any one server process (the target is per process)."""
        return max(self.rss_by_pid().values(), default=0.0)

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server's processes have used so far."""
        return sum(_cpu_ticks(pid) for pid in self.pids()) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def _parent_pid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def _cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` in clock ticks (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after the name


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _start(name: str, command: list[str], port: int, log_dir: Path, env: dict[str, str]) -> Server:
    log = log_dir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=BENCH_DIR,
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log)
    _wait_listening(server, port)
    return server


def _wait_listening(server: Server, port: int) -> None:
    """Poll the port until it accepts; a server that exits or hangs is an error."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited: {server.log.read_text()[-2000:]}")
        try:
            httpx.get(server.url + "/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)  # the port is not open yet
    server.stop()
    raise RuntimeError(f"{server.name} did not start within {START_TIMEOUT:.0f} s")


@contextmanager
def tally_server(
    database_url: str, *, workers: int, log_dir: Path, label: str | None = None
) -> Iterator[Server]:
    """`tally serve` exactly as a user runs it; `label` names its log (several may run)."""
    port = free_port()
    command = [
        str(BIN / "tally"),
        "serve",
        "--database",
        database_url,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    # One key sends thousands of requests a second: the per-key rate limit (on by default)
    # would refuse most of them. Everything else is as a user runs it.
    # The webhooks scenario's receiver listens on 127.0.0.1, which the SSRF guard refuses.
    unlimited = {"TALLY_RATE_LIMIT": "off", "TALLY_WEBHOOKS_ALLOW_PRIVATE": "true"}
    name = label or "tally-" + database_url.split(":", 1)[0]
    server = _start(name, command, port, log_dir, unlimited)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def reference_server(module: str, *, workers: int, log_dir: Path) -> Iterator[Server]:
    """A reference app (`refs.floor` or `refs.ceiling`) under `tally serve`'s uvicorn settings."""
    port = free_port()
    command = [
        str(BIN / "python"),
        "-m",
        "uvicorn",
        f"{module}:serving_app",
        "--factory",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = _start(module, command, port, log_dir, {})
    try:
        yield server
    finally:
        server.stop()
