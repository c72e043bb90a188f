"""The Python client (`clients/python`, api.md section 12) against a real `tally serve`, on
each backend: every operation of /openapi.json has a method of that name, sync and async;
results are typed; refusals raise the class of their code; retries are bounded, honour
Retry-After and never apply a write twice; listings run over every page; and
`tally_client.webhooks.verify` accepts what the server signs and nothing else."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import tally_client
from tally_client import (
    AsyncTallyClient,
    AwardItem,
    Balance,
    TallyClient,
    TallyError,
    Transaction,
)
from tally_client.operations import Operations, listing, operation
from tally_client.retries import retry_after
from tally_client.webhooks import WebhookVerificationError, verify

from tally.http.errors import STATUS_OF_CODE
from tests.client_support import LOST, PASS_ON, Answer, Naps, Proxy, refusal
from tests.conftest import BACKENDS, POSTGRES_URL
from tests.support import Live, free_port, postgres_copy, serving, verified, wait_until
from tests.webhook_support import Receiver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One `tally serve` per backend for the whole module (tests use ids of their own), that
    delivers webhooks to loopback at once; `tally verify` passes afterwards."""
    env = {
        "TALLY_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TALLY_WEBHOOKS_RETRY_SCHEDULE": "0,0,0",
        "TALLY_WEBHOOKS_POLL_SECONDS": "0.05",
    }
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('client')}/tally.db"
        with serving(url, **env) as running:
            yield running
        verified(url)
        return
    if POSTGRES_URL is None:
        pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
    template = request.getfixturevalue("postgres_template")
    with postgres_copy(POSTGRES_URL, template, prefix="tally_client") as url:
        with serving(url, **env) as running:
            yield running
        verified(url)


@pytest.fixture
def naps() -> Naps:
    return Naps()


@pytest.fixture
def tally(live: Live, naps: Naps) -> Iterator[TallyClient]:
    with TallyClient(live.url, live.key, sleep=naps) as client:
        yield client


def new_id(prefix: str = "m") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def member(tally: TallyClient, points: int = 0) -> str:
    member_id = tally.create_member(member_id=new_id()).member_id
    if points:
        tally.award(member_id=member_id, points=points, reason="opening")
    return member_id


# The client keeps up with the server


def test_every_operation_of_the_openapi_document_is_a_client_method_sync_and_async(
    live: Live,
) -> None:
    document = httpx.get(live.url + "/openapi.json").json()
    operations = [
        (op["operationId"], method.upper(), template)
        for template, methods in document["paths"].items()
        for method, op in methods.items()
    ]
    assert len(operations) > 30
    sync = TallyClient(live.url, live.key)
    asynchronous = AsyncTallyClient(live.url, live.key)
    for name, method, template in operations:
        described = Operations.__dict__.get(name)
        assert isinstance(described, operation | listing), f"no client method {name}"
        assert callable(getattr(sync, name)) and callable(getattr(asynchronous, name))
        positional, keywords = sample_arguments(described.build)
        if isinstance(described, operation):
            assert inspect.iscoroutinefunction(getattr(asynchronous, name)), name
            assert not inspect.iscoroutinefunction(getattr(sync, name)), name
        else:  # a listing: an iterator, and an async one (nothing is fetched until iterated)
            assert inspect.isgenerator(getattr(sync, name)(*positional, **keywords)), name
            assert inspect.isasyncgen(getattr(asynchronous, name)(*positional, **keywords)), name
        # The method sends the operation's method to its path.
        built = described.build(*positional, **keywords)
        call = built if isinstance(described, operation) else built.first
        assert call.method == method, name
        assert call.path == template.replace("{", "").replace("}", ""), name
    sync.close()
    asyncio.run(asynchronous.aclose())


def sample_arguments(build: Any) -> tuple[list[Any], dict[str, Any]]:
    """Values for the required parameters of `build`: each positional one (an id) its own name,
    so the path shows where each id went; each keyword a value of its type."""
    positional, keywords = [], {}
    for name, p in inspect.signature(build).parameters.items():
        if p.default is not p.empty:
            continue
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            positional.append(name)
        elif "datetime" in p.annotation:
            keywords[name] = datetime.now(UTC)
        elif "Sequence" in p.annotation:
            keywords[name] = []
        else:
            keywords[name] = 1 if p.annotation == "int" else "x"
    return positional, keywords


