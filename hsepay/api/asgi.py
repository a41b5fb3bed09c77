"""The app of one API worker process, built from the environment: what `hsepay serve` runs in each.

`hsepay serve SERVICE --workers N` checks the database once, then hands the port to the ASGI server
(granian), which starts N processes; each calls `application()` and builds its own engine, its own
group commit and its own logging, from the same HSEPAY_* environment as the parent.
"""

from __future__ import annotations

import os
import signal
import sys

from litestar import Litestar

__all__ = ["PARENT_VARIABLE", "SERVICE_VARIABLE", "application"]

SERVICE_VARIABLE = "HSEPAY_SERVE_SERVICE"
"""Which service's API the worker builds; set by `hsepay serve` for its worker processes."""
PARENT_VARIABLE = "HSEPAY_SERVE_PID"
"""The pid of the `hsepay serve` process whose workers these are."""

_PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:
    """Ask Linux to end this worker when `hsepay serve` dies, even by SIGKILL.

    Without it a `kill -9` of `hsepay serve` (an operator, the OOM killer, `hsepay chaos`) leaves
    its workers running as orphans: still bound to the port, still answering, supervised by no one.
    Seen in CI: every kill of an API role left one such process behind.
    """
    parent = os.environ.get(PARENT_VARIABLE)
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent):  # it died before the request took effect
        os._exit(1)


def application() -> Litestar:
    _end_with_parent()
    from hsepay import registry
    from hsepay.bootstrap import Runtime
    from hsepay.config import get_settings
    from hsepay.observability import logs, tracing

    observability = logs.settings_or_defaults()
    logs.configure(observability.log_level, observability.log_format)
    tracing.enable_from(observability)
    spec = registry.get(os.environ[SERVICE_VARIABLE])
    rt = Runtime.from_settings(get_settings(), (spec,) if spec.database is not None else ())
    return spec.create_app(rt)
