"""Chaos runs: hsepay's roles as processes under order load while faults are injected, then a verdict.

`hsepay chaos` runs one from the command line (`run.run_chaos`, with a plan of `faults`);
`tests/chaos` and `tests/integration/test_faults.py` run fixed plans in CI. docs/RELIABILITY.md
lists every fault and every invariant checked.

Kept free of imports, like hsepay/bench: `hsepay --help` reads the fault kinds from `faults` and
should not load the harness (httpx, SQLAlchemy) to do so. Callers import the modules they need.
"""