def test_every_error_code_of_the_server_has_its_own_client_class() -> None:
    for code in STATUS_OF_CODE:
        raised = tally_client.ERRORS[code]
        assert raised.code == code and issubclass(raised, TallyError)
        assert raised.__name__ == "".join(part.title() for part in code.split("_"))
    assert tally_client.InsufficientPoints.code == "insufficient_points"
    assert issubclass(tally_client.MemberNotFound, tally_client.NotFound)


# Members


def test_members_are_created_fetched_and_listed_over_every_page(tally: TallyClient) -> None:
    made = tally.create_member(member_id=new_id(), email="ada@example.com", metadata={"tier": 2})
    assert made.email == "ada@example.com" and made.metadata == {"tier": 2}
    assert made.created_at.tzinfo is not None
    assert tally.get_member(made.member_id) == made
    generated = tally.create_member()
    assert generated.member_id.startswith("mem_")
    ours = {made.member_id, generated.member_id} | {member(tally) for _ in range(5)}
    listed = [m.member_id for m in tally.list_members(per_page=2)]
    assert len(listed) == len(set(listed))
    assert ours <= set(listed)


def test_a_member_is_updated_then_erased_and_still_earns(tally: TallyClient) -> None:
    made = tally.create_member(member_id=new_id(), email="ada@example.com", name="Ada")
    changed = tally.update_member(made.member_id, name="Ada L.", metadata={"tier": 3})
    assert (changed.email, changed.name, changed.metadata) == (
        "ada@example.com",
        "Ada L.",
        {"tier": 3},
    )
    assert tally.update_member(made.member_id, email=None).email is None
    tally.award(member_id=made.member_id, points=10, reason="before", metadata={"order": "o-1"})
    erased = tally.erase_member(made.member_id)
    assert erased.erased_at is not None
    assert (erased.email, erased.name, erased.metadata) == (None, None, None)
    assert [t.metadata for t in tally.history(made.member_id)] == [None]
    with pytest.raises(tally_client.MemberErased) as refused:
        tally.update_member(made.member_id, name="Ada")
    assert refused.value.status == 409
    tally.award(member_id=made.member_id, points=5, reason="after")
    assert tally.balance(made.member_id).balance == 15


def test_a_members_open_lots_and_the_key_in_use(tally: TallyClient) -> None:
    a = member(tally, points=7)
    tally.award(
        member_id=a, points=3, reason="expiring", expires_at=datetime.now(UTC) + timedelta(days=9)
    )
    lots = list(tally.list_lots(a, per_page=1))
    assert [lot.remaining for lot in lots] == [3, 7]  # soonest to expire first
    assert lots[0].expires_at is not None and lots[1].expires_at is None
    key = tally.current_key()
    assert key.key_id.startswith("key_") and (key.scope, key.program) == ("write", "acme")


def test_an_awards_file_is_imported_once_and_exported(tally: TallyClient) -> None:
    a, b = member(tally), member(tally)
    csv = f"member_id,points,reason\n{a},30,june\n{b},12,june\n"
    imported = tally.import_awards(csv)
    assert (imported.rows, imported.awarded, imported.replayed) == (2, 2, 0)
    assert [(r.line, r.status) for r in imported.results] == [(2, "ok"), (3, "ok")]
    assert tally.import_awards(csv.encode()).replayed == 2  # the same file again: nothing twice
    assert (tally.balance(a).balance, tally.balance(b).balance) == (30, 12)
    with pytest.raises(tally_client.ValidationError) as refused:
        tally.import_awards(f"member_id,points,reason\n{a},1.5,bad\n")
    assert refused.value.details and refused.value.details[0]["line"] == 2
    exported = tally.export_transactions(type="award").splitlines()
    assert exported[0].startswith("transaction_id,member_id,type")
    assert sum(1 for line in exported if f",{a},award," in line) == 1


