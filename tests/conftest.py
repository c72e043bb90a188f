"""Fixtures: every test gets its own database, on SQLite and (when asked) on PostgreSQL.

With TALLY_TEST_POSTGRES_URL set, each backend-parametrised test also runs on PostgreSQL, in a
database of its own copied from a migrated template. If that server cannot be reached the run
fails: CI asked for PostgreSQL, so skipping would hide the backend.

`pytest --pgbouncer` runs only the PostgreSQL tests, and hands Tally its databases through a
PgBouncer in transaction mode that the run starts (`tests.support.pgbouncer`); the tests' own
administration (creating and dropping databases) still goes straight to the server.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tally.domain import Scope
from tally.maintenance import create_key, verify
from tally.ports import Store
from tally.storage import open_store
from tests.support import POOLER, Api, FakeClock, pgbouncer, postgres_copy, serve_app
from tests.webhook_support import Receiver, hooks_api

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)

POSTGRES_URL = os.environ.get("TALLY_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]
SOAK = os.environ.get("TALLY_SOAK") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pgbouncer",
        action="store_true",
        help="run only the PostgreSQL tests, through a PgBouncer in transaction mode",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `soak` take minutes: they run only when TALLY_SOAK=1 asks for them. With
    `--pgbouncer`, only the tests parametrised onto PostgreSQL run."""
    pgbouncer = config.getoption("pgbouncer")

    def runs(item: pytest.Item) -> bool:
        soaking = item.get_closest_marker("soak") is not None
        return (SOAK or not soaking) and (_on_postgres(item) or not pgbouncer)

    dropped = [item for item in items if not runs(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if runs(item)]


def _on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


@pytest.fixture(scope="session", autouse=True)
def pooler(request: pytest.FixtureRequest) -> Iterator[None]:
    """With `--pgbouncer`, the PgBouncer every test database is handed out through."""
    if not request.config.getoption("pgbouncer"):
        yield
        return
    if POSTGRES_URL is None:
        pytest.fail("--pgbouncer needs TALLY_TEST_POSTGRES_URL (the server behind it)")
    with pgbouncer(POSTGRES_URL) as port:
        POOLER.port = port
        try:
            yield
        finally:
            POOLER.port = None


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    assert POSTGRES_URL is not None
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"TALLY_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {error}")
    name = f"tally_template_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    store = open_store(with_database(POSTGRES_URL, name))
    store.migrate()
    store.close()
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db')}/tally.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
    template = request.getfixturevalue("postgres_template")
    with postgres_copy(POSTGRES_URL, template, prefix="tally_test") as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
def api(store: Store, clock: FakeClock) -> Iterator[Api]:
    """The API of one program (`acme`), served in-process over HTTP with a movable clock."""
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock) as client:
        yield Api(client, key, store=store, clock=clock)
    # Whatever a test did through the API, the ledger must still add up (`tally verify`).
    assert verify(store) == []


@pytest.fixture
def hooks(store: Store, clock: FakeClock) -> Iterator[Api]:
    """Program `acme`'s API, allowing endpoints on loopback (the receiver's), with no dispatcher
    of its own: the tests run one when they want deliveries (`tests/webhook_support.py`)."""
    yield from hooks_api(store, clock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 that records what it is sent."""
    with Receiver().running() as running:
        yield running
