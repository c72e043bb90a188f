"""`create_app`: the ASGI application (its router built from the route table, its exception
handlers, its middleware, the background sweep) and `app_from_env`, the factory `tally serve`
runs.

Every error is answered here, once, with the error table of `errors.py`. The routes themselves
are in `routes/`, what they read and send in `inputs.py` and `outputs.py`, the OpenAPI document
in `openapi.py`; the middleware each in its module (`security.py`, `observability.py`,
`limits.py`), stacked here, outermost first:

    SecurityHeaders -> Observability -> Starlette's error middleware (a bug's 500)
      -> CORS (when configured) -> RateLimits (when on) -> Starlette's exception handlers
      -> the router
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tally.commands import Clock
from tally.config import Settings
from tally.console.routes import console_routes
from tally.delivery.dispatcher import DeliveryStats, Dispatcher
from tally.delivery.sender import Sender
from tally.errors import MethodNotAllowed, NotFound, TallyError
from tally.http.docs import docs_routes
from tally.http.errors import error_response
from tally.http.limits import HeaderLimits, RateLimits
from tally.http.metrics import Metrics, cause_of
from tally.http.observability import Observability, configure_logging
from tally.http.openapi import openapi_document
from tally.http.outputs import encode, json_response
from tally.http.routes import ROUTES, starlette_routes
from tally.http.security import SecurityHeaders, cors_middleware
from tally.http.tuning import tune_collector_for_serving
from tally.keys import KeyCache
from tally.ports import Store
from tally.service import Ledger, WebhookPolicy, system_clock

log = logging.getLogger("tally")


async def _tally_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TallyError)
    if exc.code == "unavailable":
        metrics: Metrics = request.app.state.metrics
        metrics.unavailable(cause_of(exc))
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed here."))
    return error_response(NotFound(f"There is no route {request.method} {request.url.path}."))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its request id by `Observability`, which sees it raised on after this.
    return error_response(TallyError("Something went wrong on our side; nothing was changed."))


def create_app(
    store: Store,
    *,
    settings: Settings | None = None,
    clock: Clock = system_clock,
    monotonic: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The Tally API over `store`; with `settings.sweep_interval > 0` it also sweeps on its own,
    and with `settings.webhooks_poll_seconds > 0` it delivers webhooks (`tally.delivery`).

    `clock` is the ledger's time; `monotonic` the rate limiter's (tests move both)."""
    settings = settings or Settings()
    policy = WebhookPolicy(
        allow_private=settings.webhooks_allow_private,
        schedule=settings.webhooks_retry_schedule,
        retention=timedelta(days=settings.events_retention_days),
    )
    ledger = Ledger(
        store, clock=clock, key_cache=KeyCache(ttl=settings.key_cache_seconds), webhooks=policy
    )
    deliveries = DeliveryStats()
    metrics = Metrics(store, deliveries=deliveries)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = None
        if settings.sweep_interval > 0:
            sweeper = asyncio.create_task(_sweep_forever(ledger, settings.sweep_interval))
        dispatcher = sender = None
        if settings.webhooks_poll_seconds > 0:
            # Every worker process runs one: claims are leased (and skip each other's rows on
            # PostgreSQL), so each attempt is still made by one of them.
            sender = Sender(
                timeout=settings.webhooks_timeout_seconds,
                allow_private=settings.webhooks_allow_private,
            )
            dispatcher = asyncio.create_task(
                Dispatcher(
                    ledger.webhooks,
                    sender,
                    poll_seconds=settings.webhooks_poll_seconds,
                    stats=deliveries,
                ).run()
            )
        try:
            yield
        finally:
            if dispatcher is not None and sender is not None:
                dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher
                await sender.aclose()
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            await store.aclose()
            store.close()

    document: dict[str, Any] = openapi_document(ROUTES)

    async def openapi(request: Request) -> Response:
        return json_response(encode(document))

    routes = starlette_routes(ROUTES)
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        *docs_routes(),
        *console_routes(),
    ]
    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            TallyError: _tally_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        middleware=[
            Middleware(HeaderLimits),
            *cors_middleware(settings.cors_origins),
            *_rate_limits(settings, monotonic, metrics),
        ],
        outer=[
            Middleware(SecurityHeaders),
            Middleware(Observability, metrics=metrics, routes=routes),
        ],
    )
    app.state.ledger = ledger
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.store = store
    return app


def _rate_limits(
    settings: Settings, monotonic: Callable[[], float], metrics: Metrics
) -> list[Middleware]:
    if settings.rate_limit is None and settings.failed_auth_limit is None:
        return []
    limits = Middleware(
        RateLimits,
        per_key=settings.rate_limit,
        failed_auth=settings.failed_auth_limit,
        clock=monotonic,
        refused=metrics.rate_limited,
    )
    return [limits]


class _App(Starlette):
    """Starlette with middleware outside its own error middleware as well.

    Starlette answers a bug (the `Exception` handler) from its outermost layer, so middleware
    given to it the usual way never sees that 500. `outer` wraps the whole stack instead: the
    security headers and the request id go on every answer, the 500 included, and the bug is
    logged with its request id.
    """

    def __init__(self, *, outer: list[Middleware], **options: Any) -> None:
        super().__init__(**options)
        self._outer = outer

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, args, kwargs in reversed(self._outer):
            app = cls(app, *args, **kwargs)
        return app


async def _sweep_forever(ledger: Ledger, interval: float) -> None:
    """Mature and expire on time even when nobody reads the member."""
    while True:
        await asyncio.sleep(interval)
        try:
            await ledger.lifecycle.sweep()
        except Exception:
            log.exception("background sweep failed; will try again")


def app_from_env() -> Starlette:
    """The factory `tally serve` hands to uvicorn (one call per worker process)."""
    from tally.storage import open_store

    settings = Settings.from_env()
    configure_logging()
    app = create_app(open_store(settings.database_url), settings=settings)
    tune_collector_for_serving()
    return app