def test_a_reversal_a_past_balance_and_the_report(tally: TallyClient) -> None:
    a = member(tally)
    before = datetime.now(UTC)
    award = tally.award(member_id=a, points=50, reason="order")
    spent = tally.deduct(member_id=a, points=40, reason="spent")
    with pytest.raises(tally_client.InsufficientPoints):  # 10 of the award's 50 left unspent
        tally.reverse_transaction(award.transaction_id, reason="returned", points=20)
    reversal = tally.reverse_transaction(
        award.transaction_id, reason="returned", points=20, allow_negative=True
    )
    assert (reversal.type, reversal.points, reversal.reverses) == (
        "reversal",
        -20,
        award.transaction_id,
    )
    assert tally.balance(a).balance == -10  # a debt
    with pytest.raises(tally_client.NotReversible):
        tally.reverse_transaction(reversal.transaction_id, reason="again")
    tally.reverse_transaction(
        spent.transaction_id, reason="goodwill", points=15
    )  # pays the debt first
    assert tally.balance(a).balance == 5
    assert tally.balance(a, as_of=before).balance == 0
    with pytest.raises(tally_client.ValidationError):
        tally.balance(a, as_of=datetime.now(UTC) + timedelta(days=1))
    report = tally.report(interval="month")
    assert report.interval == "month" and report.to == datetime.now(UTC).date()
    assert report.outstanding.balance >= 5 and [e.points >= 0 for e in report.expiring]
    assert sum(p.reversed for p in report.periods) <= -5


def test_member_refusals_raise_the_class_of_their_code(tally: TallyClient) -> None:
    member_id = member(tally)
    with pytest.raises(tally_client.MemberExists) as exists:
        tally.create_member(member_id=member_id)
    assert (exists.value.status, exists.value.code) == (409, "member_exists")
    assert member_id in exists.value.message
    with pytest.raises(tally_client.MemberNotFound) as missing:
        tally.get_member("nobody_" + new_id())
    assert missing.value.status == 404 and missing.value.request_id
    with pytest.raises(tally_client.ValidationError) as invalid:
        tally.create_member(member_id="spaces are not allowed")
    assert invalid.value.details[0]["field"] == "member_id"


def test_a_member_id_with_every_allowed_character_reaches_its_member(tally: TallyClient) -> None:
    odd = f"a.b:c@d-{uuid.uuid4().hex[:6]}_e"
    tally.create_member(member_id=odd)
    tally.award(member_id=odd, points=5, reason="odd id")
    assert tally.balance(odd).balance == 5
    assert [t.points for t in tally.history(odd)] == [5]


# Points


def test_award_deduct_transfer_and_balance_are_typed(tally: TallyClient) -> None:
    a, b = member(tally), member(tally)
    awarded = tally.award(
        member_id=a, points=500, reason="Q2", reference="INV-1", metadata={"campaign": "q2"}
    )
    assert (awarded.type, awarded.status, awarded.new_balance) == ("award", "posted", 500)
    assert awarded.metadata == {"campaign": "q2"} and awarded.transaction_id.startswith("txn_")
    deducted = tally.deduct(member_id=a, points=120, reason="adjustment")
    assert (deducted.points, deducted.new_balance) == (-120, 380)
    moved = tally.transfer(from_member_id=a, to_member_id=b, points=80, reason="gift")
    assert moved.transfer_id.startswith("trf_")
    assert (moved.from_.type, moved.from_.points, moved.from_.balance_after) == (
        "transfer_out",
        -80,
        300,
    )
    assert (moved.to.member_id, moved.to.points) == (b, 80)
    balance = tally.balance(a)
    assert isinstance(balance, Balance)
    assert (balance.balance, balance.lifetime_earned, balance.lifetime_deducted) == (300, 500, 120)
    assert balance.lifetime_transferred_out == 80 and balance.next_expiration is None
    fetched = tally.get_transaction(awarded.transaction_id)
    assert isinstance(fetched, Transaction) and fetched.reference == "INV-1"


def test_insufficient_points_says_what_is_available_and_changes_nothing(
    tally: TallyClient,
) -> None:
    a = member(tally, points=100)
    with pytest.raises(tally_client.InsufficientPoints) as refused:
        tally.deduct(member_id=a, points=101, reason="too much")
    error = refused.value
    assert (error.status, error.code) == (422, "insufficient_points")
    assert error.details[0]["available"] == 100 and error.idempotency_key
    assert tally.balance(a).balance == 100


def test_a_pending_award_is_cancelled_once(tally: TallyClient) -> None:
    a = member(tally)
    later = datetime.now(UTC) + timedelta(days=3)
    pending = tally.award(member_id=a, points=40, reason="later", available_at=later)
    assert pending.status == "pending" and pending.available_at is not None
    assert tally.balance(a).pending == 40
    cancelled = tally.cancel_transaction(pending.transaction_id)
    assert cancelled.status == "cancelled" and tally.balance(a).pending == 0
    with pytest.raises(tally_client.NotCancellable):
        tally.cancel_transaction(pending.transaction_id)
    with pytest.raises(tally_client.TransactionNotFound):
        tally.get_transaction("txn_" + "0" * 26)


