"""The soak's arithmetic: slopes, what counts as flat, restarted processes, and the fault schedule."""

from __future__ import annotations

from hsepay.chaos.resources import FLAT_LIMITS, flatness, longest_segment, slope
from hsepay.chaos.soak import periodic_plan


def test_slope_of_a_line_and_of_noise_around_a_level():
    assert slope([(t, 3 * t + 1) for t in range(10)]) == 3
    assert abs(slope([(t, 100 + (1 if t % 2 else -1)) for t in range(100)])) < 0.05
    assert slope([(5, 1)]) == 0


def test_a_leak_is_not_flat_and_a_level_is():
    leaking = {"rss_mb:api-orders": [(t * 60.0, 100 + t * 2.0) for t in range(60)]}  # 2 MB a minute
    level = {"fds:api-orders": [(t * 60.0, 40 + (t % 3)) for t in range(60)]}
    assert flatness(leaking)["rss_mb:api-orders"]["flat"] is False
    assert flatness(leaking)["rss_mb:api-orders"]["per_hour"] == 120
    assert flatness(level)["fds:api-orders"]["flat"] is True
    assert set(FLAT_LIMITS) == {"rss_mb", "fds", "db_connections", "consumer_lag"}


def test_a_restarted_role_is_judged_on_its_longest_lived_process():
    # killed at 120 s: the new process grows back from 60 MB, then stays level
    points = [(t * 10.0, 100.0) for t in range(12)] + [(120 + t * 10.0, min(60 + t * 10.0, 100.0)) for t in range(30)]
    pids = [1] * 12 + [2] * 30
    assert longest_segment(points, pids) == points[12:]
    assert flatness({"rss_mb:relay": points}, {"rss_mb:relay": pids})["rss_mb:relay"]["flat"] is True


def test_periodic_plan_spaces_faults_and_uses_every_kind_once_per_round():
    plan = periodic_plan(7, 200, 30, roles=["consume-orders"], kinds=["kill-role", "net-silent", "pg-restart"])
    assert [f.at for f in plan] == [30, 60, 90, 120, 150, 180]
    assert {f.kind for f in plan[:3]} == {f.kind for f in plan[3:]} == {"kill-role", "net-silent", "pg-restart"}
    silent = next(f for f in plan if f.kind == "net-silent")
    assert silent.target in ("pg-orders", "pg-payments", "broker") and silent.down == 10
