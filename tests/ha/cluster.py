"""A highly available PostgreSQL on loopback for the HA stage: 3 etcd members, 3 Patroni nodes each
running a PostgreSQL 15, and optionally HAProxy routing to the primary with Patroni's `/primary`
health check. Everything from Debian's packages (patroni, etcd-server, postgresql-15, haproxy).

PostgreSQL refuses to run as root: when the tests run as root, Patroni (and so PostgreSQL) runs as
the `postgres` user, in a directory under /tmp that user owns. Every process is started in its own
session and stopped by its own pid; nothing is ever killed by name.

Waiting is done on conditions, asked of Patroni's REST API (who leads, who streams), never by
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hsepay.ports import free_ports

PG_BIN = Path(os.environ.get("HSEPAY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
BINARIES = {"patroni": "patroni", "etcd": "etcd", "haproxy": "haproxy", "postgres": str(PG_BIN / "postgres")}

# Failover timing: Patroni's own defaults are ttl 30, loop_wait 10, retry_timeout 10; a kill -9 of
# the leader then costs ~30 s without a primary (measured, docs/OPERATIONS.md). CI runs the lowest
# settings Patroni accepts comfortably on a loaded 2-core box (loop_wait + 2 * retry_timeout <= ttl).
DEFAULT_TIMING = {"ttl": 10, "loop_wait": 1, "retry_timeout": 4}


def missing_binaries() -> list[str]:
    return [name for name, binary in BINARIES.items() if shutil.which(binary) is None and not Path(binary).exists()]


def _run_as() -> str | None:
    """The user to run PostgreSQL as: `postgres` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    user: str | None = None
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self.user,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
                cwd="/",
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class Member:
    name: str
    pg_port: int
    rest_port: int
    data_dir: Path
    config: Path
    proc: Proc

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


