"""CSV: `tally import awards` and `POST /v1/imports/awards` (every row checked, then all applied
or none; a re-run replays), `tally export transactions` and `GET /v1/exports/transactions`
(streamed, filtered, safe in a spreadsheet), and the round trip from one program to another."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tally.domain import HistoryQuery, Scope
from tally.maintenance import run_async, sweep_now
from tally.ports import Store, StoredReply
from tally.service import Ledger
from tests.support import Api, everything
from tests.test_cli import tally

CSV = {"Content-Type": "text/csv"}
FAR = "2099-12-31T00:00:00Z"


def enrol(api: Api, *member_ids: str, key: str | None = None) -> None:
    for member_id in member_ids:
        assert api.post("/v1/members", {"member_id": member_id}, key=key).status_code == 201


def balance(api: Api, member_id: str, key: str | None = None) -> int:
    response = api.get(f"/v1/members/{member_id}/balance", key=key)
    assert response.status_code == 200, response.text
    return int(response.json()["data"]["balance"])


def table(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def import_file(url: str, path: Path, program: str = "acme") -> Any:
    return tally("import", "awards", str(path), "--program", program, "--database", url)


def export(url: str, *options: str, program: str = "acme") -> str:
    result = tally("export", "transactions", "--program", program, "--database", url, *options)
    assert result.returncode == 0, result.stderr
    return str(result.stdout)


def upload(api: Api, text: str, **headers: str) -> Any:
    return api.client.post(
        "/v1/imports/awards", content=text.encode(), headers=api.headers(**CSV, **headers)
    )


# Importing from the command line.


def test_the_cli_imports_a_file_writes_each_rows_result_and_a_rerun_awards_nothing_twice(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    enrol(api, "m1", "m2")
    awards = tmp_path / "june.csv"
    awards.write_text(
        "member_id,points,reason,reference,expires_at\n"
        "m1,100,June sales,INV-1,\n"
        'm2,50,"Bonus, June",,' + FAR + "\n"
        "m1,25,June sales,INV-2,\n"
    )
    first = import_file(database_url, awards)
    assert first.returncode == 0, first.stderr
    assert "Awarded 3 row(s)" in first.stdout
    results = table((tmp_path / "june.results.csv").read_text())
    assert [(r["line"], r["member_id"], r["status"]) for r in results] == [
        ("2", "m1", "ok"),
        ("3", "m2", "ok"),
        ("4", "m1", "ok"),
    ]
    assert all(r["transaction_id"].startswith("txn_") for r in results)
    history = api.get("/v1/members/m2/transactions").json()["data"]
    assert [(t["points"], t["reason"], t["expires_at"]) for t in history] == [
        (50, "Bonus, June", FAR)
    ]

    again = import_file(database_url, awards)
    assert again.returncode == 0, again.stderr
    replayed = table((tmp_path / "june.results.csv").read_text())
    assert [r["status"] for r in replayed] == ["replayed"] * 3
    assert [r["transaction_id"] for r in replayed] == [r["transaction_id"] for r in results]
    assert (balance(api, "m1"), balance(api, "m2")) == (125, 50)
    assert api.get("/v1/members/m1/transactions").json()["meta"]["total"] == 2


def test_a_file_with_bad_rows_is_refused_whole_each_bad_row_named_by_its_line(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    enrol(api, "m1", "m2")
    before = everything(api)
    awards = tmp_path / "bad.csv"
    awards.write_text(
        "member_id,points,reason,expires_at\n"
        "m1,100,fine,\n"
        "ghost,5,unknown member,\n"
        "m1,1.5,half a point,\n"
        "m2,5,bad date,2027-02-30T00:00:00Z\n"
        "m2,5\n"
        "m2,5,,\n"
        "m1,5,past expiry,2001-01-01T00:00:00Z\n"
    )
    result = tally(
        "import", "awards", str(awards), "--program", "acme", "--database", database_url,
        "--results", str(tmp_path / "out.csv"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "6 bad row(s); nothing was applied" in result.stderr
    assert "line 3: Member ghost does not exist." in result.stderr
    rows = table((tmp_path / "out.csv").read_text())
    assert [(r["line"], r["status"], r["error_code"]) for r in rows] == [
        ("2", "skipped", ""),
        ("3", "error", "member_not_found"),
        ("4", "error", "validation_error"),
        ("5", "error", "validation_error"),
        ("6", "error", "validation_error"),
        ("7", "error", "validation_error"),
        ("8", "error", "validation_error"),
    ]
    messages = [r["error_message"] for r in rows]
    assert messages[2].startswith("points: must be a whole number")
    assert messages[3].startswith("expires_at:")
    assert messages[4] == "The row has 2 cells; the header names 4 columns."
    assert messages[5] == "reason: missing: the cell is empty."
    assert messages[6].startswith("expires_at: expires_at must be later than")
    assert everything(api) == before


def test_a_file_that_cannot_be_read_is_refused_naming_why(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    for name, content, says in [
        ("typo.csv", b"member_id,pionts,reason\nm1,5,x\n", "unknown column 'pionts'"),
        ("short.csv", b"member_id,reason\nm1,x\n", "lacks the column(s) points"),
        ("empty.csv", b"", "The file is empty"),
        ("latin1.csv", b"member_id,points,reason\nm1,5,caf\xe9\n", "not UTF-8"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        result = import_file(database_url, path)
        assert result.returncode == 1, name
        assert says in result.stderr, (name, result.stderr)
    good = tmp_path / "good.csv"
    good.write_text("member_id,points,reason\nm1,5,x\n")
    unknown = import_file(database_url, good, program="acmee")
    assert "there is no program 'acmee'; existing programs: 'acme'" in unknown.stderr
    enrol(api, "m1")
    before = everything(api)
    nowhere = str(tmp_path / "no-such-folder" / "results.csv")
    unwritable = tally(
        "import", "awards", str(good), "--program", "acme", "--database", database_url,
        "--results", nowhere,
    )  # fmt: skip
    assert unwritable.returncode == 1
    assert f"cannot write {nowhere}: No such file or directory" in unwritable.stderr
    assert everything(api) == before  # refused before anything was applied


# Importing over HTTP (the console's upload): the same import.


def test_an_upload_answers_each_rows_result_and_a_second_upload_replays(api: Api) -> None:
    enrol(api, "m1")
    text = "member_id,points,reason\nm1,10,a\n\nm1,20,b\n"
    first = upload(api, text)
    assert first.status_code == 200, first.text
    data = first.json()["data"]
    assert (data["rows"], data["awarded"], data["replayed"]) == (2, 2, 0)
    assert [(r["line"], r["status"]) for r in data["results"]] == [(2, "ok"), (4, "ok")]
    again = upload(api, text, Accept="text/csv")
    assert again.status_code == 200
    assert again.headers["content-type"].startswith("text/csv")
    assert [r["status"] for r in table(again.text)] == ["replayed", "replayed"]
    assert balance(api, "m1") == 30


def test_a_program_that_enrols_on_award_enrols_a_files_unknown_members(api: Api) -> None:
    enrol(api, "m1")
    text = "member_id,points,reason\nm1,10,a\nnew1,20,b\nnew1,5,c\n"
    refused = upload(api, text)
    assert refused.status_code == 422, refused.text  # enrol_on_award is off by default
    assert api.get("/v1/members/new1").status_code == 404
    assert api.patch("/v1/program", {"enrol_on_award": True}).status_code == 200
    first = upload(api, text)
    assert first.status_code == 200, first.text
    assert first.json()["data"]["awarded"] == 3
    assert (balance(api, "m1"), balance(api, "new1")) == (10, 25)
    created = api.get("/v1/events", type="member.created").json()["data"]
    assert [e["data"]["member_id"] for e in created].count("new1") == 1


def test_an_upload_with_an_idempotency_key_is_answered_again_byte_for_byte(api: Api) -> None:
    enrol(api, "m1")
    text = "member_id,points,reason\nm1,10,a\n"
    first = upload(api, text, **{"Idempotency-Key": "upload-1"})
    again = upload(api, text, **{"Idempotency-Key": "upload-1"})
    assert (again.status_code, again.content) == (200, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    other = upload(api, text + "m1,5,b\n", **{"Idempotency-Key": "upload-1"})
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    as_csv = upload(api, text, Accept="text/csv", **{"Idempotency-Key": "upload-1"})
    assert [r["status"] for r in table(as_csv.text)] == ["ok"]
    assert balance(api, "m1") == 10


def test_an_upload_with_bad_rows_is_refused_with_each_line_and_changes_nothing(
    api: Api,
) -> None:
    enrol(api, "m1")
    before = everything(api)
    response = upload(api, "member_id,points,reason\nm1,10,fine\nnobody,5,x\nm1,-3,x\n")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "2 of 3 rows are bad; nothing was applied."
    assert [(d["line"], d["member_id"], d["code"]) for d in error["details"]] == [
        (3, "nobody", "member_not_found"),
        (4, "m1", "validation_error"),
    ]
    wrong_type = api.client.post(
        "/v1/imports/awards",
        content=b"member_id,points,reason\nm1,1,x\n",
        headers=api.headers(**{"Content-Type": "application/json"}),
    )
    assert wrong_type.status_code == 415
    assert everything(api) == before


def test_another_programs_members_are_unknown_to_an_import(api: Api) -> None:
    enrol(api, "m1")
    other = api.key_for("other")
    response = api.client.post(
        "/v1/imports/awards",
        content=b"member_id,points,reason\nm1,5,x\n",
        headers=api.headers(other, **CSV),
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["code"] == "member_not_found"
    assert balance(api, "m1") == 0


def test_imported_rows_are_kept_past_the_idempotency_retention_so_a_late_rerun_replays(
    api: Api, store: Store
) -> None:
    enrol(api, "m1")
    assert upload(api, "member_id,points,reason\nm1,10,a\n").status_code == 200
    award = {"member_id": "m1", "points": 1, "reason": "api"}
    assert api.post("/v1/points/award", award, idem="plain-key").status_code == 201
    assert api.clock is not None
    later = api.clock.advance(days=400)
    report = sweep_now(store, clock=lambda: later)
    assert report.purged_replies == 1  # the API's key; the file's row is kept
    replay = upload(api, "member_id,points,reason\nm1,10,a\n")
    assert replay.json()["data"]["replayed"] == 1
    assert api.post("/v1/points/award", award, idem="plain-key").status_code == 201
    assert balance(api, "m1") == 12


# Exporting.


def seed_ledger(api: Api) -> None:
    enrol(api, "m1", "m2")
    awards = [
        {"member_id": "m1", "points": 100, "reason": '=HYPERLINK("x")', "reference": "+1"},
        {"member_id": "m2", "points": 40, "reason": "Welcome", "metadata": {"a": 1}},
    ]
    assert api.post("/v1/points/award/bulk", {"awards": awards}).status_code == 200
    deduct = {"member_id": "m1", "points": 30, "reason": "-adjustment"}
    assert api.post("/v1/points/deduct", deduct).status_code == 201


def test_the_export_lists_every_transaction_as_the_api_shows_it_and_filters(
    api: Api, database_url: str
) -> None:
    seed_ledger(api)
    rows = table(export(database_url))
    shown = {
        t["transaction_id"]: t
        for m in ("m1", "m2")
        for t in api.get(f"/v1/members/{m}/transactions").json()["data"]
    }
    assert [r["transaction_id"] for r in rows] == sorted(shown)
    for row in rows:
        t = shown[row["transaction_id"]]
        assert (row["type"], int(row["points"]), int(row["balance_after"])) == (
            t["type"],
            t["points"],
            t["balance_after"],
        )
    # Cells a spreadsheet would run as formulas are behind a quote; numbers are not.
    assert [(r["reason"], r["reference"], r["points"]) for r in rows] == [
        ('\'=HYPERLINK("x")', "'+1", "100"),
        ("Welcome", "", "40"),
        ("'-adjustment", "", "-30"),
    ]
    assert rows[1]["metadata"] == '{"a":1}'
    assert [r["type"] for r in table(export(database_url, "--type", "deduct"))] == ["deduct"]
    assert table(export(database_url, "--to", "2025-12-31")) == []
    assert len(table(export(database_url, "--from", "2026-01-01", "--to", "2026-01-01"))) == 3
    bad = tally(
        "export", "transactions", "--program", "acme", "--database", database_url,
        "--type", "gift",
    )  # fmt: skip
    assert bad.returncode == 2 and "type must be one of" in bad.stderr


def test_the_http_export_streams_the_same_file_to_a_read_key(api: Api, database_url: str) -> None:
    seed_ledger(api)
    reader = api.key_for("acme", Scope.READ)
    response = api.client.get(
        "/v1/exports/transactions", params={"type": "award"}, headers=api.headers(reader)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "content-length" not in response.headers  # streamed, not built whole
    assert response.text == export(database_url, "--type", "award")
    refused = api.client.get(
        "/v1/exports/transactions", params={"from": "yesterday"}, headers=api.headers(reader)
    )
    assert refused.status_code == 422


def test_export_pages_list_every_row_once_in_id_order(api: Api, store: Store) -> None:
    seed_ledger(api)
    ledger = Ledger(store)

    async def pages(size: int) -> list[list[str]]:
        found = ledger.exports.transactions(1, HistoryQuery(), page_size=size)
        return [[e.id for e in page] async for page in found]

    whole = run_async(store, lambda: pages(100))
    paged = run_async(store, lambda: pages(2))
    assert [len(p) for p in paged] == [2, 1]
    assert [i for p in paged for i in p] == whole[0] == sorted(whole[0])


def test_an_export_into_a_closed_pipe_stops_quietly(api: Api, database_url: str) -> None:
    enrol(api, "m1")
    awards = [{"member_id": "m1", "points": 1, "reason": "r" * 200} for _ in range(1_000)]
    assert api.post("/v1/points/award/bulk", {"awards": awards}).status_code == 200
    command = [sys.executable, "-m", "tally", "export", "transactions"]
    child = subprocess.Popen(
        [*command, "--program", "acme", "--database", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline().startswith(b"transaction_id,")
    child.stdout.close()  # what `| head -1` does
    assert child.wait(timeout=120) == 1
    assert child.stderr.read() == b""


# The round trip.


def test_a_programs_awards_exported_and_imported_into_a_fresh_program_give_the_same_balances(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    members = [f"m{i}" for i in range(5)]
    enrol(api, *members)
    awards = [
        {
            "member_id": members[i % 5],
            "points": 10 + i,
            "reason": f"=award {i}" if i % 4 == 0 else f"award, {i}",
            **({"reference": f"INV-{i}"} if i % 2 else {}),
            **({"expires_at": FAR} if i % 3 == 0 else {}),
            **({"metadata": {"n": i}} if i % 5 == 0 else {}),
        }
        for i in range(12)
    ]
    assert api.post("/v1/points/award/bulk", {"awards": awards}).status_code == 200
    exported = tmp_path / "awards.csv"
    exported.write_text(export(database_url, "--type", "award"))

    fresh = api.key_for("fresh")
    enrol(api, *members, key=fresh)
    result = import_file(database_url, exported, program="fresh")
    assert result.returncode == 0, result.stderr
    for member in members:
        assert balance(api, member, key=fresh) == balance(api, member)
    theirs = api.get("/v1/members/m0/transactions", key=fresh).json()["data"]
    ours = api.get("/v1/members/m0/transactions").json()["data"]
    fields = ("points", "reason", "reference", "metadata", "expires_at")
    assert [[t[f] for f in fields] for t in theirs] == [[t[f] for f in fields] for t in ours]


def test_an_export_with_other_types_is_refused_by_the_import_naming_the_rows(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    seed_ledger(api)
    exported = tmp_path / "all.csv"
    exported.write_text(export(database_url))
    api.key_for("fresh")
    result = import_file(database_url, exported, program="fresh")
    assert result.returncode == 1
    assert "line 4: type: only awards can be imported; this row is a 'deduct'." in result.stderr


def test_rows_already_applied_are_replayed_even_once_they_would_fail_the_check(
    api: Api,
) -> None:
    enrol(api, "m1")
    text = f"member_id,points,reason,expires_at\nm1,10,a,{FAR}\n"
    assert upload(api, text).status_code == 200
    assert api.clock is not None
    api.clock.advance(days=365 * 80)  # the row's expiry has passed: a new row would be refused
    assert upload(api, text).json()["data"]["replayed"] == 1
    assert balance(api, "m1") == 0  # expired meanwhile


# The storage the import needs, on both backends.


def test_replies_are_kept_and_read_by_key_range_and_import_keys_outlive_the_purge(
    store: Store,
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    program = store.transact(lambda tx: tx.programs.ensure("p", now=now)).id
    row, plain = StoredReply("f1", 201, b"txn_1"), StoredReply("f2", 201, b"{}")
    replies = {"csv-abc-2": row, "plain": plain}
    store.transact(lambda tx: tx.replies.put_many(program, replies, now=now))
    wanted = ["csv-abc-2", "plain", "missing"]
    assert store.transact(lambda tx: tx.replies.claim_many(program, wanted))
    assert store.transact(lambda tx: tx.replies.get_range(program, "csv-", "csv-z")) == {
        "csv-abc-2": row
    }
    assert store.transact(lambda tx: tx.replies.get_range(program, "a", "z")) == replies
    later = now + timedelta(days=2)
    purged = store.transact(lambda tx: tx.replies.purge(before=later, keep_prefix="csv-"))
    assert purged == 1
    assert store.transact(lambda tx: tx.replies.get_range(program, "a", "z")) == {"csv-abc-2": row}