def test_bulk_award_takes_items_and_reports_each_failure(tally: TallyClient) -> None:
    a, b = member(tally), member(tally)
    result = tally.bulk_award(
        awards=[
            AwardItem(member_id=a, points=10, reason="bulk"),
            {"member_id": b, "points": 20, "reason": "bulk"},
            AwardItem(member_id="nobody_" + new_id(), points=5, reason="bulk"),
        ]
    )
    assert (result.processed, result.failed) == (2, 1)
    assert [(p.index, p.member_id, p.new_balance) for p in result.transactions] == [
        (0, a, 10),
        (1, b, 20),
    ]
    assert result.errors[0].index == 2 and result.errors[0].error.code == "member_not_found"


def test_history_runs_over_every_page_newest_first_and_filters(tally: TallyClient) -> None:
    a = member(tally)
    made = [tally.award(member_id=a, points=n, reason=f"award {n}") for n in range(1, 24)]
    tally.deduct(member_id=a, points=3, reason="one deduct")
    history = list(tally.history(a, per_page=5))
    assert [t.transaction_id for t in history[1:]] == [t.transaction_id for t in reversed(made)]
    assert history[0].type == "deduct" and history[0].balance_after == sum(range(1, 24)) - 3
    assert [t.points for t in tally.history(a, type="deduct")] == [-3]
    # from_ and to take times (an offset's "+" survives the query) and days.
    start = made[5].created_at.astimezone(UTC)
    window = list(tally.history(a, from_=start, to=made[7].created_at, per_page=2))
    assert [t.points for t in window] == [8, 7, 6]
    today = made[0].created_at.date()
    assert len(list(tally.history(a, from_=today, to=today + timedelta(days=1)))) == 24
    assert list(tally.history(a, to=date(2000, 1, 1))) == []
    with pytest.raises(tally_client.ValidationError) as invalid:
        list(tally.history(a, type="bogus"))
    assert invalid.value.details[0]["field"] == "type"


# Rewards and redemptions, the program


def test_rewards_and_redemptions(tally: TallyClient) -> None:
    a = member(tally, points=1000)
    reward = tally.create_reward(name="Mug", points_cost=150, stock=2, metadata={"sku": "M1"})
    assert (reward.stock, reward.active, reward.metadata) == (2, True, {"sku": "M1"})
    assert tally.get_reward(reward.reward_id) == reward
    assert reward.reward_id in {r.reward_id for r in tally.list_rewards(per_page=1)}
    redeemed = tally.redeem(member_id=a, reward_id=reward.reward_id, quantity=2)
    assert (redeemed.points, redeemed.status) == (300, "completed")
    assert tally.get_redemption(redeemed.redemption_id) == redeemed
    assert [r.redemption_id for r in tally.redemptions(a)] == [redeemed.redemption_id]
    with pytest.raises(tally_client.OutOfStock):
        tally.redeem(member_id=a, reward_id=reward.reward_id)
    cancelled = tally.cancel_redemption(redeemed.redemption_id)
    assert cancelled.status == "cancelled" and cancelled.refund_transaction_id
    assert tally.balance(a).balance == 1000
    changed = tally.update_reward(reward.reward_id, active=False, stock=None)
    assert (changed.active, changed.stock, changed.name) == (False, None, "Mug")
    with pytest.raises(tally_client.RewardInactive):
        tally.redeem(member_id=a, reward_id=reward.reward_id)
    with pytest.raises(tally_client.NotCancellable):
        tally.cancel_redemption(redeemed.redemption_id)


def test_the_program_settings_are_read_and_changed(tally: TallyClient) -> None:
    assert tally.get_program().name == "acme"
    try:
        assert tally.update_program(points_expire_after_days=30).points_expire_after_days == 30
        a = member(tally, points=10)
        assert tally.balance(a).next_expiration is not None
    finally:  # the server is shared by the module's tests: points never expire again
        cleared = tally.update_program(points_expire_after_days=None)
    assert cleared.points_expire_after_days is None
    with pytest.raises(tally_client.ValidationError):
        tally.update_program(points_expire_after_days=0)


def test_the_operations_routes(tally: TallyClient) -> None:
    assert tally.health().status == "ok"
    assert tally.ready().status == "ready"
    assert "tally_http_requests_total" in tally.metrics()


# Keys


