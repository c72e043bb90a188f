"""PgBouncer in transaction pool mode in front of the bench's PostgreSQL, as production runs many
`tally serve` processes: started by the harness on a free port with its own configuration in a
temporary folder, and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness.config import POOL_SIZE
from harness.procs import free_port

PGBOUNCER_HINT = (
    "PgBouncer is not installed, so the pgbouncer scenario did not run (apt-get install pgbouncer)"
)
START_TIMEOUT = 10.0
RUN_AS_WHEN_ROOT = "nobody"  # PgBouncer refuses to run as root, and switches to `user` itself


def pgbouncer_path() -> str | None:
    """Debian installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def _config(upstream_host: str, upstream_port: int, port: int, folder: Path) -> str:
    """Every database of the server, one pool per database and user of at most one server
    process's connections (`POOL_SIZE`), handed out per transaction."""
    lines = [
        "[databases]",
        f"* = host={upstream_host} port={upstream_port}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {folder / 'users.txt'}",
        "pool_mode = transaction",
        f"default_pool_size = {POOL_SIZE}",
        "max_client_conn = 500",
    ]
    if os.geteuid() == 0:
        lines.append(f"user = {RUN_AS_WHEN_ROOT}")
    return "\n".join(lines) + "\n"


@contextmanager
def pgbouncer(database_url: str, *, log_dir: Path) -> Iterator[str]:
    """PgBouncer in front of the server of `database_url`; the URL of the same database through
    it."""
    binary = pgbouncer_path()
    if binary is None:
        raise RuntimeError(PGBOUNCER_HINT)
    url = urlsplit(database_url)
    user, port = url.username or "postgres", free_port()
    with tempfile.TemporaryDirectory(prefix="tally-bench-pgbouncer-") as folder:
        os.chmod(folder, 0o755)  # readable by RUN_AS_WHEN_ROOT
        config = Path(folder) / "pgbouncer.ini"
        upstream = url.hostname or "127.0.0.1", url.port or 5432
        config.write_text(_config(*upstream, port, Path(folder)))
        (Path(folder) / "users.txt").write_text(f'"{user}" ""\n')
        with (log_dir / "pgbouncer.log").open("wb") as sink:
            process = subprocess.Popen(
                [binary, str(config)], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_accepting(process, port, log_dir / "pgbouncer.log")
            yield urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{port}"))
        finally:
            process.terminate()
            process.wait(timeout=15)


def _wait_accepting(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # not listening yet
    process.terminate()
    raise RuntimeError(f"pgbouncer did not start within {START_TIMEOUT:.0f} s")
