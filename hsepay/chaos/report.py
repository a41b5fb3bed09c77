"""What a chaos run reports: each fault with its recovery, the orders, the HTTP answers, the audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hsepay.chaos.faults import Fault
from hsepay.chaos.load import LoadResult
from hsepay.chaos.resources import flatness

__all__ = ["ChaosReport", "FaultRecord"]


@dataclass
class FaultRecord:
    fault: Fault
    started: float = 0.0
    returned: float | None = None
    """When the broken part was back (a node started, a process restarted)."""
    ended: float = 0.0
    recovery_s: float | None = None
    after_return_s: float | None = None
    detail: str = ""
    unavailable: dict[str, float] | None = None
    """The 503 window of this fault (see `observe.unavailable_window`), None if there was none."""
    figures: dict[str, Any] = field(default_factory=dict)
    """The answers while it lasted and the roles' detection times (hsepay.chaos.timeline)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault.label(),
            "at_s": self.fault.at,
            "down_s": self.fault.down,
            "detail": self.detail,
            "recovery_s": self.recovery_s,
            "after_return_s": self.after_return_s,
            "unavailable": self.unavailable,
            **self.figures,
        }


@dataclass
class ChaosReport:
    seed: int
    intended: int
    load: LoadResult
    faults: list[FaultRecord]
    final: int = 0
    lost: list[str] = field(default_factory=list)
    drained_after_last_fault_s: float | None = None
    duplicates_absorbed: int = 0
    redriven: int = 0
    audit: dict[str, Any] = field(default_factory=dict)
    role_exits: dict[str, int | None] = field(default_factory=dict)
    role_starts: dict[str, int] = field(default_factory=dict)
    died: dict[str, int | None] = field(default_factory=dict)
    """Roles that exited by themselves during the run (name -> exit code): a role must ride out faults."""
    missing: list[str] = field(default_factory=list)
    """Orders answered 202 that the orders database no longer has (a failover onto a standby that
    had not received them): lost, and counted in `lost` too."""
    lost_orders: list[str] = field(default_factory=list)
    """Orders whose payment request is on the topic but which the orders database lost (the topic audit)."""
    deposits: dict[str, Any] = field(default_factory=dict)
    """sent, acknowledged and lost deposits, when the run made deposits too."""
    resources: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """A soak's samples (hsepay.chaos.resources): `kind:name` -> (seconds, value)."""
    segments: dict[str, list[int]] = field(default_factory=dict)
    """The process of each sample of a role's series."""

    @property
    def flatness(self) -> dict[str, dict[str, float | bool]]:
        return flatness(self.resources, self.segments)

    @property
    def not_flat(self) -> list[str]:
        return [name for name, figures in self.flatness.items() if not figures["flat"]]

    @property
    def double_debits(self) -> int:
        return next((c["violations"] for c in self.audit.get("checks", []) if c["name"] == "debited_at_most_once"), 0)

    @property
    def longest_recovery_s(self) -> float | None:
        values = [f.recovery_s for f in self.faults if f.recovery_s is not None]
        return max(values) if values else None

    @property
    def passed(self) -> bool:
        return (
            not self.lost
            and not self.load.given_up
            and self.load.server_errors == 0
            and self.load.hung == 0
            and bool(self.audit.get("ok"))
            and not self.died
            and not self.deposits.get("lost")
            and not self.deposits.get("server_errors")
            and not self.deposits.get("hung")
            and not self.not_flat
        )

    def verdict(self) -> str:
        kinds: dict[str, int] = {}
        for record in self.faults:
            kinds[record.fault.kind] = kinds.get(record.fault.kind, 0) + 1
        longest = self.longest_recovery_s
        drained = self.drained_after_last_fault_s
        return (
            f"chaos seed={self.seed}: {len(self.load.accepted)}/{self.intended} orders accepted, {self.final} final, "
            f"lost {len(self.lost) + len(self.load.given_up)}, double debits {self.double_debits}, "
            f"{len(self.faults)} faults ({', '.join(f'{k}×{n}' for k, n in kinds.items()) or 'none'}), "
            f"duplicates absorbed {self.duplicates_absorbed}, re-driven {self.redriven}, "
            f"longest recovery {'-' if longest is None else f'{longest:.1f}s'}, "
            f"drained {'-' if drained is None else f'{drained:.1f}s'} after the last fault, "
            f"HTTP 5xx (not 503) {self.load.server_errors}, hung {self.load.hung}, "
            f"roles died {', '.join(self.died) or 'none'}, {self._resources_verdict()}"
            + (
                f"deposits {self.deposits['acknowledged']}/{self.deposits['sent']} acknowledged, "
                f"lost {len(self.deposits['lost'])}, "
                if self.deposits
                else ""
            )
            + f"audit {'ok' if self.audit.get('ok') else 'FAILED'} → {'PASS' if self.passed else 'FAIL'}"
        )

    def _resources_verdict(self) -> str:
        if not self.resources:
            return ""
        growing = self.not_flat
        return f"resources {'GROWING: ' + ', '.join(growing) if growing else 'flat'}, "

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.verdict(),
            "seed": self.seed,
            "orders": {"intended": self.intended, "accepted": len(self.load.accepted), "final": self.final},
            "lost": self.lost + self.load.given_up,
            "missing": self.missing,
            "lost_orders": self.lost_orders,
            "deposits": self.deposits,
            "double_debits": self.double_debits,
            "duplicates_absorbed": self.duplicates_absorbed,
            "redriven": self.redriven,
            "faults": [
                {
                    **f.to_json(),
                    "started_s": round(f.started - self.load.started, 2),
                    "ended_s": round(f.ended - self.load.started, 2),
                }
                for f in self.faults
            ],
            "longest_recovery_s": self.longest_recovery_s,
            "drained_after_last_fault_s": self.drained_after_last_fault_s,
            "load_finished_after_last_fault_s": (
                round(self.load.finished - max(f.ended for f in self.faults), 2) if self.faults else None
            ),
            "http": {
                "statuses": {str(k): v for k, v in sorted(self.load.statuses.items())},
                "transport_errors": dict(self.load.transport_errors),
                "hung": self.load.hung,
                "slow": [
                    {"at_s": round(at - self.load.started, 2), "seconds": round(took, 2), "outcome": outcome}
                    for at, took, outcome in self.load.slow[:50]
                ],
                "replays": self.load.replays,
            },
            "role_exits": self.role_exits,
            "died": self.died,
            "role_starts": self.role_starts,
            "audit": self.audit,
            **({"flatness": self.flatness, "resources": self.resources} if self.resources else {}),
        }
