"""The garbage collector of a long-running hsepay process, set once its start-up is over.

Measured (`hsepay bench http --api-only`, 64 connections, gc.callbacks in the API worker): with
CPython's defaults the orders API ran a full (generation 2) collection every ~1.2 s, 70–210 ms each
at load 4–5, collecting nothing: requests in flight survive the young collections, so the old
generation fills with objects that die soon after, and each full pass walks every object the imports
and the app built as well (~150,000). Every request in flight waits out each pass: the POST p99 of
112–168 ms and max 243–288 ms were these pauses.

`gc.freeze()` moves what start-up built into the permanent generation, which no collection walks
(full passes fell to ~1 ms); a larger first threshold lets most request objects die before their
first collection, so fewer reach the old generation. Reference counting still frees every object as
before; only reference cycles among the frozen start-up objects are never collected, and start-up
builds them once.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_after_startup"]

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default: 700)."""


def settle_after_startup() -> None:
    """Collect once, freeze what start-up built, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
