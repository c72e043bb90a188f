"""Test helpers: a movable clock, an API client with a key (that checks every answer against the
OpenAPI document), and real server processes."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from starlette.testclient import TestClient

from tally.config import Settings
from tally.domain import Scope
from tally.http.app import create_app
from tally.http.openapi import openapi_document
from tally.http.routes import ROUTES
from tally.maintenance import create_key
from tally.ports import Store


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeTicks:
    """A monotonic clock (seconds) that moves only when told to: the rate limiter's."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.contextmanager
def serve_app(
    store: Store,
    *,
    clock: FakeClock,
    monotonic: Callable[[], float] = time.monotonic,
    **settings: Any,
) -> Iterator[TestClient]:
    # No background sweep, and no webhook dispatcher unless a test asks for one.
    settings = {"sweep_interval": 0, "webhooks_poll_seconds": 0, **settings}
    app = create_app(store, settings=Settings(**settings), clock=clock, monotonic=monotonic)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@dataclass(frozen=True)
class Operation:
    """One operation of the OpenAPI document and the statuses it lists."""

    method: str
    template: str
    pattern: re.Pattern[str]
    responses: dict[str, Any]

    def lists(self, status: int, code: str | None) -> bool:
        """Whether the document lists `status` here, and names `code` for it (when an error)."""
        answer = self.responses.get(str(status))
        if answer is None:
            return False
        return code is None or code in answer["description"].removeprefix("Error: ").split(", ")


def _pattern(template: str) -> re.Pattern[str]:
    """What a path template matches: a `{name}` is one segment, as in Starlette's router."""
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


@functools.cache
def documented_operations() -> tuple[Operation, ...]:
    """The operations of the OpenAPI document, built once per test process."""
    document = openapi_document(ROUTES)
    return tuple(
        Operation(method.upper(), template, _pattern(template), operation["responses"])
        for template, operations in document["paths"].items()
        for method, operation in operations.items()
    )


def documented_operation(method: str, path: str) -> Operation | None:
    """The operation that serves `method path`, or None for a route the table does not have."""
    for operation in documented_operations():
        if operation.method == method and operation.pattern.fullmatch(path):
            return operation
    return None


def error_code(response: httpx.Response) -> str | None:
    """The error code of a refusal (None for a success or a body that is not the envelope)."""
    if response.status_code < 400:
        return None
    response.read()
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def assert_documented(response: httpx.Response) -> None:
    """The response's status, and its error code, are listed for its operation in the document.

    A path that is no route of the table (an unknown route, /openapi.json) is not checked.
    """
    request = response.request
    operation = documented_operation(request.method, request.url.path)
    if operation is None:
        return
    code = error_code(response)
    assert operation.lists(response.status_code, code), (
        f"{request.method} {operation.template} answered {response.status_code} {code or ''},"
        " which its OpenAPI entry does not list"
    )


