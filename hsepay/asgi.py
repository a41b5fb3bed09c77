"""The app of one API worker process, built from the environment: what `hsepay serve` runs in each.

`hsepay serve SERVICE --workers N` checks the database once, then hands the port to the ASGI server
(granian), which starts N processes; each calls `application()` and builds its own engine, its own
group commit and its own logging, from the same HSEPAY_* environment as the parent.
"""

from __future__ import annotations

import os

from litestar import Litestar

from hsepay.lifetime import die_with

__all__ = ["PARENT_VARIABLE", "SERVICE_VARIABLE", "application"]

SERVICE_VARIABLE = "HSEPAY_SERVE_SERVICE"
"""Which service's API the worker builds; set by `hsepay serve` for its worker processes."""
PARENT_VARIABLE = "HSEPAY_SERVE_PID"
"""The pid of the `hsepay serve` process whose workers these are."""


def application() -> Litestar:
    parent = os.environ.get(PARENT_VARIABLE)
    if parent:
        die_with(int(parent))  # a kill -9 of `hsepay serve` takes its workers with it (hsepay.lifetime)
    from hsepay import registry
    from hsepay.bootstrap import build_unchecked
    from hsepay.config import get_settings
    from hsepay.observability import logs, tracing

    observability = logs.settings_or_defaults()
    logs.configure(observability.log_level, observability.log_format)
    tracing.enable_from(observability)
    spec = registry.get(os.environ[SERVICE_VARIABLE])
    app = build_unchecked(get_settings(), (spec,), apps=True)[spec.name].app
    assert app is not None
    return app
