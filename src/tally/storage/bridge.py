"""Running the synchronous `Tx` code on the event loop, over asyncio database calls.

Driver calls from many threads make every statement wait for the GIL behind a busy event loop.
Here the unit of work runs in a greenlet instead: each time it needs the database it hands the
awaitable to the event loop and is resumed with the result, so the loop never blocks and no
thread is involved. (SQLAlchemy's asyncio support works the same way.)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")
# A call's result and None, or None and the error it raised (`run_side_by_side`).
Outcome = tuple[Any, BaseException | None]


async def run_in_greenlet(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)`; whenever it calls `wait_for`, await that on this event loop."""
    child = greenlet.greenlet(fn)
    request = child.switch(*args)
    while not child.dead:
        try:
            value = await request
        except BaseException as error:  # the work sees the error where it awaited
            request = child.throw(error)
        else:
            request = child.switch(value)
    result: T = request
    return result


def wait_for(awaitable: Awaitable[T]) -> T:
    """From inside `run_in_greenlet`: the result of `awaitable`, awaited by the event loop."""
    parent = greenlet.getcurrent().parent
    if parent is None:
        raise RuntimeError("wait_for() called outside run_in_greenlet()")
    result: T = parent.switch(awaitable)
    return result


async def run_side_by_side(calls: Sequence[Callable[[], Any]]) -> list[Outcome]:
    """Run the calls at once, each in a greenlet of its own, in steps: each runs until it waits
    (`wait_for`) or ends; then what they wait for is awaited, one after the other, and each is
    resumed with its answer. Made for calls whose waits are round trips on one shared
    connection: the first await sends what all of them queued, and one round trip answers
    them all.

    Returns each call's outcome: `(result, None)`, or `(None, error)` if it raised. An error
    from an awaited request (the shared round trip failed) is raised here, for all of them: the
    calls still waiting are abandoned."""
    children = [greenlet.greenlet(call) for call in calls]
    outcomes: list[Outcome] = [(None, None)] * len(calls)
    waiting: list[tuple[int, Awaitable[Any]]] = []

    def step(index: int, *answer: Any) -> None:
        child = children[index]
        try:
            request = child.switch(*answer)
        except BaseException as error:  # noqa: BLE001 - the call's own, handed back
            outcomes[index] = (None, error)
            return
        if child.dead:
            outcomes[index] = (request, None)
        else:
            waiting.append((index, request))

    for index in range(len(children)):
        step(index)
    while waiting:
        turn, waiting = waiting, []
        answers: list[Any] = []
        try:
            for _, request in turn:
                answers.append(await request)
        except BaseException:
            for _, request in turn[len(answers) + 1 :]:
                if inspect.iscoroutine(request):
                    request.close()  # never to be awaited
            raise
        for (index, _), answer in zip(turn, answers, strict=True):
            step(index, answer)
    return outcomes
