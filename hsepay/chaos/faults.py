"""What a chaos run can break, and the small adapters that break it.

A `Fault` is one scheduled event. Process faults hit hsepay's own roles; broker faults go through a
`BrokerControl` (an Apache Kafka cluster run by `.ci/kafka/node-ctl.sh`, or the embedded Tansu
broker); database faults through a `PostgresControl` (the embedded server, or two shell commands
such as `pg_ctlcluster 15 main stop|start`). A plan is drawn from a seed, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hsepay import embedded

NET_KINDS = ("net-latency", "net-silent", "net-reset", "net-slow", "net-cut")
"""Network faults (hsepay.chaos.network, through Toxiproxy); named here so that listing the fault
kinds (`hsepay --help`) loads no HTTP client."""

__all__ = [
    "BrokerControl",
    "CommandPostgres",
    "EmbeddedPostgres",
    "EmbeddedTansu",
    "Fault",
    "KINDS",
    "KraftScripts",
    "NET_KINDS",
    "PostgresControl",
    "random_plan",
]

KINDS = (
    "kill-role",  # kill -9 one of hsepay's processes; started again after `down`
    "broker-kill",  # kill -9 one broker node (`target`: a node id, or "leader:<topic>"); started after `down`
    "broker-rolling",  # SIGTERM each node in turn, start it, wait until nothing is under-replicated
    "broker-restart-all",  # stop every node, start them all again on their data
    "pg-restart",  # stop PostgreSQL, start it after `down`
    *NET_KINDS,  # break the link to one dependency (`target`: pg-orders, pg-payments, broker) for `down`
)

NET_DOWN = {"net-cut": 30.0, "net-silent": 20.0, "net-latency": 15.0, "net-slow": 15.0, "net-reset": 10.0}
"""How long each network fault of a random plan lasts."""


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the load starts."""
    kind: str
    target: str = ""
    down: float = 0.0
    """Seconds the broken part stays down (kill-role, broker-kill, pg-restart)."""

    def label(self) -> str:
        return f"{self.kind}{':' + self.target if self.target else ''}"


class BrokerControl(Protocol):
    name: str

    def nodes(self) -> list[int]: ...

    async def kill(self, node: int) -> None: ...

    async def term(self, node: int) -> None: ...

    async def start(self, nodes: Sequence[int]) -> None: ...

    async def wait_healthy(self, timeout: float) -> None: ...

    async def leaders(self, topic: str) -> set[int]: ...


class PostgresControl(Protocol):
    async def stop(self) -> None: ...

    async def start(self) -> None: ...


async def _run(*argv: str, timeout: float = 180.0) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{' '.join(argv)}: no result within {timeout:g}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode()


class KraftScripts:
    """An Apache Kafka cluster started by `.ci/kafka/start-kraft.sh`, controlled by its `node-ctl.sh`."""

    name = "Apache Kafka (KRaft)"

    def __init__(self, ctl: Path, workdir: Path) -> None:
        self.ctl = ctl
        self.workdir = workdir
        self._nodes: list[int] | None = None

    async def _ctl(self, *args: str, timeout: float = 180.0) -> str:
        return await _run(str(self.ctl), str(self.workdir), *args, timeout=timeout)

    def nodes(self) -> list[int]:
        if self._nodes is None:
            count = sum(1 for _ in self.workdir.glob("node*/server.properties"))
            self._nodes = list(range(1, count + 1))
        return self._nodes

    async def kill(self, node: int) -> None:
        await self._ctl("kill", str(node))

    async def term(self, node: int) -> None:
        await self._ctl("term", str(node))

    async def start(self, nodes: Sequence[int]) -> None:
        await self._ctl("start", *map(str, nodes))

    async def stop_all(self) -> None:
        await self._ctl("stop-all")

    async def start_all(self) -> None:
        await self._ctl("start-all")

    async def wait_healthy(self, timeout: float) -> None:
        await self._ctl("wait-healthy", str(int(timeout)), timeout=timeout + 30)

    async def wait_fenced(self, node: int, timeout: float) -> None:
        await self._ctl("wait-fenced", str(node), str(int(timeout)), timeout=timeout + 30)

    async def running(self) -> list[int]:
        out = await self._ctl("status")
        return [int(line.split()[0]) for line in out.splitlines() if line.split()[1:2] == ["running"]]

    async def leaders(self, topic: str) -> set[int]:
        out = await self._ctl("leader", topic, "all")
        return {int(line.split()[1]) for line in out.splitlines() if line.strip() and int(line.split()[1]) >= 0}


