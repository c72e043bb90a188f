"""Running the synchronous `Tx` code on the event loop, over asyncio database calls.

Driver calls from many threads make every statement wait for the GIL behind a busy event loop.
Here the unit of work runs in a greenlet instead: each time it needs the database it hands the
awaitable to the event loop and is resumed with the result, so the loop never blocks and no
thread is involved. (SQLAlchemy's asyncio support works the same way.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


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