def test_a_bad_key_is_unauthorized_and_a_read_key_forbidden_to_write(live: Live) -> None:
    with TallyClient(live.url, "tally_" + "x" * 43) as stranger:
        with pytest.raises(tally_client.Unauthorized) as refused:
            stranger.get_program()
    assert refused.value.status == 401
    from tally.domain import Scope

    with TallyClient(live.url, live.api.key_for("acme", Scope.READ)) as reader:
        assert reader.get_program().name == "acme"
        with pytest.raises(tally_client.Forbidden):
            reader.create_member()


# Events


def test_events_run_over_every_page_after_the_one_given(tally: TallyClient) -> None:
    last = None
    for event in tally.events():
        last = event.event_id
    a = member(tally)
    for n in range(3):
        tally.award(member_id=a, points=n + 1, reason="evented")
    events = list(tally.events(last, limit=2))
    mine = [e for e in events if e.data.get("member_id") == a]
    assert [e.type for e in mine] == ["member.created", *["transaction.created"] * 3]
    assert [e.data["points"] for e in mine[1:]] == [1, 2, 3]
    assert all(e.timestamp.tzinfo is not None for e in mine)
    only = list(tally.events(last, type=["member.created"]))
    assert [e.data["member_id"] for e in only if e.data["member_id"] == a] == [a]
    assert list(tally.events(events[-1].event_id)) == []


# Retries


@pytest.fixture
def proxy(live: Live) -> Iterator[Proxy]:
    with Proxy(live.url).running() as running:
        yield running


@pytest.fixture
def behind(proxy: Proxy, live: Live, naps: Naps) -> Iterator[TallyClient]:
    """A client that talks to the server through `proxy`."""
    with TallyClient(proxy.url, live.key, sleep=naps) as client:
        yield client


def test_503_and_429_are_retried_after_their_retry_after_with_one_idempotency_key(
    tally: TallyClient, behind: TallyClient, proxy: Proxy, naps: Naps
) -> None:
    a = member(tally)
    proxy.plan(
        refusal(503, "unavailable", "2"),
        refusal(429, "rate_limited", "1"),
        refusal(409, "idempotency_in_progress"),  # no Retry-After: the backoff's 1 to 2 s
    )
    awarded = behind.award(member_id=a, points=70, reason="retried")
    assert awarded.new_balance == 70 and naps.taken[:2] == [2.0, 1.0]
    assert 1.0 <= naps.taken[2] <= 2.0 and len(naps.taken) == 3
    keys = {seen.headers["idempotency-key"] for seen in proxy.seen}
    assert len(proxy.seen) == 4 and len(keys) == 1
    assert [t.points for t in tally.history(a)] == [70]


def test_a_write_whose_answer_was_lost_is_retried_and_applied_once(
    tally: TallyClient, behind: TallyClient, proxy: Proxy
) -> None:
    a = member(tally)
    # Tally commits each of these, then the client hears nothing (or a 503) and sends again.
    proxy.plan(LOST, Answer(503, forward=True), PASS_ON)
    awarded = behind.award(member_id=a, points=25, reason="once")
    assert awarded.new_balance == 25
    assert len(proxy.seen) == 3 and len({s.headers["idempotency-key"] for s in proxy.seen}) == 1
    assert tally.balance(a).balance == 25
    assert [t.points for t in tally.history(a)] == [25]


def test_reads_and_updates_are_retried_after_a_lost_answer(
    tally: TallyClient, behind: TallyClient, proxy: Proxy, naps: Naps
) -> None:
    reward = tally.create_reward(name="Cap", points_cost=10)
    proxy.plan(LOST, refusal(503, "unavailable", "1"))
    assert behind.get_reward(reward.reward_id) == reward
    proxy.plan(LOST)
    assert behind.update_reward(reward.reward_id, points_cost=12).points_cost == 12
    assert [s.method for s in proxy.seen] == ["GET", "GET", "GET", "PATCH", "PATCH"]
    assert len(naps.taken) == 3 and naps.taken[1] == 1.0


def test_a_given_idempotency_key_is_used_and_replayed(tally: TallyClient) -> None:
    a = member(tally)
    key = new_id("order")
    first = tally.award(member_id=a, points=9, reason="order", idempotency_key=key)
    again = tally.award(member_id=a, points=9, reason="order", idempotency_key=key)
    assert again == first and tally.balance(a).balance == 9
    with pytest.raises(tally_client.IdempotencyKeyReused):
        tally.award(member_id=a, points=10, reason="order", idempotency_key=key)


