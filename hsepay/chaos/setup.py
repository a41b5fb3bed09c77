"""What a chaos run is given: the roles' environment, where to write, and the adapters that break things."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hsepay.chaos.failover import DatabaseCluster
from hsepay.chaos.faults import BrokerControl, PostgresControl
from hsepay.chaos.network import NetworkControl

__all__ = ["ChaosSetup"]


@dataclass
class ChaosSetup:
    environ: dict[str, str]
    """The HSEPAY_* environment of every role process (databases, broker, topics, groups)."""
    work_dir: Path
    broker: BrokerControl | None = None
    postgres: PostgresControl | None = None
    relays_per_service: int = 2
    api_args: tuple[str, ...] = ()
    """Extra arguments of `hsepay serve` (e.g. --insecure-no-auth)."""
    network: NetworkControl | None = None
    """The proxies between the roles and their dependencies, for the net-* faults."""
    observer_environ: dict[str, str] | None = None
    """Where the run itself reaches the engines (straight, not through the proxies); default: `environ`."""
    cluster: DatabaseCluster | None = None
    """A highly available PostgreSQL for the failover faults (pg-switchover, pg-kill-leader, dcs-quorum-loss)."""
    deposit_rate: float = 0.0
    """Deposits per second over the payments API alongside the orders (0: none); each one answered
    200 must be in the ledger at the end."""
