"""How a `tally serve` process sets up Python itself (the bench's references do the same).

Nothing here is about HTTP; it lives here because only the serving process uses it.
"""

from __future__ import annotations

import gc


def tune_collector_for_serving() -> None:
    """Keep Python's cycle collector from pausing a serving process for milliseconds.

    Called once the app is built: what exists then (modules, routes, the app) is collected one
    last time and frozen out of the collector's passes, and young objects are looked at every
    50,000 allocations instead of every 700. The older generations keep their default ratios
    (a full pass every 100 young ones); with startup frozen, a full pass only visits what was
    made since. Reference counting still frees at once everything that is not in a cycle.
    Measured in bench/README.md ("Findings", 8). Tests and other CLI commands keep Python's
    defaults.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000)
