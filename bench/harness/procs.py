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
from harness.load import LoadResult

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


def database_cpu_seconds() -> float:
    """CPU time (user and system) PostgreSQL on this machine has used so far: every live process
    of it (backends, background writers), plus what its ended backends used, which the
    postmaster collected when it reaped them (pgbench's connections end with its run). The
    bench machine runs one PostgreSQL, and nothing else uses it during a run. 0 where none is
    visible: a database on another machine is not measured."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _name(entry) != "postgres":
            continue
        ticks += _cpu_ticks(int(entry.name))
        parent = _parent_pid(entry)
        if parent is not None and _name(Path(f"/proc/{parent}")) != "postgres":
            ticks += _cpu_ticks(int(entry.name), ended_children=True)  # the postmaster
    return ticks / os.sysconf("SC_CLK_TCK")


def backends_of(database: str) -> int:
    """How many PostgreSQL backends on this machine are connected to `database`."""
    marker = f" {database} ".encode()
    return sum(
        1
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _name(entry) == "postgres" and marker in _cmdline(entry)
    )


def settled_backends_of(database: str, *, timeout: float = 5.0) -> int:
    """`backends_of(database)` once it has stopped falling for 0.2 s: the backends that stay
    (a `tally serve`'s pool), not those of clients that have just disconnected."""
    deadline = time.monotonic() + timeout
    count = backends_of(database)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = backends_of(database)
        if now >= count:
            return now
        count = now
    return count


def wait_for_backends(database: str, *, at_most: int, timeout: float = 10.0) -> None:
    """Wait until `database` has at most `at_most` backends: a client that has disconnected
    leaves its backend to end and be reaped a moment later, and the CPU it used should fall
    on the side of a measurement it belongs to."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # An ended backend the postmaster has not reaped yet still shows its CPU, which moves to
        # the postmaster's total when it is reaped: reading both at that moment counts it twice.
        if backends_of(database) <= at_most and not _unreaped_postgres():
            return
        time.sleep(0.05)


def _unreaped_postgres() -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _name(entry) == "postgres":
            try:
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state == "Z":
                return True
    return False


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def record_database_cpu(result: LoadResult, seconds: float) -> None:
    """Put PostgreSQL's CPU `seconds` over `result`'s run into it, per request and in cores
    (nothing when no PostgreSQL process was visible)."""
    if seconds > 0:
        result.extra["database_cpu_ms_per_request"] = round(
            seconds * 1000 / max(1, result.requests), 3
        )
        result.extra["database_cpu_share"] = round(seconds / max(result.seconds, 1e-9), 2)


def _name(proc_dir: Path) -> str:
    try:
        return (proc_dir / "comm").read_text().strip()
    except OSError:
        return ""


def _parent_pid(proc_dir: Path) -> int | None:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def _cpu_ticks(pid: int, *, ended_children: bool = False) -> int:
    """utime + stime of `pid` in clock ticks (0 once it has gone); with `ended_children`, the
    cutime + cstime of the children it has waited for instead."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    if ended_children:
        return int(fields[13]) + int(fields[14])  # fields 16 and 17 of proc(5)
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