def test_retries_are_bounded_and_the_last_refusal_is_raised(
    tally: TallyClient, behind: TallyClient, proxy: Proxy, naps: Naps
) -> None:
    a = member(tally)
    proxy.plan(*[refusal(503, "unavailable", "1")] * 4)
    with pytest.raises(tally_client.Unavailable) as refused:
        behind.award(member_id=a, points=5, reason="never")
    assert refused.value.retry_after == 1.0 and refused.value.idempotency_key
    assert len(proxy.seen) == 4 and naps.taken == [1.0, 1.0, 1.0]
    # The key of the refused request settles it later: applied once.
    retried = tally.award(
        member_id=a, points=5, reason="never", idempotency_key=refused.value.idempotency_key
    )
    assert retried.new_balance == 5


def test_a_retry_after_too_long_to_wait_is_raised_at_once(
    behind: TallyClient, proxy: Proxy, naps: Naps
) -> None:
    proxy.plan(refusal(429, "rate_limited", "3600"))
    with pytest.raises(tally_client.RateLimited) as refused:
        behind.get_program()
    assert refused.value.retry_after == 3600.0 and naps.taken == []


def test_other_refusals_and_deletes_of_unknown_outcome_are_not_retried(
    tally: TallyClient, behind: TallyClient, proxy: Proxy, naps: Naps, receiver: Receiver
) -> None:
    endpoint = tally.create_webhook_endpoint(url=receiver.url + "/x", events=["reward.created"])
    proxy.plan(LOST)
    with pytest.raises(tally_client.ConnectionFailed) as failed:
        behind.delete_webhook_endpoint(endpoint.endpoint_id)
    assert "outcome is unknown" in failed.value.message and failed.value.status is None
    proxy.plan(refusal(500, "internal_error"))
    with pytest.raises(tally_client.InternalError):
        behind.get_program()
    assert naps.taken == [] and len(proxy.seen) == 2
    with pytest.raises(tally_client.NotFound):
        tally.get_webhook_endpoint(endpoint.endpoint_id)


def test_a_server_that_cannot_be_reached_fails_after_bounded_backoff(naps: Naps) -> None:
    with TallyClient(f"http://127.0.0.1:{free_port()}", "k", sleep=naps) as nowhere:
        with pytest.raises(tally_client.ConnectionFailed) as failed:
            nowhere.award(member_id="m", points=1, reason="x")
    assert "not sent" in failed.value.message
    assert len(naps.taken) == 3
    for attempt, wait in enumerate(naps.taken):
        assert 0.25 * 2**attempt <= wait <= 0.5 * 2**attempt


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    waits = {
        "3": 3.0,
        "0.5": 0.5,
        "-4": 0.0,
        "soon": None,
        in_ten: pytest.approx(10, abs=1.5),
        "Mon, 01 Jan 2001 00:00:00 GMT": 0.0,
    }
    for header, wait in waits.items():
        assert retry_after(httpx.Response(429, headers={"Retry-After": header})) == wait, header
    assert retry_after(httpx.Response(503)) is None


def test_a_base_url_with_v1_is_refused() -> None:
    with pytest.raises(ValueError, match="without /v1"):
        TallyClient("http://localhost:8000/v1/", "key")
    TallyClient("http://localhost:8000/tally", "key").close()  # a server behind a prefix


def test_answers_that_are_not_tallys_raise_unexpected_response_or_the_code_as_given(
    behind: TallyClient, proxy: Proxy
) -> None:
    proxy.plan(Answer(502, {"content-type": "text/html"}, b"<html>Bad gateway</html>"))
    with pytest.raises(tally_client.UnexpectedResponse) as foreign:
        behind.get_program()
    assert foreign.value.status == 502 and "Bad gateway" in foreign.value.message
    proxy.plan(refusal(422, "some_future_rule"))
    with pytest.raises(TallyError) as newer:
        behind.get_program()
    assert type(newer.value) is TallyError and newer.value.code == "some_future_rule"


# The async client


