"""What a database promises an acknowledged write on failover, from what the primary reports (issue 22)."""

from __future__ import annotations

import pytest

from hsepay.replication import Promise, Standby


def _promise(commit="on", names="", standbys=(), recovering=False) -> Promise:
    return Promise("10.0.0.1:5432", recovering, commit, names, list(standbys))


SYNC = Standby("pg1", "streaming", "sync", 0)
ASYNC = Standby("pg2", "streaming", "async", 3_000_000)
POTENTIAL = Standby("pg2", "streaming", "potential", 0)
HIDDEN = Standby("pg1", None, None, None)


@pytest.mark.parametrize(
    "promise, kind, at_risk",
    [
        (_promise(names="pg1", standbys=[SYNC, ASYNC]), "synchronous", False),
        (
            _promise(
                commit="remote_apply", names="ANY 1 (pg1, pg2)", standbys=[Standby("pg1", "streaming", "quorum", 0)]
            ),
            "synchronous",
            False,
        ),
        # Patroni's synchronous_mode (not strict) empties synchronous_standby_names when no standby can be synchronous
        (_promise(names="", standbys=[ASYNC]), "asynchronous", True),
        (_promise(names="pg1", standbys=[POTENTIAL]), "asynchronous", True),
        # a synchronous standby that the commits do not wait for
        (_promise(commit="local", names="pg1", standbys=[SYNC]), "asynchronous", True),
        (_promise(), "none", False),
        (_promise(commit="off"), "none", True),
        (_promise(names="pg1", standbys=[HIDDEN]), "unknown", True),
        (_promise(names="", standbys=[HIDDEN]), "asynchronous", True),
        (_promise(recovering=True), "standby", True),
    ],
)
def test_the_kind_of_promise_and_whether_an_acknowledged_write_is_at_risk(promise, kind, at_risk):
    assert promise.kind == kind
    assert promise.can_lose_acknowledged_writes is at_risk
    line = promise.describe("orders")
    assert line.startswith("orders database at 10.0.0.1:5432")
    assert ("FAILOVER CAN LOSE" in line) == (kind == "asynchronous")


def test_strict_synchronous_mode_without_a_standby_says_commits_wait():
    line = _promise(names="*").describe("payments")
    assert "no standby connected: commits wait" in line


def test_the_json_carries_every_standby():
    body = _promise(names="pg1", standbys=[SYNC, ASYNC]).to_json()
    assert body["kind"] == "synchronous" and body["can_lose_acknowledged_writes"] is False
    assert [s["sync_state"] for s in body["standbys"]] == ["sync", "async"]
