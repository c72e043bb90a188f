"""The console (`/console`) in a real browser: Debian's headless Chromium, driven by Playwright,
against a real `tally serve` process.

One server and one browser serve the whole module (each test has a browser context of its own,
so its own sessionStorage, and members of its own). Every test also proves that the page loaded
nothing from another origin and that the browser reported no error: a Content-Security-Policy
violation is reported as one, so the strict policy is checked on every page the tests open.

Chromium is `/usr/bin/chromium` (`apt-get install chromium`) or `TALLY_TEST_CHROMIUM`; without
it these tests skip, except under CI (`CI=true`), where they fail. Playwright never downloads a
browser here. With `TALLY_SCREENSHOTS=DIR` (`make screenshots`) they save the README's
screenshots into DIR.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tally.domain import Scope
from tally.maintenance import create_key
from tests.support import Live, serving, wait_until
from tests.webhook_support import Receiver

CHROMIUM = os.environ.get("TALLY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("TALLY_SCREENSHOTS")
TIMEOUT_MS = 30_000  # generous: a loaded CI machine is slow, and only a failure waits this long
expect.set_options(timeout=TIMEOUT_MS)  # `expect` waits 5 s unless told; actions are told below

pytestmark = pytest.mark.slow


def chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TALLY_TEST_CHROMIUM)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Console:
    """The server, a receiver for its webhooks, and the browser the tests drive."""

    live: Live
    receiver: Receiver
    browser: Browser


@dataclass
class Tab:
    """One browser tab on the console, with every request it made and every error it saw."""

    page: Page
    context: BrowserContext
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    executable = chromium()
    database = f"sqlite:///{tmp_path_factory.mktemp('console')}/tally.db"
    env = {
        "TALLY_WEBHOOKS_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
        "TALLY_WEBHOOKS_RETRY_SCHEDULE": "0",  # one attempt, then `failed`
        "TALLY_WEBHOOKS_POLL_SECONDS": "0.1",
        "TALLY_KEY_CACHE_SECONDS": "0",  # a revoked key is refused at once
    }
    with (
        Receiver().running() as receiver,
        serving(database, **env) as live,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield Console(live, receiver, browser)
        finally:
            browser.close()


@pytest.fixture
def tab(console: Console) -> Iterator[Tab]:
    context = console.browser.new_context(
        base_url=console.live.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    opened = Tab(page, context)
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()
    # A download is saved from a Blob of this page's own origin (`blob:http://127.0.0.1:…/…`).
    mine = (console.live.url + "/", f"blob:{console.live.url}/")
    elsewhere = [url for url in opened.requests if not url.startswith(mine)]
    assert elsewhere == [], "the console loaded something from another origin"
    # Refusals the console shows on purpose (a wrong key's 401) are logged by Chromium as
    # failed loads; anything else (a CSP violation, a script error) fails the test.
    unexpected = [e for e in opened.errors if "Failed to load resource" not in e]
    assert unexpected == []


def screenshot(page: Page, name: str) -> None:
    """Saved for the README when `make screenshots` asks (TALLY_SCREENSHOTS)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def open_member(page: Page, member_id: str) -> None:
    page.get_by_label("Member ID").fill(member_id)
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", name=f"Member {member_id}")).to_be_visible()


def balance_of(page: Page) -> str:
    return page.get_by_test_id("balance").inner_text()


def history_rows(page: Page) -> Locator:
    return page.get_by_role("region", name="History").locator("tbody tr")


