"""The webhook rules as tables: the retry schedule, filters, URLs, signing secrets, the 5-day
rule, which addresses the SSRF guard refuses, and the signature itself against the
`standardwebhooks` package."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from tally.delivery import signing
from tally.delivery.addresses import refusal
from tally.delivery.sender import pinned, retry_after
from tally.domain import WebhookEndpoint
from tally.errors import ValidationFailed
from tally.rules import webhooks as rules
from tally.service.outbox import EVENT_TYPES

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCHEDULE = rules.DEFAULT_SCHEDULE


@pytest.mark.parametrize(
    ("attempts", "jitter", "retry_after", "expected"),
    [
        (0, 0.0, None, 0.0),  # the first attempt: at once
        (1, 0.0, None, 5.0),
        (2, 0.0, None, 300.0),
        (1, 0.999, None, 5.0 * 1.1998),  # jitter stretches by up to a fifth
        (9, 0.5, None, 86_400 * 1.1),
        (1, 0.0, 120.0, 120.0),  # Retry-After later than the schedule wins
        (2, 0.0, 10.0, 300.0),  # but never brings an attempt earlier
        (1, 0.0, 10 * 86_400.0, rules.RETRY_AFTER_CAP),  # and is capped
        (10, 0.0, None, None),  # ten attempts made: the schedule is exhausted
    ],
)
def test_the_next_attempt_follows_the_schedule_with_jitter_and_retry_after(
    attempts: int, jitter: float, retry_after: float | None, expected: float | None
) -> None:
    at = rules.next_attempt_at(SCHEDULE, attempts, NOW, jitter=jitter, retry_after=retry_after)
    if expected is None:
        assert at is None
    else:
        assert at is not None
        assert (at - NOW).total_seconds() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0,1,1,2", (0.0, 1.0, 1.0, 2.0)), (" 0.5 ", (0.5,)), ("", None), ("1,x", None), ("-1", None)],
)
def test_a_retry_schedule_is_comma_separated_seconds(
    text: str, expected: tuple[float, ...] | None
) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="TALLY_WEBHOOKS_RETRY_SCHEDULE"):
            rules.parse_schedule(text)
    else:
        assert rules.parse_schedule(text) == expected


@pytest.mark.parametrize(
    ("subscribed", "event_type", "takes"),
    [
        (("*",), "member.created", True),
        (("transaction.created",), "transaction.created", True),
        (("transaction.created",), "member.created", False),
        (("reward.created", "reward.updated"), "reward.updated", True),
    ],
)
def test_an_endpoint_takes_the_types_it_subscribed_to(
    subscribed: tuple[str, ...], event_type: str, takes: bool
) -> None:
    assert rules.takes(subscribed, event_type) is takes


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (["*"], ("*",)),
        (["member.created", "member.created"], ("member.created",)),
        ([], None),
        (["member.exploded"], None),
        (["*", "member.created"], None),
    ],
)
def test_an_event_filter_lists_known_types_or_star(
    events: list[str], expected: tuple[str, ...] | None
) -> None:
    if expected is None:
        with pytest.raises(ValidationFailed) as refused:
            rules.checked_events(events, known=EVENT_TYPES)
        assert refused.value.details[0].field == "events"
    else:
        assert rules.checked_events(events, known=EVENT_TYPES) == expected


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/tally", True),
        ("http://hooks.example.com:8080/x?y=1", True),
        ("ftp://hooks.example.com/", False),
        ("https:///path-only", False),
        ("hooks.example.com/tally", False),
        ("https://hooks.example.com:0/", False),
        ("https://hooks.example.com:99999/", False),
        ("https://hooks.example.com/a b", False),
        ("https://example.com/" + "a" * 2048, False),
    ],
)
def test_an_endpoint_url_is_http_or_https_with_a_host(url: str, ok: bool) -> None:
    if ok:
        assert rules.checked_url(url) == url
    else:
        with pytest.raises(ValidationFailed) as refused:
            rules.checked_url(url)
        assert refused.value.details[0].field == "url"


ENDPOINT = WebhookEndpoint(
    id="we_1",
    program_id=1,
    url="https://hooks.example.com/",
    events=("*",),
    description=None,
    enabled=True,
    secret="whsec_new",
    previous_secret="whsec_old",
    previous_secret_expires_at=NOW + timedelta(hours=24),
    cursor=(-1, -1),
    failing_since=None,
    created_at=NOW,
    updated_at=NOW,
)


@pytest.mark.parametrize(
    ("at", "secrets"),
    [
        (NOW, ["whsec_new", "whsec_old"]),
        (NOW + timedelta(hours=23, minutes=59), ["whsec_new", "whsec_old"]),
        (NOW + timedelta(hours=24), ["whsec_new"]),
    ],
)
def test_both_secrets_sign_for_24_hours_after_a_rotation(at: datetime, secrets: list[str]) -> None:
    assert rules.signing_secrets(ENDPOINT, at) == secrets
    never_rotated = replace(ENDPOINT, previous_secret=None, previous_secret_expires_at=None)
    assert rules.signing_secrets(never_rotated, at) == ["whsec_new"]


@pytest.mark.parametrize(
    ("failing_for", "disabled"),
    [(None, False), (timedelta(days=4, hours=23), False), (timedelta(days=5), True)],
)
def test_an_endpoint_failing_for_five_days_is_disabled(
    failing_for: timedelta | None, disabled: bool
) -> None:
    since = None if failing_for is None else NOW - failing_for
    assert rules.failed_too_long(since, NOW) is disabled
    assert rules.failing_since_after_failure(since, NOW) == (since or NOW)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "private"),  # reserved, and counted private by Python
        ("100.64.0.1", "not global"),
    ],
)
def test_the_guard_refuses_every_address_that_is_not_public(address: str, why: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == why


def test_a_signature_is_the_one_the_standard_webhooks_library_makes() -> None:
    secret = signing.new_secret()
    body = '{"event_id":"evt_1","type":"member.created"}'
    made = signing.headers([secret], msg_id="evt_1", now=NOW, body=body)
    assert made["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert made["webhook-signature"] == Webhook(secret).sign("evt_1", NOW, body)
    both = signing.headers([secret, ENDPOINT_SECRET], msg_id="evt_1", now=NOW, body=body)
    assert both["webhook-signature"].split(" ") == [
        Webhook(secret).sign("evt_1", NOW, body),
        Webhook(ENDPOINT_SECRET).sign("evt_1", NOW, body),
    ]


ENDPOINT_SECRET = signing.new_secret()


@pytest.mark.parametrize(
    ("url", "address", "expected"),
    [
        (
            "https://hooks.example.com/tally?x=1",
            "93.184.215.14",
            ("https://93.184.215.14/tally?x=1", "hooks.example.com", "hooks.example.com"),
        ),
        (
            "http://hooks.example.com:8080/t",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            (
                "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8080/t",
                "hooks.example.com:8080",
                None,
            ),
        ),
        (
            "https://user:pw@hooks.example.com/t",
            "93.184.215.14",
            ("https://user:pw@93.184.215.14/t", "hooks.example.com", "hooks.example.com"),
        ),
    ],
)
def test_a_request_goes_to_the_address_checked_with_the_host_for_http_and_tls(
    url: str, address: str, expected: tuple[str, str, str | None]
) -> None:
    route = pinned(url, address)
    assert (route.url, route.host_header, route.server_name) == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        ("soon", None),
        ("Mon, 01 Jun 2026 12:02:00 GMT", 120.0),
        ("Mon, 01 Jun 2026 11:00:00 GMT", 0.0),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, now=NOW) == seconds