def test_the_async_client_does_what_the_sync_one_does(
    live: Live, tally: TallyClient, proxy: Proxy
) -> None:
    a = member(tally)
    naps = Naps()

    async def scenario() -> None:
        async with AsyncTallyClient(proxy.url, live.key, sleep=naps.nap) as client:
            proxy.plan(refusal(503, "unavailable", "1"), LOST)
            awarded = await client.award(member_id=a, points=300, reason="async")
            assert awarded.new_balance == 300
            await client.deduct(member_id=a, points=100, reason="async")
            for n in range(6):
                await client.award(member_id=a, points=n + 1, reason="page")
            history = [t async for t in client.history(a, per_page=2)]
            assert [t.points for t in history][:2] == [6, 5] and len(history) == 8
            assert (await client.balance(a)).balance == 221
            with pytest.raises(tally_client.InsufficientPoints):
                await client.deduct(member_id=a, points=10_000, reason="too much")
            members = [m.member_id async for m in client.list_members(per_page=3)]
            assert a in members
            events = [e async for e in client.events(limit=5)]
            assert events and all(e.event_id.startswith("evt_") for e in events)

    asyncio.run(scenario())
    assert naps.taken[0] == 1.0 and len(naps.taken) == 2
    assert [t.points for t in tally.history(a, type="award")][-1] == 300
    assert tally.balance(a).lifetime_earned == 321


# Webhooks


def test_webhook_endpoints_deliveries_and_verify_against_a_real_delivery(
    tally: TallyClient, receiver: Receiver
) -> None:
    endpoint = tally.create_webhook_endpoint(
        url=receiver.url + "/hook", events=["member.created"], description="tests"
    )
    assert endpoint.secret.startswith("whsec_") and endpoint.enabled
    assert endpoint.endpoint_id in {e.endpoint_id for e in tally.list_webhook_endpoints()}
    a = member(tally)
    wait_until(lambda: bool(receiver.at("/hook")), timeout=30, what="a delivery")
    delivered = receiver.at("/hook")[0]
    event = verify(delivered.body, delivered.headers, endpoint.secret)
    assert event["type"] == "member.created" and event["data"]["member_id"] == a
    assert event["event_id"] == delivered.headers["webhook-id"]

    deliveries = list(tally.list_deliveries(endpoint.endpoint_id, per_page=1))
    assert deliveries[0].event_id == event["event_id"]
    wait_until(
        lambda: list(tally.list_deliveries(endpoint.endpoint_id, status="succeeded")) != [],
        timeout=30,
        what="the delivery to be recorded as succeeded",
    )
    retried = tally.retry_delivery(endpoint.endpoint_id, deliveries[0].delivery_id)
    assert retried.status == "pending"

    # After a rotation both secrets sign.
    rotated = tally.rotate_webhook_secret(endpoint.endpoint_id)
    assert rotated.secret != endpoint.secret
    count = len(receiver.at("/hook"))
    b = member(tally)
    wait_until(
        lambda: any(b.encode() in r.body for r in receiver.at("/hook")[count:]),
        timeout=30,
        what="a delivery after the rotation",
    )
    second = next(r for r in receiver.at("/hook")[count:] if b.encode() in r.body)
    assert verify(second.body, second.headers, rotated.secret)["data"]["member_id"] == b
    assert verify(second.body, second.headers, endpoint.secret)["data"]["member_id"] == b

    changed = tally.update_webhook_endpoint(endpoint.endpoint_id, enabled=False, description=None)
    assert (changed.enabled, changed.description) == (False, None)
    assert tally.delete_webhook_endpoint(endpoint.endpoint_id).deleted
    with pytest.raises(tally_client.NotFound):
        tally.get_webhook_endpoint(endpoint.endpoint_id)


def test_failed_deliveries_are_recovered(tally: TallyClient, receiver: Receiver) -> None:
    receiver.always("/down", 500)
    since = datetime.now(UTC)
    endpoint = tally.create_webhook_endpoint(url=receiver.url + "/down", events=["member.created"])
    member(tally)
    wait_until(
        lambda: list(tally.list_deliveries(endpoint.endpoint_id, status="failed")) != [],
        timeout=30,
        what="the delivery to fail after its last attempt",
    )
    failed = list(tally.list_deliveries(endpoint.endpoint_id))
    assert [(d.status, d.last_status_code) for d in failed] == [("failed", 500)]
    receiver.always("/down", 200)
    assert tally.recover_deliveries(endpoint.endpoint_id, since=since).queued == 1
    wait_until(
        lambda: list(tally.list_deliveries(endpoint.endpoint_id, status="succeeded")) != [],
        timeout=30,
        what="the recovered delivery to succeed",
    )
    tally.delete_webhook_endpoint(endpoint.endpoint_id)