class EmbeddedTansu:
    """The embedded broker: one node that keeps everything in memory (a restart loses it all)."""

    name = "embedded Tansu"

    def __init__(self, data_dir: Path, port: int, advertised_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.advertised_port = advertised_port
        """The port of a proxy in front of it, which it tells clients to use (network faults)."""

    def nodes(self) -> list[int]:
        return [1]

    async def kill(self, node: int) -> None:
        await asyncio.to_thread(embedded.stop_broker, self.data_dir, hard=True)

    async def term(self, node: int) -> None:
        await asyncio.to_thread(embedded.stop_broker, self.data_dir)

    async def start(self, nodes: Sequence[int]) -> None:
        await asyncio.to_thread(embedded.ensure_broker, self.data_dir, self.port, advertised_port=self.advertised_port)

    async def stop_all(self) -> None:
        await self.term(1)

    async def start_all(self) -> None:
        await self.start([1])

    async def wait_healthy(self, timeout: float) -> None:
        return None  # ensure_broker returns once it listens

    async def wait_fenced(self, node: int, timeout: float) -> None:
        return None

    async def leaders(self, topic: str) -> set[int]:
        return {1}


class EmbeddedPostgres:
    """The embedded PostgreSQL of a data directory (same socket, same data after a restart)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    async def stop(self) -> None:
        await asyncio.to_thread(embedded.stop_postgres, self.data_dir)

    async def start(self) -> None:
        await asyncio.to_thread(embedded.ensure_postgres, self.data_dir)


class CommandPostgres:
    """A PostgreSQL stopped and started by two shell commands (e.g. `pg_ctlcluster 15 main stop`)."""

    def __init__(self, stop_command: str, start_command: str) -> None:
        self.stop_command = shlex.split(stop_command)
        self.start_command = shlex.split(start_command)

    async def stop(self) -> None:
        await _run(*self.stop_command)

    async def start(self) -> None:
        await _run(*self.start_command)


def random_plan(
    seed: int,
    duration: float,
    *,
    roles: Sequence[str],
    kinds: Sequence[str],
    count: int,
    broker_down: float = 15.0,
    links: Sequence[str] = ("pg-orders", "pg-payments", "broker"),
) -> list[Fault]:
    """`count` faults of the given kinds spread over the middle of a `duration`-second load
    (a network fault breaks one of `links`)."""
    rng = random.Random(seed)
    plan = []
    slot = duration * 0.7 / max(count, 1)
    for i in range(count):
        kind = rng.choice(list(kinds))
        at = round(duration * 0.1 + slot * i + rng.uniform(0, slot * 0.5), 2)
        if kind == "kill-role":
            plan.append(Fault(at, kind, rng.choice(list(roles)), down=round(rng.uniform(0.5, 3.0), 2)))
        elif kind == "broker-kill":
            plan.append(Fault(at, kind, "leader:orders", down=broker_down))
        elif kind == "pg-restart":
            plan.append(Fault(at, kind, down=round(rng.uniform(1.0, 4.0), 2)))
        elif kind in NET_KINDS:
            plan.append(Fault(at, kind, rng.choice(list(links)), down=NET_DOWN[kind]))
        else:
            plan.append(Fault(at, kind))
    return plan
