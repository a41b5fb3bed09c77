"""The container files: the compose file validates, each role's entry command runs here, the
dashboard is Grafana JSON whose every query names metrics hsepay exports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from hsepay.observability import catalog
from tests.e2e.conftest import free_port, running
from tests.ops.conftest import binary
from tests.support import event_secrets_env

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_SECRET = "compose-test-secret-" + "x" * 32
DASHBOARD = ROOT / "deploy/grafana/dashboards/hsepay.json"
METRIC = re.compile(r"\b((?:hsepay|process)_[a-z0-9_]+)\b")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _hsepay_services() -> dict[str, dict]:
    return {name: s for name, s in _compose()["services"].items() if s.get("image") == "hsepay:latest"}


def test_compose_file_validates_with_docker_compose():
    docker_compose = binary("docker-compose", "docker-compose", "HSEPAY_TEST_REQUIRE_COMPOSE")
    env = {**os.environ, "HSEPAY_AUTH_SECRET": COMPOSE_SECRET, **event_secrets_env()}
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    without = {k: v for k, v in env.items() if k != "HSEPAY_AUTH_SECRET"}
    refused = subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=without,
    )
    assert refused.returncode != 0 and "HSEPAY_AUTH_SECRET" in refused.stderr  # no deployment without auth
    for variable in event_secrets_env():  # nor with unsigned events
        unsigned = subprocess.run(
            [docker_compose, "-f", str(COMPOSE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={k: v for k, v in env.items() if k != variable},
        )
        assert unsigned.returncode != 0 and variable in unsigned.stderr


def test_compose_services_have_health_checks_and_workers_scale():
    services = _compose()["services"]
    assert {"postgres", "kafka", "kafka-init", "prometheus", "grafana"} <= services.keys()
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    kafka_version = re.search(r"<kafka.version>(.+)</kafka.version>", (ROOT / ".ci/kafka/pom.xml").read_text())[1]
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}", "compose runs the Kafka that CI tests"
    assert "KRaft" in COMPOSE.read_text() and services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "--if-not-exists" in " ".join(services["kafka-init"]["command"])
    roles = _hsepay_services()
    commands = {name: s["command"][0] for name, s in roles.items()}
    assert sorted(commands.values()) == sorted(
        ["db", "serve", "serve", "serve", "relay", "relay", "consume", "consume"]
    )
    for name, service in roles.items():
        if service["command"][0] in ("relay", "consume"):
            assert "ports" not in service and "container_name" not in service, f"{name} could not --scale"
    init = (ROOT / "deploy/postgres/init.sql").read_text()
    assert "CREATE DATABASE payments" in init and "CREATE DATABASE orders" in init


def test_dockerfile_is_slim_non_root_and_one_image_for_every_role():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    (base,) = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE=")]
    assert base.endswith("-slim")  # the default base; CI's image stage passes one it made with debootstrap
    assert [line.split()[1] for line in lines if line.startswith("FROM ")] == ["${BASE}", "${BASE}"]
    user = [line for line in lines if line.startswith("USER ")][-1].split()[1]
    assert user.split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["hsepay"]' in lines


def _local(command: list[str], ports: dict[int, int]) -> list[str]:
    """A compose command for this machine: loopback instead of 0.0.0.0, free ports instead of fixed ones."""
    local = []
    for arg in command:
        if arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif arg.isdigit() and int(arg) in ports:
            arg = str(ports[int(arg)])
        local.append(arg)
    return local


def test_each_roles_entry_command_runs_here(saga_environ):
    """Every hsepay service of the compose file, started with its own command (ports remapped),
    answers its health check: the migration first, then APIs, gateway, relays and consumers.
    As the compose file demands, the APIs run with authentication (HSEPAY_AUTH_SECRET set)."""
    saga_environ = {**saga_environ, "HSEPAY_AUTH_SECRET": COMPOSE_SECRET}
    roles = _hsepay_services()
    fixed = {8080, 8081, 3000, 9100}
    migrate = roles.pop("migrate")
    result = subprocess.run(
        [sys.executable, "-m", "hsepay.cli", *migrate["command"]],
        env=saga_environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    planned = []
    api_ports: dict[str, int] = {}
    for name, service in roles.items():
        ports = {port: free_port() for port in fixed}  # each container has its own network
        health = service["healthcheck"]["test"][-1]
        port = int(re.search(r":(\d+)/", health)[1])
        if service["command"][0] == "serve":
            api_ports[name] = ports[port]
        planned.append((name, service, ports, health.replace(f":{port}/", f":{ports[port]}/")))
    with contextlib.ExitStack() as stack:
        procs = {}
        for name, service, ports, _ in planned:
            env = dict(saga_environ)
            for variable in service.get("environment") or {}:
                if variable.startswith("HSEPAY_GATEWAY_"):
                    upstream = "payments-api" if "PAYMENTS" in variable else "orders-api"
                    env[variable] = f"http://127.0.0.1:{api_ports[upstream]}"
            procs[name] = stack.enter_context(running(_local(service["command"], ports), env, []))
        deadline = time.monotonic() + 120
        waiting = {name: url for name, _, _, url in planned}
        while waiting:  # all at once: consumers joining their groups take the longest
            for name, url in list(waiting.items()):
                assert procs[name].poll() is None, f"{name} exited: {procs[name].stdout.read().decode()[-2000:]}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=1).status_code == 200:
                        del waiting[name]
            assert time.monotonic() < deadline, f"not healthy after 120 s: {sorted(waiting)}"
            time.sleep(0.2)
        gateway_ready = httpx.get(f"http://127.0.0.1:{api_ports['gateway']}/health/ready").json()
        assert gateway_ready["checks"]["upstreams"] == {"ready": True, "payments": "ok", "orders": "ok"}


def test_dashboard_is_grafana_json_and_every_query_names_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    datasource = provisioned["datasources"][0]
    exported = catalog.exported_names() | {"process_resident_memory_bytes"}
    ids, queried = set(), set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    for panel in dashboard["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat", "gauge", "table", "bargauge"), panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} names no metric"
            unknown = {n.removesuffix("_bucket") + "_bucket" if n.endswith("_bucket") else n for n in names} - exported
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported by hsepay"
            queried |= names
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("settled", "final status", "backlog", "lag", "quarantine", "requests", "error"):
        assert topic in titles, f"the dashboard has no panel about {topic}"
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/hsepay.yml").read_text())
    mounted = " ".join(_compose()["services"]["grafana"]["volumes"])
    assert providers["providers"][0]["options"]["path"] in mounted


def test_prometheus_config_scrapes_every_long_running_role():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {
        name: sd["port"]
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    for name, service in _hsepay_services().items():
        if name == "migrate":
            continue
        port = int(re.search(r":(\d+)/", service["healthcheck"]["test"][-1])[1])
        assert scraped.get(name) == port, f"{name} is not scraped on {port}"
    promtool = binary("promtool", "prometheus", "HSEPAY_TEST_REQUIRE_PROMETHEUS")
    result = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
