"""Network faults: Toxiproxy between every role and each of its dependencies, and the toxics that break a link.

Every role reaches PostgreSQL (one proxy per service database) and the broker through a proxy of
its own run; the broker advertises the proxy, so the clients' later connections go through it too.
One fault breaks one dependency at a time, for `down` seconds, then heals it:

| kind | the link | toxiproxy |
| --- | --- | --- |
| `net-latency` | 200 ms ± 100 ms more on every answer | `latency` downstream, with jitter |
| `net-silent` | connections stay open, nothing comes through, no reset | `timeout` 0 both ways (data dropped) |
| `net-reset` | every connection, old or new, is reset as soon as it carries data | `reset_peer` 0 |
| `net-slow` | 64 KB/s each way, answers cut in small slices | `bandwidth` both ways and `slicer` downstream |
| `net-cut` | nothing accepted, open connections closed | the proxy disabled |

Toxiproxy itself is built from the Go module proxy by `.ci/stage-netfault.sh` (never committed);
`find_toxiproxy()` finds it where HSEPAY_TOXIPROXY points, or as `toxiproxy-server` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hsepay.chaos.faults import NET_KINDS
from hsepay.ports import free_port

__all__ = ["NetworkControl", "Toxiproxy", "find_toxiproxy"]


_TOXICS: dict[str, list[dict]] = {
    "net-latency": [{"type": "latency", "stream": "downstream", "attributes": {"latency": 200, "jitter": 100}}],
    "net-silent": [
        {"type": "timeout", "stream": "downstream", "attributes": {"timeout": 0}},
        {"type": "timeout", "stream": "upstream", "attributes": {"timeout": 0}},
    ],
    "net-reset": [{"type": "reset_peer", "stream": "downstream", "attributes": {"timeout": 0}}],
    "net-slow": [
        {"type": "bandwidth", "stream": "downstream", "attributes": {"rate": 64}},
        {"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 64}},
        {
            "type": "slicer",
            "stream": "downstream",
            "attributes": {"average_size": 256, "size_variation": 128, "delay": 0},
        },
    ],
}


def find_toxiproxy() -> Path | None:
    """The toxiproxy-server binary: HSEPAY_TOXIPROXY, or `toxiproxy-server` on PATH."""
    named = os.environ.get("HSEPAY_TOXIPROXY")
    if named:
        return Path(named) if Path(named).is_file() else None
    found = shutil.which("toxiproxy-server")
    return Path(found) if found else None


@dataclass
class Toxiproxy:
    """A toxiproxy-server of this run on loopback, and its HTTP API."""

    binary: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.port = self.port or free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.api}/version", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"toxiproxy-server did not answer on {self.api}; see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def create(self, name: str, upstream: str, listen_port: int = 0) -> str:
        """A proxy `name` in front of `upstream` (host:port); returns the address it listens on."""
        listen = f"127.0.0.1:{listen_port or free_port()}"
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        response = httpx.post(f"{self.api}/proxies", json=body, timeout=10)
        response.raise_for_status()
        return response.json()["listen"]

    async def _call(self, method: str, path: str, body: dict | None = None) -> None:
        async with httpx.AsyncClient(base_url=self.api, timeout=10) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()

    async def add_toxic(self, proxy: str, name: str, toxic: dict) -> None:
        await self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "toxicity": 1.0, **toxic})

    async def remove_toxic(self, proxy: str, name: str) -> None:
        await self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    async def enable(self, proxy: str, enabled: bool) -> None:
        await self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})


@dataclass
class NetworkControl:
    """Breaks and heals the link to one dependency (a proxy name: `pg-orders`, `pg-payments`, `broker`)."""

    toxiproxy: Toxiproxy
    proxies: dict[str, str] = field(default_factory=dict)
    """Dependency -> the address its proxy listens on."""

    def add(self, dependency: str, upstream: str) -> str:
        self.proxies[dependency] = self.toxiproxy.create(dependency, upstream)
        return self.proxies[dependency]

    def _check(self, kind: str, dependency: str) -> None:
        if kind not in NET_KINDS:
            raise ValueError(f"unknown network fault {kind!r}; choose from {', '.join(NET_KINDS)}")
        if dependency not in self.proxies:
            raise ValueError(f"no proxy for {dependency!r}; proxies: {', '.join(self.proxies)}")

    async def break_link(self, kind: str, dependency: str) -> None:
        self._check(kind, dependency)
        if kind == "net-cut":
            await self.toxiproxy.enable(dependency, False)
            return
        for index, toxic in enumerate(_TOXICS[kind]):
            await self.toxiproxy.add_toxic(dependency, f"{kind}-{index}", toxic)

    async def heal(self, kind: str, dependency: str) -> None:
        self._check(kind, dependency)
        if kind == "net-cut":
            await self.toxiproxy.enable(dependency, True)
            return
        for index in range(len(_TOXICS[kind])):
            await self.toxiproxy.remove_toxic(dependency, f"{kind}-{index}")