def test_verify_refuses_a_changed_old_or_foreign_delivery(
    tally: TallyClient, receiver: Receiver
) -> None:
    endpoint = tally.create_webhook_endpoint(url=receiver.url + "/t", events=["member.created"])
    member(tally)
    wait_until(lambda: bool(receiver.at("/t")), timeout=30, what="a delivery")
    tally.delete_webhook_endpoint(endpoint.endpoint_id)
    body, headers, secret = receiver.at("/t")[0].body, receiver.at("/t")[0].headers, endpoint.secret
    sent_at = int(headers["webhook-timestamp"])
    assert verify(body, headers, secret, now=sent_at + 299)["type"] == "member.created"
    upper = {name.title(): value for name, value in headers.items()}
    assert verify(body, upper, secret, now=sent_at)["type"] == "member.created"

    def refused(body: bytes, headers: dict[str, str], secret: str, now: float) -> str:
        with pytest.raises(WebhookVerificationError) as error:
            verify(body, headers, secret, now=now)
        return str(error.value)

    assert "no signature" in refused(
        body.replace(b"member", b"Member", 1), headers, secret, sent_at
    )
    stamped = {**headers, "webhook-timestamp": str(sent_at + 1)}
    assert "no signature" in refused(body, stamped, secret, sent_at)
    forged = {**headers, "webhook-id": "evt_forged"}
    assert "no signature" in refused(body, forged, secret, sent_at)
    other = tally.create_webhook_endpoint(url=receiver.url + "/o", events=["reward.created"])
    tally.delete_webhook_endpoint(other.endpoint_id)
    assert "no signature" in refused(body, headers, other.secret, sent_at)
    assert "too old" in refused(body, headers, secret, sent_at + 301)
    assert "future" in refused(body, headers, secret, sent_at - 301)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        missing = {k: v for k, v in headers.items() if k != name}
        assert name in refused(body, missing, secret, sent_at)
    with pytest.raises(ValueError):
        verify(body, headers, "whsec_not base64!", now=sent_at)


def test_the_readme_integration_runs_as_written(
    live: Live,
    tally: TallyClient,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).parent.parent / "clients/python/README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example is not None and len(example.group(1).splitlines()) < 20
    # A real delivery for the example's webhook route to verify.
    endpoint = tally.create_webhook_endpoint(url=receiver.url + "/r", events=["member.created"])
    member(tally)
    wait_until(lambda: bool(receiver.at("/r")), timeout=30, what="a delivery")
    tally.delete_webhook_endpoint(endpoint.endpoint_id)
    delivered = receiver.at("/r")[0]
    monkeypatch.setenv("TALLY_URL", live.url)
    monkeypatch.setenv("TALLY_API_KEY", live.key)
    monkeypatch.setenv("TALLY_WEBHOOK_SECRET", endpoint.secret)
    for _ in range(2):  # run again, as a retried order would: the award is made once
        scope: dict[str, Any] = {"body": delivered.body, "headers": delivered.headers}
        exec(example.group(1), scope)
        scope["tally"].close()
        assert scope["event"]["event_id"] == delivered.headers["webhook-id"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "Not enough points: 120"
    assert printed[1].endswith(" award 120 120") and len(printed) == 4
    assert tally.balance("cust_42").balance == 120


INSTALLED_USE = """
import sys
from tally_client import TallyClient, MemberNotFound
with TallyClient(sys.argv[1], sys.argv[2]) as tally:
    tally.create_member(member_id=sys.argv[3])
    print(tally.award(member_id=sys.argv[3], points=42, reason="installed").new_balance)
    try:
        tally.get_member("nobody")
    except MemberNotFound as error:
        print(error.code)
"""


def test_the_client_installed_from_the_repository_works_in_a_venv_of_its_own(
    live: Live, tmp_path: Path
) -> None:
    """`pip install ./clients/python` (not editable, with nothing else) against the server."""
    if not live.database_url.startswith("sqlite"):
        pytest.skip("the package does not depend on the backend: installed once, on SQLite")
    root = Path(__file__).parent.parent
    source = tmp_path / "client"
    shutil.copytree(
        root / "clients/python", source, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv/bin/python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    subprocess.run(
        [*pip, "-c", str(root / "constraints.txt"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    ran = subprocess.run(
        [python, "-c", INSTALLED_USE, live.url, live.key, new_id()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.stdout.split() == ["42", "member_not_found"], ran.stderr
