"""Chaos runs: hsepay's roles as processes under order load while faults are injected, then a verdict.

`hsepay chaos` runs one from the command line; `tests/chaos` and `tests/integration/test_faults.py`
run fixed plans in CI. docs/RELIABILITY.md lists every fault and every invariant checked.
"""

from hsepay.chaos.faults import (
    CommandPostgres,
    EmbeddedPostgres,
    EmbeddedTansu,
    Fault,
    KraftScripts,
    random_plan,
)
from hsepay.chaos.run import ChaosReport, ChaosSetup, run_chaos

__all__ = [
    "ChaosReport",
    "ChaosSetup",
    "CommandPostgres",
    "EmbeddedPostgres",
    "EmbeddedTansu",
    "Fault",
    "KraftScripts",
    "random_plan",
    "run_chaos",
]
