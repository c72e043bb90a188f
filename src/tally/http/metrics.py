"""`GET /metrics`: what one app has served, in Prometheus text format (api.md section 11).

Each app has a registry of its own (prometheus-client's `CollectorRegistry`, never the global
one), so two apps in one test process never mix their counts; with `--workers N` each worker
process has its own and a scraper sees one worker per scrape. Requests are counted in plain
Python (a dict lookup and three additions on the event loop's thread) and only turned into
metric families when scraped. Labels are the route's template, the method and the status:
never a raw path, so no program or member id is ever a label. The middleware that times each
request is `observability.py`; what the rate limiter refuses is counted here through
`rate_limited`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tally.delivery.dispatcher import DeliveryStats

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histogram's buckets; one more for anything above."""

_LE = [f"{bound:g}" for bound in BOUNDS]


def cause_of(error: BaseException) -> str:
    """The class of the error underneath an `Unavailable` (a driver's, or the lock `Conflict`
    whose retries ran out), for the `cause` label: a handful of class names, never a message."""
    under = error.__cause__ or error.__context__
    return type(under).__name__ if under is not None else "none"


class _Series:
    """The requests of one (method, route, status): how many fell in each bucket, and their
    total time."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0.0


class Metrics:
    """The metrics of one app, and the registry `/metrics` renders."""

    def __init__(self, store: Any, *, deliveries: DeliveryStats | None = None) -> None:
        self.deliveries = deliveries or DeliveryStats()
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._unavailable: dict[str, int] = {}
        self._rate_limited: dict[str, int] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_Collected(self, store))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request answered: its route template (never its path), status and duration."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.counts[bisect_left(BOUNDS, seconds)] += 1
        series.total += seconds

    def unavailable(self, cause: str) -> None:
        """A 503: the database was busy or unreachable; `cause` is the driver error's class."""
        self._unavailable[cause] = self._unavailable.get(cause, 0) + 1

    def rate_limited(self, policy: str) -> None:
        """A 429 of the rate limiter, by the policy that refused it."""
        self._rate_limited[policy] = self._rate_limited.get(policy, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collected(Collector):
    """Turns the counts above, and the store's own counters, into metric families."""

    def __init__(self, metrics: Metrics, store: Any) -> None:
        self._metrics = metrics
        self._store = store

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "tally_http_requests", "Requests answered, by route template and status.", labels=labels
        )
        latency = HistogramMetricFamily(
            "tally_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            labels=labels,
        )
        for key, series in list(m._series.items()):
            running, buckets = 0, []
            for le, count in zip([*_LE, "+Inf"], series.counts, strict=True):
                running += count
                buckets.append((le, float(running)))
            method, route, status = key
            requests.add_metric([method, route, str(status)], float(running))
            latency.add_metric([method, route, str(status)], buckets, sum_value=series.total)
        yield requests
        yield latency
        unavailable = CounterMetricFamily(
            "tally_database_unavailable",
            "Answers 503 because the database was busy, unreachable or not migrated, by the "
            "class of the error underneath.",
            labels=["cause"],
        )
        for cause, count in list(m._unavailable.items()):
            unavailable.add_metric([cause], float(count))
        yield unavailable
        limited = CounterMetricFamily(
            "tally_rate_limited", "Requests refused 429 by the rate limiter.", labels=["policy"]
        )
        for policy, count in list(m._rate_limited.items()):
            limited.add_metric([policy], float(count))
        yield limited
        yield from self._webhooks()
        yield from self._group_commits()

    def _webhooks(self) -> Iterator[Metric]:
        """This process's dispatcher: attempts by outcome, and how long the oldest pending
        delivery's event has waited (over every endpoint; refreshed about once a second)."""
        stats = self._metrics.deliveries
        outcomes = CounterMetricFamily(
            "tally_webhook_deliveries",
            "Webhook delivery attempts made by this process, by outcome (succeeded; retried: "
            "failed and scheduled again; failed: given up or the endpoint is gone).",
            labels=["outcome"],
        )
        for outcome in ("succeeded", "retried", "failed"):
            outcomes.add_metric([outcome], float(stats.outcomes[outcome]))
        yield outcomes
        yield GaugeMetricFamily(
            "tally_webhook_oldest_pending_seconds",
            "Age of the event of the oldest delivery not yet made (0 when none is pending).",
            value=stats.oldest_pending_age or 0.0,
        )

    def _group_commits(self) -> Iterator[Metric]:
        """SQLite's group commit, read from the store's own counters (PostgreSQL commits each
        write by itself and has none): the average batch is writes / commits."""
        commits = getattr(self._store, "commits", None)
        writes = getattr(self._store, "committed_jobs", None)
        if not isinstance(commits, int) or not isinstance(writes, int):
            return
        yield CounterMetricFamily(
            "tally_sqlite_group_commits", "Group commits made (one fsync each).", value=commits
        )
        yield CounterMetricFamily(
            "tally_sqlite_group_committed_writes",
            "Writes those group commits carried (their rate over the commits' is the batch size).",
            value=writes,
        )
