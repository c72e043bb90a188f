"""Schemathesis against the `/openapi.json` of a real `tally serve`, on every backend.

Every operation of the document gets generated requests, schema-valid and schema-breaking, with
a valid write key; some are aimed at objects that exist (a member with points, a pending award,
a reward, a redemption) so they reach the ledger, not only the validators. Every answer must be
no server error (no 5xx), a status the operation documents, the documented content type, a body
matching the documented schema and documented headers. Afterwards `tally verify` must find the
ledger whole.

Generation is derandomized (the same cases on every run) and not shrunk: every distinct failure
of the run is collected and reported with a curl command that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tally.http.routes import ROUTES
from tally.maintenance import run_async
from tally.service import Ledger
from tests.support import Api, Live, serving, verified

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 50
SOAK_EXAMPLES_PER_OPERATION = 400  # `pytest -m soak` (TALLY_SOAK=1): ~2 min a backend


@dataclass(frozen=True)
class Seeded:
    """Objects that exist, so some generated requests reach them."""

    member: str
    posted: str
    pending: str
    reward: str
    redemption: str
    endpoint: str
    delivery: str

    def path_ids(self) -> dict[str, list[str]]:
        return {
            "endpoint_id": [self.endpoint],
            "delivery_id": [self.delivery],
            "member_id": [self.member],
            "transaction_id": [self.posted, self.pending],
            "reward_id": [self.reward],
            "redemption_id": [self.redemption],
        }


def seed(api: Api) -> Seeded:
    hook = api.post("/v1/webhook_endpoints", {"url": "https://8.8.8.8/hook"})
    assert hook.status_code == 201, hook.text
    endpoint_id = hook.json()["data"]["endpoint_id"]
    api.member("m")
    posted = api.award("m", 10_000_000)["transaction_id"]
    pending = api.award("m", 40, available_at="2999-01-01T00:00:00Z")["transaction_id"]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10, "stock": 100_000})
    assert reward.status_code == 201, reward.text
    reward_id = reward.json()["data"]["reward_id"]
    redemption = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward_id})
    assert redemption.status_code == 201, redemption.text
    # The endpoint's deliveries, made as a dispatcher makes them (the server runs none here).
    run_async(api.store, Ledger(api.store).webhooks.fan_out)
    found = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries")
    delivery_id = found.json()["data"][0]["delivery_id"]
    redemption_id = redemption.json()["data"]["redemption_id"]
    return Seeded("m", posted, pending, reward_id, redemption_id, endpoint_id, delivery_id)


def aim_body(seeded: Seeded) -> Callable[[tuple[Case, bool]], Case]:
    """A case whose body names the seeded member and reward (when `aimed` and it names any)."""

    def aimed(pair: tuple[Case, bool]) -> Case:
        case, aimed = pair
        bodies = [case.body] if isinstance(case.body, dict) else []
        if bodies and isinstance(bodies[0].get("awards"), list):
            bodies += [item for item in bodies[0]["awards"] if isinstance(item, dict)]
        if aimed:
            for body in bodies:
                if "member_id" in body:
                    body["member_id"] = seeded.member
                if "reward_id" in body:
                    body["reward_id"] = seeded.reward
        return case

    return aimed


def cases(operation: Any, seeded: Seeded, key: str) -> st.SearchStrategy[Case]:
    """Generated cases of `operation`, valid and not, some aimed at the seeded objects."""
    auth = {"Authorization": f"Bearer {key}"}
    names = [p.name for p in operation.path_parameters]
    choices = seeded.path_ids()
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE, headers=auth),
        operation.as_strategy(GenerationMode.NEGATIVE, headers=auth),
    ]
    strategies += [
        operation.as_strategy(GenerationMode.POSITIVE, headers=auth, path_parameters={name: value})
        for name in names
        for value in choices[name]
    ]
    return st.tuples(st.one_of(strategies), st.booleans()).map(aim_body(seeded))


@dataclass
class Run:
    """What one run did: cases sent per operation, and each distinct failure with its curl."""

    cases: dict[str, int]
    failures: dict[tuple[str | None, str, str], str]
    successes: int = 0

    def record(self, group: FailureGroup, case: Case, key: str) -> None:
        for failure in group.exceptions:
            assert isinstance(failure, Failure)
            first_line = failure.message.splitlines()[0] if failure.message else ""
            found = (failure.operation, failure.title, first_line)
            if found not in self.failures:
                curl = case.as_curl_command().replace(key, "$KEY")
                self.failures[found] = f"{failure}\n    {curl}"


def fuzz(live: Live, seeded: Seeded, *, examples: int) -> Run:
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    run = Run(cases={}, failures={})
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(operation, seeded, live.key))
        def send(case: Case) -> None:
            run.cases[label] = run.cases.get(label, 0) + 1  # noqa: B023 (called right here)
            response = case.call(base_url=live.url, session=session, timeout=60)
            run.successes += response.status_code < 300
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as group:
                run.record(group, case, live.key)  # noqa: B023

        send()
    return run


def fuzz_and_check(database_url: str, capsys: pytest.CaptureFixture[str], examples: int) -> None:
    # No dispatcher: a generated endpoint on a public address must not be sent anything.
    with serving(database_url, TALLY_WEBHOOKS_POLL_SECONDS="0") as live:
        seeded = seed(live.api)
        run = fuzz(live, seeded, examples=examples)
    total = sum(run.cases.values())
    with capsys.disabled():
        print(
            f"\nschemathesis: {total} cases ({run.successes} answered 2xx)"
            f" over {len(run.cases)} operations",
            end=" ",
        )
    documented = {f"{r.method} {r.path}" for r in ROUTES}
    assert set(run.cases) == documented, "every route of the table must be in /openapi.json"
    assert min(run.cases.values()) >= 1
    assert run.failures == {}, "\n\n".join(run.failures.values())
    verified(database_url)


def test_every_operation_answers_as_documented_under_generated_requests(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzz_and_check(database_url, capsys, EXAMPLES_PER_OPERATION)


@pytest.mark.soak
def test_every_operation_answers_as_documented_under_many_generated_requests(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzz_and_check(database_url, capsys, SOAK_EXAMPLES_PER_OPERATION)