@dataclass
class Api:
    """A client of one program, holding its write key.

    Every answer its client receives is checked against the OpenAPI document
    (`assert_documented`), so every test that talks to the API also proves the document lists
    what the API answered.
    """

    client: TestClient | httpx.Client
    key: str
    store: Store
    clock: FakeClock | None = None
    _keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hooks = self.client.event_hooks["response"]
        if assert_documented not in hooks:
            hooks.append(assert_documented)

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", **extra}

    def get(self, path: str, *, key: str | None = None, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers(key), params=params or None)

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        idem: str | None = None,
    ) -> httpx.Response:
        extra = {"Idempotency-Key": idem} if idem is not None else {}
        return self.client.post(path, json=body, headers=self.headers(key, **extra))

    def patch(self, path: str, body: Any, *, key: str | None = None) -> httpx.Response:
        return self.client.patch(path, json=body, headers=self.headers(key))

    def key_for(self, program: str, scope: Scope = Scope.WRITE) -> str:
        """A key of another program (or another scope), made on first use."""
        name = f"{program}:{scope.value}"
        if name not in self._keys:
            now = self.clock() if self.clock else datetime.now().astimezone()
            self._keys[name] = create_key(self.store, program=program, scope=scope, now=now).secret
        return self._keys[name]

    # shortcuts that assert success

    def member(self, member_id: str, **fields: Any) -> dict[str, Any]:
        response = self.post("/v1/members", {"member_id": member_id, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json()["data"])

    def award(self, member_id: str, points: int, **fields: Any) -> dict[str, Any]:
        body = {"member_id": member_id, "points": points, "reason": "test award", **fields}
        response = self.post("/v1/points/award", body)
        assert response.status_code == 201, response.text
        return dict(response.json()["data"])

    def deduct(self, member_id: str, points: int, **fields: Any) -> httpx.Response:
        body = {"member_id": member_id, "points": points, "reason": "test deduct", **fields}
        return self.post("/v1/points/deduct", body)

    def balance(self, member_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/members/{member_id}/balance")
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def history(self, member_id: str, **params: Any) -> list[dict[str, Any]]:
        response = self.get(f"/v1/members/{member_id}/transactions", per_page=100, **params)
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tally_command() -> list[str]:
    found = shutil.which("tally", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "tally"]


@dataclass
class Server:
    """A real `tally serve` process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    log: IO[bytes]  # its standard error (a file: a pipe nobody reads would fill and block it)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

    def errors(self) -> str:
        """What the server wrote to standard error so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def start_server(
    database_url: str,
    *,
    workers: int = 1,
    preexec: Callable[[], None] | None = None,
    **env: str,
) -> Server:
    """Start `tally serve` and return once it answers; it is stopped by the caller. `preexec`
    runs in the child before `tally` starts (to set resource limits, say). Rate limits are off
    unless `env` sets TALLY_RATE_LIMIT."""
    port = free_port()
    log = tempfile.TemporaryFile(prefix="tally-serve-")
    process = subprocess.Popen(
        [
            *tally_command(),
            "serve",
            "--database",
            database_url,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        # Load tests send thousands of requests a second with one key: no rate limit unless
        # a test asks for one.
        env={**os.environ, "TALLY_SWEEP_INTERVAL": "0", "TALLY_RATE_LIMIT": "off", **env},
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
        preexec_fn=preexec,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tally serve exited: {server.errors()}")
        try:
            if httpx.get(server.url + "/openapi.json", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)  # waiting for a port to open, not synchronising test steps
    server.stop(signal.SIGKILL)
    raise RuntimeError("tally serve did not start within 30 s")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `tally ARGS...` to completion."""
    return subprocess.run(
        [*tally_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)  # polling for a condition, with a deadline


def everything(api: Api, key: str | None = None) -> dict[str, Any]:
    """All a program can read: settings, rewards, members with balances, histories, redemptions."""

    def data(path: str, **params: Any) -> Any:
        response = api.get(path, key=key, **params)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    members = data("/v1/members", per_page=100)
    endpoints = data("/v1/webhook_endpoints", per_page=100)
    return {
        "webhook_endpoints": {
            e["endpoint_id"]: {
                "endpoint": e,
                "deliveries": data(f"/v1/webhook_endpoints/{e['endpoint_id']}/deliveries"),
            }
            for e in endpoints
        },
        "program": data("/v1/program"),
        "rewards": data("/v1/rewards", per_page=100),
        "members": {
            m["member_id"]: {
                "profile": m,
                "balance": data(f"/v1/members/{m['member_id']}/balance"),
                "history": data(f"/v1/members/{m['member_id']}/transactions", per_page=100),
                "redemptions": data(f"/v1/members/{m['member_id']}/redemptions", per_page=100),
            }
            for m in members
        },
    }


@contextlib.contextmanager
def postgres_copy(admin_url: str, template: str | None, *, prefix: str) -> Iterator[str]:
    """A fresh database (its URL, through the run's PgBouncer if it has one) copied from
    `template`, or empty when it is None; dropped afterwards."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copied = "" if template is None else f' TEMPLATE "{template}"'
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copied}')
    try:
        yield POOLER.route(urlunsplit(urlsplit(admin_url)._replace(path="/" + name)))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Pooler:
    """Where the tests hand Tally its PostgreSQL databases: straight to the server, or through
    the run's PgBouncer (`port`) when `pytest --pgbouncer` started one (tests/conftest.py)."""

    port: int | None = None

    def route(self, url: str) -> str:
        """`url` with the PgBouncer's address in place of the server's (when there is one)."""
        if self.port is None:
            return url
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{credentials}@{address}" if credentials else address)
        )


POOLER = Pooler()


@contextlib.contextmanager
def pgbouncer(server_url: str) -> Iterator[int]:
    """Debian's PgBouncer (1.18) in transaction mode, in front of `server_url`'s server for
    any database, on a free port of 127.0.0.1 (yielded); stopped afterwards.

    Set up to show any session state leaking between clients: fewer server connections than
    Tally opens (4 per database), handed out in turn (`server_round_robin`), so that
    consecutive transactions of one connection seldom meet the same server session.
    """
    binary = shutil.which("pgbouncer", path=os.environ.get("PATH", "") + ":/usr/sbin")
    assert binary is not None, "pgbouncer is not installed (apt-get install pgbouncer)"
    server = urlsplit(server_url)
    user = unquote(server.username or "postgres")
    password = unquote(server.password or "")
    root = Path(tempfile.mkdtemp(prefix="tally-pgbouncer-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{user}" "{password}"\n')
    # It refuses to run as root; told `user`, it switches to that account (which must still
    # read these files).
    switch = ""
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
        switch = "user = postgres\n"
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nserver_round_robin = 1\n"
        f"max_client_conn = 1000\nquery_wait_timeout = 60\n{switch}"
    )
    log = (root / "log").open("wb")
    process = subprocess.Popen(
        [binary, str(root / "pgbouncer.ini")], stdout=log, stderr=log, start_new_session=True
    )
    try:
        wait_until(
            lambda: process.poll() is not None or _accepts(port), timeout=30, what="pgbouncer"
        )
        assert process.poll() is None, (root / "log").read_text()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def postgres_bindir() -> Path | None:
    """Where PostgreSQL's server programs are (`initdb`, `pg_ctl`), if installed here."""
    configured = os.environ.get("TALLY_TEST_POSTGRES_BINDIR")
    if configured:
        return Path(configured)
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found = sorted(installed, key=lambda path: int(path.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster of a test's own, on 127.0.0.1: it may be stopped and
    started at will (the shared server never is). Made with `private_postgres()`."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str]  # `runuser -u postgres --` when running as root: initdb refuses root

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=40 -c shared_buffers=16MB"
        )
        self.pg_ctl("-l", str(self.root / "log"), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: every server process ends at once, like a crash (WAL recovery follows)."""
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A new cluster (initdb) started on a free port; stopped and deleted afterwards."""
    bindir = postgres_bindir()
    assert bindir is not None, "PostgreSQL's server programs (initdb, pg_ctl) are not installed"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="tally-pg-"))
    if as_user:
        shutil.chown(root, user="postgres", group="postgres")
    cluster = PrivatePostgres(bindir, root, free_port(), as_user)
    try:
        subprocess.run(
            [
                *as_user,
                str(bindir / "initdb"),
                *("-D", str(cluster.data), "-A", "trust", "-U", "postgres"),
                *("--no-sync", "--no-instructions"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Live:
    """A real `tally serve` process over a database of its own, and a write key of `acme`.

    `api` talks to the server over HTTP (every answer checked against the OpenAPI document);
    `store` is the same database opened directly, for making keys of other programs.
    """

    server: Server
    store: Store
    database_url: str
    api: Api

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def key(self) -> str:
        return self.api.key


@contextlib.contextmanager
def serving(database_url: str, *, program: str = "acme", **env: str) -> Iterator[Live]:
    """A migrated database at `database_url`, a write key of `program`, and `tally serve` on it
    (its log in a temporary file); stopped and closed afterwards."""
    from tally.storage import open_store

    store = open_store(database_url)
    store.migrate()
    try:
        now = datetime.now().astimezone()
        key = create_key(store, program=program, scope=Scope.WRITE, now=now).secret
        server = start_server(database_url, **env)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                yield Live(server, store, database_url, Api(client, key, store=store))
        finally:
            server.stop()
    finally:
        store.close()


def verified(database_url: str) -> None:
    """`tally verify` on `database_url`, as an operator runs it, finds nothing wrong."""
    result = run_cli("verify", "--database", database_url)
    assert result.returncode == 0, result.stdout + result.stderr


@contextlib.contextmanager
def local_http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on a free port of 127.0.0.1 answering with `handler`, serving
    until the block ends (then shut down, its thread joined)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