@dataclass
class HaCluster:
    """3 etcd + 3 Patroni/PostgreSQL 15 (+ HAProxy) under `root`; `async with` starts and stops it."""

    root: Path
    synchronous: bool = True
    timing: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMING))
    haproxy_check: str = "inter 1s fall 2 rise 1"
    name: str = "patroni"
    etcd: list[Proc] = field(default_factory=list)
    etcd_ports: list[tuple[int, int]] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    haproxy: Proc | None = None
    haproxy_port: int = 0
    user: str | None = field(default_factory=_run_as)
    last_statuses: dict[str, int | None] = field(default_factory=dict)
    lag_before_kill: float = 0.0
    """Seconds the leader stops sending WAL before `kill_leader` kills it (0: the replicas keep up).
    With asynchronous replication that is how a failover loses acknowledged commits."""

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, **kwargs: Any) -> HaCluster:
        root = Path(tempfile.mkdtemp(prefix="hsepay-ha-"))
        root.chmod(0o755)
        return cls(root=root, **kwargs)

    async def __aenter__(self) -> HaCluster:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def start(self) -> None:
        ports = free_ports(3 * 2 + 3 * 2 + 1)
        self.etcd_ports = [(ports[i], ports[3 + i]) for i in range(3)]
        self._start_etcd()
        for i in range(3):
            self.members.append(self._member(i, pg_port=ports[6 + i], rest_port=ports[9 + i]))
        self.haproxy_port = ports[12]
        await self._wait_etcd(60)
        self.members[0].proc.start()  # the first bootstraps the cluster; the others clone it
        await self.wait_writable(120)
        for member in self.members[1:]:
            member.proc.start()
        await self.wait_replicas(2, 180)
        self._start_haproxy()
        await self.wait_haproxy(60)

    def stop(self) -> None:
        """Stop everything this cluster started, each step on its own (one failing stops no other)."""
        steps = [self.haproxy.stop] if self.haproxy else []
        for member in self.members:
            steps += [lambda m=member: m.proc.stop(60), lambda m=member: self._kill_postmaster(m)]
        for proc in self.etcd:
            steps += [lambda p=proc: p.signal(signal.SIGCONT), proc.stop]  # a stopped process ignores SIGTERM
        for step in steps:
            with contextlib.suppress(Exception):
                step()
        if not os.environ.get("HSEPAY_TEST_KEEP_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)

    # --- etcd -----------------------------------------------------------------------------------

    def _etcd_proc(self, i: int, state: str = "new") -> Proc:
        client, peer = self.etcd_ports[i]
        initial = ",".join(f"e{j}=http://127.0.0.1:{p}" for j, (_, p) in enumerate(self.etcd_ports))
        data = self.root / f"etcd{i}"
        return Proc(
            f"etcd{i}",
            [
                "etcd",
                f"--name=e{i}",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster={initial}",
                f"--initial-cluster-state={state}",
                "--initial-cluster-token=hsepay-ha",
                "--heartbeat-interval=100",
                "--election-timeout=1000",
                "--logger=zap",
                "--log-level=warn",
            ],
            self.root / f"etcd{i}.log",
        )

    def _start_etcd(self) -> None:
        self.etcd = [self._etcd_proc(i) for i in range(3)]
        for proc in self.etcd:
            proc.start()

    async def _wait_etcd(self, timeout: float) -> None:
        async def healthy() -> bool:
            answers = [await _get(f"http://127.0.0.1:{client}/health") for client, _ in self.etcd_ports]
            return sum(1 for a in answers if a and a.get("health") == "true") >= 2

        await _until(healthy, timeout, "an etcd quorum")

    async def break_quorum(self) -> None:
        """Stop 2 of the 3 etcd members (SIGSTOP: they keep their sockets and say nothing, as a
        partition would); no Patroni can renew or take the leader key."""
        for proc in self.etcd[1:]:
            proc.signal(signal.SIGSTOP)

    async def restore_quorum(self) -> None:
        for proc in self.etcd[1:]:
            proc.signal(signal.SIGCONT)
        await self._wait_etcd(60)

    # --- Patroni members --------------------------------------------------------------------------

    def _member(self, i: int, *, pg_port: int, rest_port: int) -> Member:
        name = f"pg{i}"
        home = self.root / name
        home.mkdir()
        data_dir = home / "data"
        socket_dir = home / "run"
        socket_dir.mkdir()
        config = home / "patroni.yml"
        config.write_text(json.dumps(self._patroni_config(name, pg_port, rest_port, data_dir, socket_dir, home)))
        if self.user:
            shutil.chown(home, self.user, self.user)
            shutil.chown(socket_dir, self.user, self.user)
            shutil.chown(config, self.user, self.user)
        proc = Proc(name, ["patroni", str(config)], home / "patroni.log", user=self.user)
        (home / "patroni.log").touch()
        if self.user:
            shutil.chown(home / "patroni.log", self.user, self.user)
        return Member(name, pg_port, rest_port, data_dir, config, proc)

    def _patroni_config(self, name, pg_port, rest_port, data_dir, socket_dir, home) -> dict[str, Any]:
        # YAML is a superset of JSON: the config is written as JSON, which Patroni reads.
        return {
            "scope": "hsepay-ha",
            "namespace": f"/hsepay-{self.root.name}/",
            "name": name,
            "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
            "restapi": {"listen": f"127.0.0.1:{rest_port}", "connect_address": f"127.0.0.1:{rest_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{client}" for client, _ in self.etcd_ports]},
            "bootstrap": {
                "dcs": {
                    **self.timing,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": self.synchronous,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_log_hints": "on",
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, "data-checksums", {"auth": "trust"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg_port}",
                "connect_address": f"127.0.0.1:{pg_port}",
                "data_dir": str(data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(home / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "hsepay-ha"},
                    "replication": {"username": "replicator", "password": "hsepay-ha"},
                    "rewind": {"username": "postgres", "password": "hsepay-ha"},
                },
                "parameters": {"unix_socket_directories": str(socket_dir), "shared_buffers": "32MB"},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication replicator 127.0.0.1/32 trust",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    async def cluster_state(self) -> dict[str, Any] | None:
        """Patroni's GET /cluster from the first member that answers."""
        for member in self.members:
            answer = await _get(f"{member.rest}/cluster")
            if answer:
                return answer
        return None

    async def leader(self) -> str | None:
        """The member whose GET /primary answers 200 (Patroni: it holds the leader key and its
        PostgreSQL runs as a primary), or None."""
        statuses = {m.name: await _status(f"{m.rest}/primary") for m in self.members}
        self.last_statuses = statuses
        return next((name for name, status in statuses.items() if status == 200), None)

    async def wait_writable(self, timeout: float, *, other_than: str | None = None) -> str:
        async def writable() -> str | None:
            name = await self.leader()
            return name if name and name != other_than else None

        try:
            return await _until(
                writable, timeout, f"a writable primary{f' other than {other_than}' if other_than else ''}"
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; GET /primary last answered {self.last_statuses}") from None

    async def wait_healthy(self, timeout: float = 180) -> None:
        """A writable primary, both other members streaming, and (in synchronous mode) one of them
        its synchronous standby: a cluster that can fail over again without losing anything."""
        await self.wait_writable(timeout)
        await self.wait_replicas(2, timeout)

    async def wait_replicas(self, count: int, timeout: float) -> None:
        async def streaming() -> bool:
            state = await self.cluster_state() or {}
            replicas = [
                m
                for m in state.get("members", [])
                if m.get("role") in ("replica", "sync_standby") and m.get("state") in ("streaming", "running")
            ]
            return len(replicas) >= count and (
                not self.synchronous or any(m.get("role") == "sync_standby" for m in replicas)
            )

        await _until(streaming, timeout, f"{count} replica(s) streaming")

    async def switchover(self) -> str:
        old = await self.wait_writable(60)
        state = await self.cluster_state() or {}
        roles = {m["name"]: m.get("role") for m in state.get("members", [])}
        candidates = [n for n, r in roles.items() if r == "sync_standby"] or [
            n for n, r in roles.items() if r == "replica"
        ]
        response = await _send(
            "POST", f"{self.member(old).rest}/switchover", {"leader": old, "candidate": candidates[0]}
        )
        if response.status_code != 200:
            raise RuntimeError(f"switchover refused: {response.status_code} {response.text}")
        return await self.wait_writable(120, other_than=old)

    async def kill_leader(self) -> str:
        """kill -9 the leader node: its Patroni and every process of its PostgreSQL."""
        name = await self.wait_writable(60)
        member = self.member(name)
        senders = await self.pause_senders(member) if self.lag_before_kill else []
        await asyncio.sleep(self.lag_before_kill)
        postmaster = member.postmaster_pid()
        member.proc.kill9()
        self._kill_postmaster(member, postmaster)
        for pid in senders:  # stopped: they would not notice their postmaster's death
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return name

    async def pause_senders(self, member: Member) -> list[int]:
        """SIGSTOP the leader's WAL senders: the replicas stop receiving (as behind a slow link)
        while the leader goes on committing. Stopping the replicas' receivers instead would not do:
        the kernel's socket buffers would still take in what the leader sends."""
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            f"host=127.0.0.1 port={member.pg_port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            pids = [row[0] for row in await (await conn.execute("SELECT pid FROM pg_stat_replication")).fetchall()]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    def _kill_postmaster(self, member: Member, pid: int | None = None) -> None:
        pid = pid or member.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"postgres" in cmdline and str(member.data_dir).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)

    async def start_member(self, name: str) -> None:
        member = self.member(name)
        member.proc.start()

        async def replica() -> bool:
            state = await self.cluster_state() or {}
            me = next((m for m in state.get("members", []) if m["name"] == name), {})
            return me.get("role") in ("replica", "sync_standby") and me.get("state") in ("streaming", "running")

        await _until(replica, 180, f"{name} back as a replica")

    async def set_dynamic(self, **settings: Any) -> None:
        """PATCH Patroni's dynamic configuration (e.g. synchronous_mode) and wait until applied."""
        leader = await self.wait_writable(60)
        response = await _send("PATCH", f"{self.member(leader).rest}/config", settings)
        response.raise_for_status()

        async def applied() -> bool:
            config = await _get(f"{self.member(leader).rest}/config") or {}
            return all(config.get(k) == v for k, v in settings.items())

        await _until(applied, 60, f"Patroni to apply {settings}")
        self.synchronous = bool(settings.get("synchronous_mode", self.synchronous))

    # --- HAProxy --------------------------------------------------------------------------------

    def _start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server {m.name} 127.0.0.1:{m.pg_port} maxconn 200 check port {m.rest_port}" for m in self.members
        )
        config = self.root / "haproxy.cfg"
        # Patroni's documented pattern: route to the member whose GET /primary answers 200, and cut
        # every session of a member marked down, so no pooled connection stays on a demoted primary.
        config.write_text(
            f"""global
    maxconn 1000
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 2s
    timeout server 30m
    timeout check 2s
listen primary
    bind 127.0.0.1:{self.haproxy_port}
    option httpchk GET /primary
    http-check expect status 200
    default-server {self.haproxy_check} on-marked-down shutdown-sessions
{servers}
"""
        )
        self.haproxy = Proc("haproxy", ["haproxy", "-db", "-f", str(config)], self.root / "haproxy.log")
        self.haproxy.start()

    async def wait_haproxy(self, timeout: float) -> None:
        import psycopg

        async def answers() -> bool:
            # HAProxy counts every server up until its checks say otherwise: right after the start
            # it still sends some connections to the replicas (a test that begins then fails with
            # "session is read-only"). Ready once every server it might pick is the primary.
            try:
                for _ in range(2 * len(self.members)):
                    async with await psycopg.AsyncConnection.connect(
                        self.haproxy_url("postgres", libpq=True), connect_timeout=2
                    ) as conn:
                        if (await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone())[0]:
                            return False
                return True
            except psycopg.Error:
                return False

        await _until(answers, timeout, "HAProxy routing to the primary")

    # --- URLs -----------------------------------------------------------------------------------

    def multi_host_url(self, database: str) -> str:
        """The standard libpq multi-host URL (issue 22: refused before)."""
        hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def haproxy_url(self, database: str, *, libpq: bool = False) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.haproxy_port}/{database}"

    def logs(self) -> str:
        """The tail of every component's log, for a failing test's report."""
        parts = []
        for path in sorted(self.root.glob("**/*.log")):
            text = path.read_text(errors="replace").splitlines()[-30:]
            parts.append(f"--- {path.relative_to(self.root)}\n" + "\n".join(text))
        return "\n".join(parts)


# One client for every REST call: an httpx client builds an SSL context when created (~20 ms of
# CPU), and polling Patroni ten times a second with a new one each time starved the event loop that
# also runs a chaos run's load, inflating every request's measured time (a 25 s "503").
_http: httpx.AsyncClient | None = None


def _client() -> httpx.AsyncClient:
    global _http
    if _http is None:
        _http = httpx.AsyncClient(timeout=2, trust_env=False)
    return _http


async def _get(url: str) -> dict[str, Any] | None:
    """A REST answer's JSON (whatever its status: Patroni answers 503 with a body), None if none."""
    try:
        return (await _client().get(url)).json()
    except (httpx.HTTPError, ValueError):
        return None


async def _status(url: str) -> int | None:
    try:
        return (await _client().get(url)).status_code
    except httpx.HTTPError:
        return None


async def _send(method: str, url: str, body: dict[str, Any]) -> httpx.Response:
    return await _client().request(method, url, json=body, timeout=60)


async def _until(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g}s")
        await asyncio.sleep(interval)


def postgres_user_exists() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True
