"""The `tally` command: the only place that wires settings, storage and the server together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import click
import psycopg

from tally.commands import RowStatus
from tally.config import DEFAULT_DATABASE_URL, Settings
from tally.domain import COMMAND_LINE, Scope
from tally.errors import TallyError
from tally.maintenance import (
    BackupError,
    backup,
    bootstrap,
    create_key,
    restore,
    run_async,
    sweep_now,
    verify,
)
from tally.ports import Store
from tally.service import WebhookPolicy, system_clock


@contextlib.contextmanager
def _opened(url: str, *, migrate: bool = True, create: bool = False) -> Iterator[Store]:
    """The store at `url` (migrated), closed afterwards; database failures become clear errors.

    Only `serve` and `migrate` may `create` a SQLite database: any other command run from the
    wrong directory would otherwise make an empty `./tally.db` there and act on it."""
    from tally.storage import missing_database, open_store

    looked_at = None if create else missing_database(url)
    if looked_at is not None:
        raise click.ClickException(
            f"there is no database at {looked_at}; run this where `tally serve` runs, pass "
            "--database (or set TALLY_DATABASE_URL), or create one with `tally migrate`"
        )
    try:
        store = open_store(url)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--database") from None
    try:
        if migrate:
            store.migrate()
        yield store
    except (TallyError, sqlite3.Error, psycopg.Error) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        shown = _without_password(url)
        raise click.ClickException(f"cannot use the database {shown}: {first_line}") from None
    finally:
        store.close()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


database_option = click.option(
    "--database",
    "database_url",
    envvar="TALLY_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="sqlite:///path.db or postgresql://user:password@host:port/dbname",
)


@click.group()
def main() -> None:
    """Tally, a loyalty points ledger."""


@main.command()
@database_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="TALLY_PORT", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def serve(database_url: str, host: str, port: int, workers: int) -> None:
    """Apply pending migrations and serve the API.

    SIGTERM stops accepting connections, lets the requests in flight finish (their writes
    committed and answered) for up to TALLY_SHUTDOWN_GRACE_SECONDS, closes the database and
    exits 0."""
    import uvicorn

    from tally.http.protocol import HeadersDeadlineProtocol

    # uvicorn drains on SIGTERM and then raises the signal again to end the process, which a
    # supervisor would read as a crash (killed by signal 15) after a clean shutdown: that second
    # delivery ends it with status 0 instead. Before uvicorn takes over, SIGTERM also exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = Settings.from_env()
    with _opened(database_url, create=True) as store:
        created = bootstrap(store, now=system_clock())
    if created is not None:
        click.echo(f"Created program '{created.program}' and a write key ({created.key_id}).")
        click.echo("It is shown only this once; keep it somewhere safe:")
        click.echo(created.secret)
    os.environ["TALLY_DATABASE_URL"] = database_url
    uvicorn.run(
        "tally.http.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        server_header=False,
        date_header=True,
        http=HeadersDeadlineProtocol,  # uvicorn's httptools protocol, with a headers deadline
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@main.command()
@database_option
def migrate(database_url: str) -> None:
    """Apply pending migrations and exit."""
    with _opened(database_url, migrate=False, create=True) as store:
        applied = store.migrate()
    click.echo(f"Applied {len(applied)} migration(s)." if applied else "Already up to date.")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@database_option
@click.option("--program", required=True, help="The program's name; created if new.")
@click.option("--scope", type=click.Choice(["read", "write"]), default="write", show_default=True)
def keys_create(database_url: str, program: str, scope: str) -> None:
    """Create a key; its plaintext is the last line printed (and is never shown again).

    A program that does not exist yet is created, and standard error says so with the names
    of those that do exist, so that a typo in --program is seen at once."""
    with _opened(database_url) as store:
        created = create_key(store, program=program, scope=Scope(scope), now=system_clock())
    if created.new_program:
        others = ", ".join(f"'{name}'" for name in created.other_programs) or "none"
        click.echo(
            f"Note: there was no program '{created.program}'; it was created now. "
            f"Existing programs: {others}.",
            err=True,
        )
    click.echo(
        f"Created {created.scope.value} key {created.key_id} for program '{created.program}'."
    )
    click.echo(created.secret)


@keys.command("list")
@database_option
def keys_list(database_url: str) -> None:
    """List keys (never their secrets)."""
    with _opened(database_url) as store:
        rows = store.transact(lambda tx: tx.keys.all())
    for key in rows:
        state = "revoked " + key.revoked_at.isoformat() if key.revoked_at else "active"
        click.echo(f"{key.id}  {key.program_name}  {key.scope.value}  {key.prefix}…  {state}")


@keys.command("revoke")
@database_option
@click.argument("key_id")
def keys_revoke(database_url: str, key_id: str) -> None:
    """Revoke a key; every server refuses it within a second."""
    with _opened(database_url) as store:
        done = store.transact(lambda tx: tx.keys.revoke(key_id, now=system_clock()))
    if not done:
        click.echo(f"No active key {key_id}.", err=True)
        sys.exit(1)
    click.echo(f"Revoked {key_id}.")


@main.command("verify")
@database_option
def verify_command(database_url: str) -> None:
    """Recompute every balance and counter from the ledger; exit 1 on any difference."""
    with _opened(database_url) as store:
        problems = verify(store)
    for problem in problems:
        click.echo(f"MISMATCH {problem.member}: {problem.problem}")
    if problems:
        click.echo(f"{len(problems)} mismatch(es) found.")
        sys.exit(1)
    click.echo("Ledger verified: every counter matches its rows.")


@main.command()
@database_option
def sweep(database_url: str) -> None:
    """Post pending points and expire lots that are due, then exit."""
    with _opened(database_url) as store:
        report = sweep_now(store, webhooks=_webhook_policy(Settings.from_env()))
    click.echo(
        f"Swept {report.members} member(s); dropped {report.purged_replies} old idempotency "
        f"replies, {report.purged_events} old events and {report.purged_deliveries} old webhook "
        "deliveries."
    )


@main.command()
@database_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def deliver(database_url: str, once: bool) -> None:
    """Deliver webhooks: the same dispatcher that runs inside `tally serve`, as a process of
    its own (any number may run beside the servers). SIGTERM or Ctrl-C stops it; attempts cut
    off are made again once their lease runs out."""
    from tally.delivery.dispatcher import Dispatcher
    from tally.delivery.sender import Sender
    from tally.service import Ledger

    settings = Settings.from_env()
    with _opened(database_url) as store:
        ledger = Ledger(store, webhooks=_webhook_policy(settings))

        async def main() -> None:
            # SIGTERM and Ctrl-C stop the dispatcher in the loop, so it closes what it holds.
            stopping = asyncio.current_task()
            assert stopping is not None
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stopping.cancel)
            sender = Sender(
                timeout=settings.webhooks_timeout_seconds,
                allow_private=settings.webhooks_allow_private,
            )
            dispatcher = Dispatcher(
                ledger.webhooks, sender, poll_seconds=settings.webhooks_poll_seconds or 0.5
            )
            try:
                await (dispatcher.run_once() if once else dispatcher.run())
            except asyncio.CancelledError:
                if not stopping.cancelling():
                    raise
            finally:
                await sender.aclose()

        run_async(store, main)
        if once:
            click.echo("Delivered everything due.")


def _webhook_policy(settings: Settings) -> WebhookPolicy:
    return WebhookPolicy(
        allow_private=settings.webhooks_allow_private,
        schedule=settings.webhooks_retry_schedule,
        retention=timedelta(days=settings.events_retention_days),
    )


@main.command("backup")
@database_option
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup_command(database_url: str, path: Path, force: bool) -> None:
    """Write a consistent copy of the SQLite database to PATH, safe while servers run.

    For PostgreSQL, use pg_dump and pg_restore (see the README)."""
    try:
        copied = backup(database_url, path, overwrite=force)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    shown = _without_password(database_url)
    click.echo(f"Backed up {shown} to {copied.path} ({copied.size} bytes).")


@main.command("restore")
@database_option
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace the database if it holds anything.")
def restore_command(database_url: str, path: Path, force: bool) -> None:
    """Put the backup at PATH in place of the SQLite database; every server on it must be
    stopped. Refuses to replace a database that holds anything unless --force is given."""
    try:
        copied = restore(path, database_url, overwrite=force)
    except BackupError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Restored {path} to {copied.path} ({copied.size} bytes).")
    click.echo(f"Check it with: tally verify --database {_without_password(database_url)}")


def _program_id(store: Store, name: str) -> int:
    """The id of the program called `name`; an unknown name is an error listing the others."""
    found, names = store.transact(lambda tx: (tx.programs.find(name), tx.programs.names()))
    if found is None:
        others = ", ".join(f"'{n}'" for n in names) or "none"
        raise click.ClickException(f"there is no program '{name}'; existing programs: {others}")
    return found.id


@main.group("import")
def import_group() -> None:
    """Import CSV files."""


@import_group.command("awards")
@database_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--program", required=True, help="The program's name (it must exist).")
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write each row's result [default: FILE with .results.csv].",
)
def import_awards(database_url: str, file: Path, program: str, results: Path | None) -> None:
    """Award the points of a CSV file: member_id,points,reason[,reference][,expires_at].

    Every row is checked first: if any is bad, none is applied and the results file names each
    bad row's line and error (exit 1). Running the same file again awards nothing twice: rows
    already awarded are `replayed`."""
    from tally.csvfiles import awards
    from tally.service import Ledger

    results = results or file.with_name(file.name.removesuffix(".csv") + ".results.csv")
    try:
        command = awards.read(file.read_bytes())
    except OSError as error:
        raise click.ClickException(f"cannot read {file}: {error.strerror}") from None
    except TallyError as error:
        raise click.ClickException(f"{file}: {error.message}") from None
    try:  # before anything is applied: a results file that cannot be made stops it all
        sink = results.open("wb", buffering=0)  # unbuffered: nothing is left to fail on close
    except OSError as error:
        raise click.ClickException(f"cannot write {results}: {error.strerror}") from None
    with sink:
        with _opened(database_url) as store:
            program_id = _program_id(store, program)
            ledger = Ledger(store)
            try:
                outcome = run_async(
                    store,
                    lambda: ledger.imports.award_file(program_id, command, created_by=COMMAND_LINE),
                )
            except TallyError as error:
                raise click.ClickException(error.message) from None
        try:
            sink.write(awards.result_text(outcome).encode())
        except OSError as error:
            # The rows are applied (or refused) already; only their results could not be kept.
            raise click.ClickException(
                f"cannot write the results to {results}: {error.strerror}; the import itself "
                f"{'was refused' if outcome.refused else 'is done'} (run it again to see each "
                "row: nothing is awarded twice)"
            ) from None
    counts = {status: outcome.count(status) for status in RowStatus}
    if outcome.refused:
        for row in outcome.results:
            if row.error is not None:
                click.echo(f"line {row.line}: {awards.describe(row.error)}", err=True)
        applied = counts[RowStatus.OK]
        click.echo(
            f"{counts[RowStatus.ERROR]} bad row(s); "
            + (f"{applied} row(s) were applied before one went bad, " if applied else "")
            + f"{'nothing else' if applied else 'nothing'} was applied. "
            f"Results: {results}",
            err=True,
        )
        sys.exit(1)
    click.echo(
        f"Awarded {counts[RowStatus.OK]} row(s); {counts[RowStatus.REPLAYED]} were already "
        f"awarded by an earlier run (replayed). Results: {results}"
    )


@main.group("export")
def export_group() -> None:
    """Export CSV files."""


@export_group.command("transactions")
@database_option
@click.option("--program", required=True, help="The program's name.")
@click.option("--from", "start", help="RFC 3339 time or YYYY-MM-DD (inclusive).")
@click.option("--to", "end", help="RFC 3339 time or YYYY-MM-DD (inclusive: the whole day).")
@click.option("--type", "kind", help="Only this type: award, deduct, redeem, ...")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file [default: standard output].",
)
def export_transactions(
    database_url: str,
    program: str,
    start: str | None,
    end: str | None,
    kind: str | None,
    output: Path | None,
) -> None:
    """Write a program's transactions as CSV, oldest first (in id order), page by page."""
    from tally.csvfiles import transactions
    from tally.http.inputs import history_filters
    from tally.service import Ledger

    try:
        query = history_filters(kind, start, end)
    except TallyError as error:
        raise click.UsageError(error.message) from None
    with _opened(database_url) as store:
        program_id = _program_id(store, program)
        ledger = Ledger(store)

        async def write(out: TextIO) -> None:
            out.write(transactions.header())
            async for page in ledger.exports.transactions(program_id, query):
                out.write(transactions.rows_text(page))

        if output is not None:
            try:
                with output.open("w", encoding="utf-8", newline="") as out:
                    run_async(store, lambda: write(out))
            except OSError as error:
                raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
            return
        try:
            run_async(store, lambda: write(sys.stdout))
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and let nothing write again to
            # the closed pipe when Python flushes standard output on its way out.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
