"""A child process that dies with its parent, even when the parent is killed with SIGKILL (Linux).

Without it a `kill -9` of `hsepay serve` or `hsepay broker` (an operator, the OOM killer, `hsepay
chaos`) leaves the API workers or the Tansu broker running as orphans: still bound to the port,
still answering, supervised by no one. Seen in CI: every kill of an API role left one behind.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with", "preexec_dying_with"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with(parent: int) -> None:
    """Ask Linux to SIGKILL this process when `parent` dies; exit now if it already has."""
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def preexec_dying_with(parent: int) -> Callable[[], None] | None:
    """`die_with(parent)` as a subprocess `preexec_fn` (None where it is not available). prctl is
    looked up here, in the parent: the child between fork and exec should not load libraries."""
    if _prctl() is None:
        return None
    return functools.partial(die_with, parent)
