"""What happened around one fault, read afterwards from the load's answers and the roles' logs.

- the answers to requests sent while the fault lasted (by status), the slowest of them, and the
  slowest 503 — "APIs answer 503 within 2 s when their database has gone silent";
- how long after the heal the last failed answer came (the API's own recovery);
- per role, when it first said something was wrong (its first warning after the fault began):
  how long a dead connection took to be detected.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from hsepay.chaos.load import LoadResult

__all__ = ["answer_figures", "consumer_restart", "detections"]


def answer_figures(load: LoadResult, start: float, healed: float, until: float) -> dict[str, Any]:
    """Figures of the requests sent between `start` and `healed`, and of failures answered between
    the heal and `until` (the next fault)."""
    during = [(sent, took, status) for sent, took, status in load.answers if start <= sent < healed]
    statuses = Counter(status for _, _, status in during)
    unavailable = [took for _, took, status in during if status == 503]
    failed_after = [
        sent + took for sent, took, status in load.answers if status != 202 and healed <= sent + took < until
    ]
    slowest = sorted(during, key=lambda answer: answer[1], reverse=True)[:5]
    return {
        "requests": len(during),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "slowest_answer_s": round(max((took for _, took, _ in during), default=0.0), 3),
        "slowest_503_s": round(max(unavailable), 3) if unavailable else None,
        "p50_503_s": _quantile(unavailable, 0.5),
        "p90_503_s": _quantile(unavailable, 0.9),
        "slowest": [
            {"sent_s": round(sent - start, 2), "took_s": round(took, 3), "status": status}
            for sent, took, status in slowest
        ],
        "last_failure_after_heal_s": round(max(failed_after) - healed, 3) if failed_after else None,
    }


def _quantile(values: list[float], q: float) -> float | None:
    return round(sorted(values)[int(q * (len(values) - 1))], 3) if values else None


def _entries(log: Path) -> list[tuple[float, dict]]:
    """(time, entry) of every JSON line of a role's log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            found.append((dt.datetime.fromisoformat(entry["ts"]).timestamp(), entry))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _first_warning(log: Path, start: float, until: float) -> float | None:
    for at, entry in _entries(log):
        if start <= at <= until and entry.get("level") in ("warning", "error"):
            return at
    return None


def consumer_restart(log: Path, killed: float) -> dict[str, float]:
    """For a consumer killed at `killed` and started again: when the new process was up (`restart_s`),
    when it held partitions again (`stall_s`), and the difference (`rejoin_s`): what static
    membership shortens (the target: rejoin within 2 s)."""
    ready = assigned = None
    for at, entry in _entries(log):
        message = entry.get("message", "")
        if ready is None and at >= killed and message.startswith("running consumer"):
            ready = at
        elif ready is not None and "partition(s) assigned" in message:
            assigned = at
            break
    if ready is None or assigned is None:
        return {}
    return {
        "restart_s": round(ready - killed, 2),
        "stall_s": round(assigned - killed, 2),
        "rejoin_s": round(assigned - ready, 2),
    }


def detections(log_dir: Path, roles: list[str], start: float, until: float) -> dict[str, float]:
    """Role -> seconds from `start` to its first warning before `until` (roles that said nothing left out)."""
    found = {}
    for role in roles:
        at = _first_warning(log_dir / f"{role}.log", start, until)
        if at is not None:
            found[role] = round(at - start, 2)
    return found