def test_sign_in_find_a_member_award_and_see_the_new_balance(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    api.member("ada", name="Ada Lovelace", email="ada@example.com")
    api.award("ada", 500, reason="Welcome bonus", expires_at="2027-06-30T00:00:00Z")
    api.award("ada", 1200, reason="Order 1042", reference="INV-1042")
    reward = api.post("/v1/rewards", {"name": "Coffee mug", "points_cost": 300, "stock": 20})
    redeemed = {"member_id": "ada", "reward_id": reward.json()["data"]["reward_id"]}
    assert api.post("/v1/redemptions", redeemed).status_code == 201

    page.goto("/console")
    expect(page.get_by_label("API key")).to_be_visible()
    screenshot(page, "sign-in")
    sign_in(page, console.live.key)
    open_member(page, "ada")
    expect(page.get_by_test_id("balance")).to_have_text("1,400")
    expect(page.get_by_text("Ada Lovelace · ada@example.com")).to_be_visible()

    award = page.get_by_role("group", name="Award")
    award.get_by_label("Points").fill("250")
    award.get_by_label("Reason").fill("Birthday bonus")
    award.get_by_role("button", name="Award points").click()

    expect(page.get_by_text("Awarded 250 points: the balance is now 1,650.")).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("1,650")
    expect(history_rows(page).first).to_contain_text("Birthday bonus")
    expect(history_rows(page).first).to_contain_text("+250")
    lots = page.get_by_role("region", name="Lots").locator("tbody tr")
    expect(lots.first).to_contain_text("2027-06-30")
    assert api.balance("ada")["balance"] == 1650
    assert api.history("ada")[0]["reason"] == "Birthday bonus"
    screenshot(page, "member")


def test_deduct_and_transfer_with_a_reason_and_a_refusal_in_the_apis_words(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("dee")
    api.member("tom")
    api.award("dee", 500)
    sign_in(page, console.live.key)
    open_member(page, "dee")

    deduct = page.get_by_role("group", name="Deduct")
    deduct.get_by_label("Points").fill("120")
    deduct.get_by_label("Reason").fill("Damaged parcel refund reversed")
    deduct.get_by_role("button", name="Deduct points").click()
    expect(page.get_by_test_id("balance")).to_have_text("380")

    transfer = page.get_by_role("group", name="Transfer")
    transfer.get_by_label("Recipient").fill("tom")
    transfer.get_by_label("Points").fill("80")
    transfer.get_by_label("Reason").fill("Gift")
    transfer.get_by_role("button", name="Transfer points").click()
    expect(
        page.get_by_text("Transferred 80 points to tom: the balance is now 300.")
    ).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("300")

    deduct.get_by_label("Points").fill("1000")
    deduct.get_by_label("Reason").fill("Too much")
    deduct.get_by_role("button", name="Deduct points").click()
    expect(deduct.locator("xpath=..").get_by_role("alert")).to_contain_text("insufficient_points")

    assert api.balance("dee")["balance"] == 300
    assert api.balance("tom")["balance"] == 80
    assert [(t["type"], t["reason"]) for t in api.history("dee")[:2]] == [
        ("transfer_out", "Gift"),
        ("deduct", "Damaged parcel refund reversed"),
    ]


def test_a_reward_is_added_redeemed_and_the_redemption_cancelled(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("rae")
    api.award("rae", 1000)
    sign_in(page, console.live.key)
    page.get_by_role("link", name="Rewards").click()
    new = page.get_by_role("group", name="New reward")
    new.get_by_label("Name").fill("Tote bag")
    new.get_by_label("Cost in points").fill("250")
    new.get_by_label("Stock").fill("3")
    new.get_by_role("button", name="Add reward").click()
    expect(page.get_by_role("row", name="Tote bag")).to_contain_text("active")

    page.get_by_role("link", name="Members").click()
    open_member(page, "rae")
    redeem = page.get_by_role("group", name="Redeem a reward")
    redeem.get_by_label("Reward").select_option(label="Tote bag (250 points)")
    redeem.get_by_label("Quantity").fill("2")
    redeem.get_by_role("button", name="Redeem").click()
    expect(page.get_by_text("Redeemed for 500 points.")).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("500")
    redemptions = page.get_by_role("region", name="Redemptions").locator("tbody tr")
    expect(redemptions.first).to_contain_text("completed")

    redemptions.first.get_by_role("button", name="Cancel").click()
    expect(redemptions.first).to_contain_text("cancelled")
    expect(page.get_by_test_id("balance")).to_have_text("1,000")
    [reward] = [r for r in api.get("/v1/rewards").json()["data"] if r["name"] == "Tote bag"]
    assert (reward["points_cost"], reward["stock"]) == (250, 3)  # taken, then given back


def test_a_read_keys_view_has_no_write_controls(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    api.member("rita", name="Rita Read")
    api.award("rita", 75)
    api.post("/v1/webhook_endpoints", {"url": console.receiver.url + "/quiet"})
    reader = api.key_for("acme", Scope.READ)
    sign_in(page, reader)
    expect(page.get_by_text("read-only key")).to_be_visible()
    open_member(page, "rita")
    expect(page.get_by_test_id("balance")).to_have_text("75")
    expect(history_rows(page)).to_have_count(1)
    expect(page.get_by_text("This key may only read")).to_be_visible()
    screenshot(page, "read-only")

    def no_write_controls() -> None:
        expect(page.locator("form.action")).to_have_count(0)
        for name in ["Award points", "Deduct points", "Transfer points", "Reverse", "Redeem"] + [
            "Save",
            "Erase",
            "Import",
        ]:
            expect(page.get_by_role("button", name=name)).to_have_count(0)
        expect(page.get_by_role("button", name="Retry")).to_have_count(0)

    no_write_controls()
    page.get_by_role("link", name="Rewards").click()
    expect(page.get_by_role("heading", name="Rewards")).to_be_visible()
    no_write_controls()
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("link", name=console.receiver.url + "/quiet")).to_be_visible()
    no_write_controls()
    page.get_by_role("link", name="Program").click()
    expect(page.get_by_test_id("Name")).to_have_text("acme")
    no_write_controls()


def test_history_is_paged_and_filtered(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    api.member("hal")
    for n in range(1, 13):
        api.award("hal", n, reason=f"award {n}")
    assert api.deduct("hal", 5, reason="one deduct").status_code == 201
    sign_in(page, console.live.key)
    open_member(page, "hal")
    history = page.get_by_role("region", name="History")

    expect(history_rows(page)).to_have_count(10)
    expect(history.get_by_text("Page 1 of 2 (13 in all)")).to_be_visible()
    history.get_by_role("button", name="Next").click()
    expect(history.get_by_text("Page 2 of 2 (13 in all)")).to_be_visible()
    expect(history_rows(page)).to_have_count(3)
    expect(history_rows(page).last).to_contain_text("award 1")

    history.get_by_label("Type").select_option("deduct")
    history.get_by_role("button", name="Filter").click()
    expect(history.get_by_text("Page 1 of 1 (1 in all)")).to_be_visible()
    expect(history_rows(page)).to_have_count(1)
    expect(history_rows(page).first).to_contain_text("one deduct")


def test_a_failed_webhook_delivery_is_in_the_log_and_a_retry_delivers_it(
    console: Console, tab: Tab
) -> None:
    api, page, receiver = console.live.api, tab.page, console.receiver
    receiver.plan("/hook", 500)  # the first attempt fails; later ones succeed
    endpoint = api.post(
        "/v1/webhook_endpoints",
        {"url": receiver.url + "/hook", "events": ["member.created"], "description": "CRM"},
    ).json()["data"]
    api.member("wendy")
    log = f"/v1/webhook_endpoints/{endpoint['endpoint_id']}/deliveries"

    def delivery_status() -> str | None:
        found = api.get(log).json()["data"]
        return found[0]["status"] if found else None

    wait_until(lambda: delivery_status() == "failed", timeout=10, what="the first attempt")

    sign_in(page, console.live.key)
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_role("link", name=receiver.url + "/hook").click()
    row = page.get_by_role("region", name="Delivery log").locator("tbody tr").first
    expect(row).to_contain_text("member.created")
    expect(row).to_contain_text("failed")
    expect(row).to_contain_text("500")
    screenshot(page, "webhooks")

    row.get_by_role("button", name="Retry").click()

    expect(row).to_contain_text("succeeded")  # the log reloads itself while one is pending
    assert delivery_status() == "succeeded"
    assert len(receiver.at("/hook")) == 2


def test_the_key_is_kept_in_the_tabs_session_storage_only(console: Console, tab: Tab) -> None:
    api, page, key = console.live.api, tab.page, console.live.key
    api.member("kim")
    sign_in(page, key)
    open_member(page, "kim")
    award = page.get_by_role("group", name="Award")
    award.get_by_label("Points").fill("10")
    award.get_by_label("Reason").fill("Checking where the key goes")
    award.get_by_role("button", name="Award points").click()
    expect(page.get_by_test_id("balance")).to_have_text("10")

    assert page.evaluate("() => sessionStorage.getItem('tally.apiKey')") == key
    assert key not in page.evaluate("() => JSON.stringify(localStorage)")
    assert tab.context.cookies() == []
    assert not any(key in url for url in [page.url, *tab.requests])
    assert key not in console.live.server.errors()  # the server's log

    other_tab = tab.context.new_page()  # session storage is the tab's own
    other_tab.goto("/console")
    expect(other_tab.get_by_label("API key")).to_be_visible()
    other_tab.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_a_write_whose_answer_was_lost_is_sent_again_with_the_same_idempotency_key(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("lou")
    sign_in(page, console.live.key)
    open_member(page, "lou")
    keys: list[str | None] = []

    def lose_the_first_answer(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the server makes the award...
            route.abort("connectionreset")  # ...and its answer never arrives
        else:
            route.continue_()

    page.route("**/v1/points/award", lose_the_first_answer)
    award = page.get_by_role("group", name="Award")
    award.get_by_label("Points").fill("40")
    award.get_by_label("Reason").fill("Lost in the post")
    award.get_by_role("button", name="Award points").click()
    expect(page.get_by_text("The server could not be reached")).to_be_visible()
    award.get_by_role("button", name="Award points").click()  # the same form, sent again

    expect(page.get_by_text("Awarded 40 points: the balance is now 40.")).to_be_visible()
    assert keys[0] is not None and keys == [keys[0], keys[0]]
    assert api.balance("lou")["balance"] == 40
    assert len(api.history("lou")) == 1
    tab.errors.clear()  # the lost answer, reported by the browser


def test_an_award_is_reversed_from_the_member_page_and_a_refusal_shown_in_the_apis_words(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("rex")
    first = api.award("rex", 500, reason="Order 77")["transaction_id"]
    second = api.award("rex", 200, reason="Order 78")["transaction_id"]
    sign_in(page, console.live.key)
    open_member(page, "rex")

    page.get_by_role("button", name=f"Reverse {second}").click()
    form = page.get_by_role("group", name=f"Reverse award {second}")
    form.get_by_label("Reason").fill("Order 78 returned")
    form.get_by_role("button", name="Reverse").click()

    expect(page.get_by_role("region", name="Change points").get_by_role("status")).to_have_text(
        f"Reversed award {second}: −200 points, the balance is now 500."
    )
    expect(page.get_by_test_id("balance")).to_have_text("500")
    expect(history_rows(page).first).to_contain_text("reversal")
    expect(history_rows(page).first).to_contain_text("Order 78 returned")
    expect(history_rows(page).first).to_contain_text("−200")
    # Fully reversed: the award offers no second reversal.
    expect(page.get_by_role("button", name=f"Reverse {second}")).to_have_count(0)

    assert api.deduct("rex", 450).status_code == 201  # 50 of the first award's points are left
    page.get_by_role("link", name="Members").click()
    open_member(page, "rex")
    page.get_by_role("button", name=f"Reverse {first}").click()
    form = page.get_by_role("group", name=f"Reverse award {first}")
    form.get_by_label("Reason").fill("Order 77 returned")
    form.get_by_role("button", name="Reverse").click()
    refused = form.locator("xpath=..").get_by_role("alert")
    expect(refused).to_contain_text("insufficient_points")
    expect(refused).to_contain_text("points:")  # the API's detail, naming the field

    assert api.balance("rex")["balance"] == 50
    [reversal] = api.history("rex", type="reversal")  # the refused one made nothing
    assert (reversal["reverses"], reversal["points"], reversal["reason"]) == (
        second,
        -200,
        "Order 78 returned",
    )


FLOWS = ["awarded", "deducted", "redeemed", "refunded", "expired", "transferred", "reversed"]


def report_rows(report: dict[str, object]) -> list[str]:
    """The report's table as the console should show it: one line per period."""
    periods = report["periods"]
    assert isinstance(periods, list)
    return ["\t".join([p["start"][:10], *(f"{p[flow]:,}" for flow in FLOWS)]) for p in periods]


def test_the_report_draws_the_programs_figures_from_the_api(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    key = api.key_for("reporting")  # a program of its own: the report covers all of it
    for member in ["r1", "r2"]:
        assert api.post("/v1/members", {"member_id": member}, key=key).status_code == 201
    award = {"points": 500, "reason": "Order 1"}
    assert api.post("/v1/points/award", {"member_id": "r1", **award}, key=key).status_code == 201
    second = api.post(
        "/v1/points/award", {"member_id": "r2", "points": 300, "reason": "Order 2"}, key=key
    ).json()["data"]["transaction_id"]
    deduct = {"member_id": "r1", "points": 120, "reason": "Damaged"}
    assert api.post("/v1/points/deduct", deduct, key=key).status_code == 201
    soon = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    short = {"member_id": "r2", "points": 150, "reason": "Flash sale", "expires_at": soon}
    assert api.post("/v1/points/award", short, key=key).status_code == 201
    reverse = {"points": 100, "reason": "Returned"}
    reversed_ = api.post(f"/v1/transactions/{second}/reverse", reverse, key=key)
    assert reversed_.status_code == 201

    sign_in(page, key)
    page.get_by_role("link", name="Report").click()
    today = datetime.now(UTC).date()
    by_day = api.get(
        "/v1/program/report",
        key=key,
        **{"from": str(today - timedelta(days=29)), "to": str(today), "interval": "day"},
    ).json()["data"]
    assert by_day["outstanding"]["balance"] == 730
    period = f"From {by_day['from']} to {by_day['to']}, both included, by day; UTC days."
    expect(page.get_by_text(period)).to_be_visible()
    expect(page.get_by_test_id("outstanding")).to_have_text("730")
    expect(page.get_by_test_id("members")).to_have_text("2 (2)")
    rows = page.get_by_role("region", name="Per period").locator("tbody tr")
    expect(rows).to_have_count(30)
    assert rows.all_inner_texts() == report_rows(by_day)
    assert rows.last.inner_text() == f"{today}\t950\t-120\t0\t0\t0\t0\t-100"
    outstanding = "Balance 730, Pending 0, Expiring within 30 days 150, Expiring within 60 days 150"
    expect(page.get_by_role("img", name=re.compile(outstanding))).to_be_visible()
    expect(
        page.get_by_role("img", name=re.compile("awarded 950 in all, redeemed 0 in all"))
    ).to_be_visible()
    screenshot(page, "report")

    form = page.get_by_role("form", name="Report period")
    form.get_by_label("From").fill(str(today - timedelta(days=20)))  # 21 days by ISO week
    form.get_by_label("Interval").select_option("week")
    form.get_by_role("button", name="Show").click()
    by_week = api.get(
        "/v1/program/report",
        key=key,
        **{"from": str(today - timedelta(days=20)), "to": str(today), "interval": "week"},
    ).json()["data"]
    period = f"From {by_week['from']} to {by_week['to']}, both included, by week; UTC days."
    expect(page.get_by_text(period)).to_be_visible()
    expect(rows).to_have_count(len(by_week["periods"]))
    assert rows.all_inner_texts() == report_rows(by_week)


def test_an_awards_file_is_imported_and_each_rows_result_shown(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    api.member("ivy")
    api.member("ian")
    api.award("ian", 100)
    good = (
        b"member_id,points,reason,reference\n"
        b"ivy,500,Q2 sales target,INV-1\n"
        b'ian,250,"Referral bonus, June",\n'
    )
    sign_in(page, console.live.key)
    page.get_by_role("link", name="CSV files").click()
    page.get_by_label("Awards file (CSV)").set_input_files(
        files=[{"name": "june.csv", "mimeType": "text/csv", "buffer": good}]
    )
    page.get_by_role("button", name="Import").click()

    expect(
        page.get_by_text("Imported 2 row(s): 2 awarded now, 0 already awarded by an earlier")
    ).to_be_visible()
    results = page.get_by_role("region", name="Import awards").locator("tbody tr")
    expect(results).to_have_count(2)
    transaction = re.compile(r"^txn_")
    expect(results.nth(0).locator("td")).to_have_text(["2", "ivy", "ok", transaction, ""])
    expect(results.nth(1).locator("td")).to_have_text(["3", "ian", "ok", transaction, ""])
    screenshot(page, "import")
    assert api.balance("ivy")["balance"] == 500
    assert api.balance("ian")["balance"] == 350
    assert api.history("ian")[0]["reason"] == "Referral bonus, June"

    with page.expect_download() as saved:  # the same upload replayed, answered as CSV
        page.get_by_role("button", name="Save the results (CSV)").click()
    assert saved.value.suggested_filename == "june.results.csv"
    ivy, ian = api.history("ivy")[0]["transaction_id"], api.history("ian")[0]["transaction_id"]
    assert Path(saved.value.path()).read_text().splitlines() == [
        "line,member_id,status,transaction_id,error_code,error_message",
        f"2,ivy,ok,{ivy},,",
        f"3,ian,ok,{ian},,",
    ]
    assert api.balance("ivy")["balance"] == 500

    page.get_by_role("button", name="Import").click()  # the same file again: nothing twice
    expect(page.get_by_text("2 awarded now")).to_have_count(0)
    expect(page.get_by_text("0 awarded now, 2 already awarded")).to_be_visible()
    expect(results.nth(0)).to_contain_text("replayed")
    assert api.balance("ivy")["balance"] == 500

    results.nth(0).get_by_role("link", name="ivy").click()
    expect(page.get_by_test_id("balance")).to_have_text("500")


def test_a_refused_awards_file_names_its_bad_lines_and_changes_nothing(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("bea")
    bad = (
        b"member_id,points,reason\n"
        b"bea,100,Fine row\n"
        b"nobody,100,Unknown member\n"
        b"bea,1.5,Half a point\n"
    )
    sign_in(page, console.live.key)
    page.get_by_role("link", name="CSV files").click()
    page.get_by_label("Awards file (CSV)").set_input_files(
        files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": bad}]
    )
    page.get_by_role("button", name="Import").click()

    section = page.get_by_role("region", name="Import awards")
    expect(section.get_by_role("alert")).to_contain_text("2 of 3 rows are bad; nothing was applied")
    lines = section.locator("tbody tr")
    expect(lines).to_have_count(2)
    anything = re.compile(".*")
    expect(lines.nth(0).locator("td")).to_have_text(
        ["3", "nobody", "member_not_found", anything, anything]
    )
    expect(lines.nth(1).locator("td")).to_have_text(
        ["4", "bea", "validation_error", "points", anything]
    )
    assert api.balance("bea")["balance"] == 0
    assert api.history("bea") == []
    tab.errors.clear()  # the 422, reported by the browser as a failed load


def test_a_read_key_exports_transactions_as_a_download_equal_to_the_api(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    writer, reader = api.key_for("exporting"), api.key_for("exporting", Scope.READ)
    assert api.post("/v1/members", {"member_id": "e1"}, key=writer).status_code == 201
    for points, reason in [(300, "=SUM(A1)"), (200, "Order, with a comma")]:
        body = {"member_id": "e1", "points": points, "reason": reason}
        assert api.post("/v1/points/award", body, key=writer).status_code == 201
    deduct = {"member_id": "e1", "points": 50, "reason": "Damaged"}
    assert api.post("/v1/points/deduct", deduct, key=writer).status_code == 201

    sign_in(page, reader)
    page.get_by_role("link", name="CSV files").click()
    expect(page.get_by_text("it can export, not import")).to_be_visible()
    expect(page.get_by_label("Awards file (CSV)")).to_have_count(0)
    form = page.get_by_role("form", name="Export transactions")

    with page.expect_download() as every:
        form.get_by_role("button", name="Download CSV").click()
    whole = api.get("/v1/exports/transactions", key=reader)
    assert whole.status_code == 200 and whole.text.count("\n") == 4
    assert every.value.suggested_filename == "transactions.csv"
    assert Path(every.value.path()).read_bytes() == whole.content

    today = str(datetime.now(UTC).date())
    form.get_by_label("Type").select_option("deduct")
    form.get_by_label("From").fill(today)
    form.get_by_label("To").fill(today)
    with page.expect_download() as deducts:
        form.get_by_role("button", name="Download CSV").click()
    only = api.get("/v1/exports/transactions", key=reader, type="deduct", **{"from": today})
    assert only.text.count("\n") == 2 and "Damaged" in only.text
    assert deducts.value.suggested_filename == f"transactions-deduct-from-{today}-to-{today}.csv"
    assert Path(deducts.value.path()).read_bytes() == only.content
    assert not any(reader in url for url in tab.requests)


def test_a_members_profile_is_edited_and_erased_after_a_confirmation(
    console: Console, tab: Tab
) -> None:
    api, page = console.live.api, tab.page
    api.member("pat", name="Pat Old", email="pat@old.example")
    api.award("pat", 90, metadata={"note": "personal"})
    sign_in(page, console.live.key)
    open_member(page, "pat")

    edit = page.get_by_role("group", name="Edit profile")
    expect(edit.get_by_label("Name")).to_have_value("Pat Old")
    edit.get_by_label("Name").fill("Pat New")
    edit.get_by_label("Email").fill("")  # a blank field clears it
    edit.get_by_role("button", name="Save profile").click()
    expect(page.get_by_role("status").filter(has_text="Profile saved.")).to_be_visible()
    expect(page.locator("p.profile")).to_have_text("Pat New")
    member = api.get("/v1/members/pat").json()["data"]
    assert (member["name"], member["email"]) == ("Pat New", None)

    profile = page.get_by_role("region", name="Profile")
    profile.get_by_role("button", name="Erase personal data…").click()
    expect(profile.get_by_text("for good? The balance and every ledger row stay.")).to_be_visible()
    profile.get_by_role("button", name="Keep it").click()
    expect(profile.get_by_role("button", name="Erase for good")).to_be_hidden()
    assert api.get("/v1/members/pat").json()["data"]["erased_at"] is None

    profile.get_by_role("button", name="Erase personal data…").click()
    profile.get_by_role("button", name="Erase for good").click()
    expect(page.get_by_role("status").filter(has_text="Personal data erased.")).to_be_visible()
    expect(page.get_by_text("Personal data erased on")).to_be_visible()
    expect(page.get_by_role("group", name="Edit profile")).to_have_count(0)
    expect(page.get_by_test_id("balance")).to_have_text("90")
    member = api.get("/v1/members/pat").json()["data"]
    assert member["erased_at"] is not None and member["name"] is None
    assert api.history("pat")[0]["metadata"] is None


def test_the_enrol_on_award_switch_on_the_program_page(console: Console, tab: Tab) -> None:
    api, page = console.live.api, tab.page
    key = api.key_for("enrolling")  # a program of its own: the switch is program-wide
    award = {"member_id": "newcomer", "points": 10, "reason": "First order"}
    sign_in(page, key)
    page.get_by_role("link", name="Program").click()
    setting = page.get_by_test_id("Unknown members on award")
    expect(setting).to_have_text("refused (member_not_found)")
    switch = page.get_by_label("Enrol unknown members on award")
    expect(switch).not_to_be_checked()

    switch.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Unknown members are now enrolled on award.")).to_be_visible()
    expect(setting).to_have_text("enrolled")
    assert api.get("/v1/program", key=key).json()["data"]["enrol_on_award"] is True
    assert api.post("/v1/points/award", award, key=key).status_code == 201

    page.get_by_label("Enrol unknown members on award").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Awards to unknown members are now refused.")).to_be_visible()
    expect(setting).to_have_text("refused (member_not_found)")
    other = {**award, "member_id": "stranger"}
    assert api.post("/v1/points/award", other, key=key).status_code == 404


def test_a_key_revoked_while_signed_in_is_forgotten_at_its_next_refusal(
    console: Console, tab: Tab
) -> None:
    live, page = console.live, tab.page
    created = create_key(live.store, program="acme", scope=Scope.WRITE, now=datetime.now(UTC))
    sign_in(page, created.secret)
    # The landing page's own requests are answered first: the revocation is then met by the
    # next page's, not by a request already in flight (which would sign out under the click).
    expect(page.get_by_text("Loading members…")).to_have_count(0)
    assert live.store.transact(lambda tx: tx.keys.revoke(created.key_id, now=datetime.now(UTC)))

    page.get_by_role("link", name="Rewards").click()

    expect(page.get_by_role("alert")).to_contain_text("The server refused the key")
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_a_wrong_key_is_refused_and_not_kept(console: Console, tab: Tab) -> None:
    page = tab.page
    page.goto("/console")
    page.get_by_label("API key").fill("tally_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This key was refused")
    assert page.evaluate("() => sessionStorage.length") == 0


def test_every_file_of_the_console_is_served_by_tally_under_a_strict_policy(
    console: Console,
) -> None:
    page = httpx.get(console.live.url + "/console")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert "unsafe" not in policy and "form-action 'none'" in policy
    assert "require-trusted-types-for 'script'" in policy
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for name, media_type in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
    ]:
        served = httpx.get(f"{console.live.url}/console/{name}")
        assert served.status_code == 200
        assert served.headers["content-type"] == media_type
    assert httpx.get(console.live.url + "/console/index.html.bak").status_code == 404


def test_the_package_serves_every_file_of_the_app_and_only_those() -> None:
    from tally.console.routes import FILES, STATIC

    shipped = {path.name for path in STATIC.iterdir()}
    assert shipped == {*FILES, "index.html"}
    for name in FILES:
        if name.endswith(".js"):
            # The app builds the page with DOM calls only: the policy refuses HTML strings.
            text = (STATIC / name).read_text()
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
