"""A real Prometheus scrapes a running `hsepay up`; every query of the dashboard returns data."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.e2e.conftest import free_port, running
from tests.ops.conftest import binary

DASHBOARD = Path(__file__).parents[2] / "deploy/grafana/dashboards/hsepay.json"
SCRAPE = "1s"


def _queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels if p["type"] != "row" for t in p["targets"]]


def _grafana_variables(expr: str) -> str:
    """What Grafana substitutes before a query reaches Prometheus."""
    return expr.replace("$__rate_interval", "30s").replace("$__interval", SCRAPE)


@contextlib.contextmanager
def prometheus(tmp_path: Path, targets: list[str]):
    executable = binary("prometheus", "prometheus", "HSEPAY_TEST_REQUIRE_PROMETHEUS")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                "scrape_configs": [{"job_name": "hsepay", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    proc = subprocess.Popen(
        [
            executable,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(url: str, expr: str) -> list:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def test_prometheus_scrapes_hsepay_up_and_every_dashboard_query_has_data(hsepay_env, broker, tmp_path):
    env = {**hsepay_env, "HSEPAY_KAFKA": broker, "HSEPAY_KAFKA_IDEMPOTENCE": "false"}
    pay, ords, gate, metrics = free_port(), free_port(), free_port(), free_port()
    args = ["up", "--payments-port", str(pay), "--orders-port", str(ords), "--gateway-port", str(gate)]
    args += ["--metrics-port", str(metrics)]
    # Every port of one process serves that whole process's metrics: scrape one port per process.
    targets = [f"127.0.0.1:{metrics}"]
    with (
        running(args, env, [f"http://127.0.0.1:{metrics}/health/ready"], timeout=90),
        prometheus(tmp_path, targets) as url,
        httpx.Client(base_url=f"http://127.0.0.1:{gate}", timeout=5) as client,
    ):
        user = str(uuid.uuid4())
        assert client.post("/api/accounts", json={"user_id": user}).status_code == 201
        client.post(f"/api/accounts/{user}/deposit", json={"amount": 1000})
        ids = [client.post("/api/orders", json={"user_id": user, "amount": n}).json()["id"] for n in (100, 200, 5000)]
        deadline = time.monotonic() + 60
        while any(client.get(f"/api/order/{i}").json()["status"] == "created" for i in ids):
            assert time.monotonic() < deadline, "orders did not settle"
            time.sleep(0.05)
        client.get("/api/summary", params={"user_id": user})

        deadline = time.monotonic() + 30
        while len(up := _query(url, "up")) < 1 or any(r["value"][1] != "1" for r in up):
            assert time.monotonic() < deadline, f"targets not scraped: {up}"
            time.sleep(0.2)
        pending = dict(_queries())
        empty: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while pending:  # a rate needs two scrapes after the orders: poll, do not sleep a fixed time
            for title, expr in list(pending.items()):
                result = _query(url, _grafana_variables(expr))
                if result:
                    del pending[title]
                else:
                    empty[title] = expr
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not pending, f"dashboard queries without data: {pending}"
        settled = _query(url, "sum(hsepay_saga_duration_seconds_count)")
        assert float(settled[0]["value"][1]) == 3
