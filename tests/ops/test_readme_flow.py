"""The README's "Try it with curl" block, run as written against a running system, each answer checked
against the comment under its command (status, headers it names, the JSON values it shows), and the
curl of `hsepay up --help`'s example.

By default the system is `hsepay up` started here as a newcomer starts it: a new data directory, no
database or broker configured (its own embedded PostgreSQL and Tansu). CI's image stage points the same
test at `hsepay up` in a container: HSEPAY_TEST_FLOW_URLS="payments=URL,orders=URL,gateway=URL".
The README's ports (8080, 8081, 3000) are the only thing rewritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsepay import embedded
from hsepay.commands.up import up
from tests.e2e.conftest import free_port, running

ROOT = Path(__file__).parents[2]
PORTS = {"8080": "payments", "8081": "orders", "3000": "gateway"}


def readme_block() -> list[str]:
    """The commands of the README's curl block, continuation lines joined, comments kept."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Try it with curl", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return block.replace("\\\n", " ").splitlines()


def steps(lines: list[str]) -> Iterator[tuple[str, str]]:
    """(command, what the README says it answers): the comment on its line or the lines under it."""
    pending: list[str] = []
    command = None
    for line in [*lines, ""]:
        stripped = line.strip()
        if stripped.startswith("#") and command is not None:
            pending.append(stripped.lstrip("# "))
            continue
        if command is not None:
            yield command, " ".join(pending)
            command, pending = None, []
        if stripped.startswith(("curl ", "USER_ID=")):
            command, _, inline = stripped.partition(" # ")
            pending = [inline] if inline else []


def expected_statuses(said: str) -> set[int]:
    first = re.search(r"(?:^| )(\d{3})(?=[ ,]|$)", said)
    others = re.findall(r"\((\d{3}) if ", said)
    return {int(s) for s in ([first[1]] if first else []) + others}


def expected_values(said: str) -> dict[str, object]:
    """The JSON values the comment spells out in full ("balance":1000, "status":"success"); elided
    ones ("3fa8…", "<id>") are not checked."""
    found = {}
    for key, raw in re.findall(r'"(\w+)":\s*("[^"]*"|-?\d+|null|true|false)', said):
        if "…" not in raw and "<" not in raw:
            found[key] = json.loads(raw)
    return found


def holds(answer: object, key: str, value: object) -> bool:
    """Whether `key` has `value` somewhere in the JSON answer (the README shows nested values too)."""
    if isinstance(answer, dict):
        return answer.get(key, not value) == value or any(holds(v, key, value) for v in answer.values())
    if isinstance(answer, list):
        return any(holds(v, key, value) for v in answer)
    return False


def run_curl(command: str, env: dict[str, str]) -> tuple[int, str, str]:
    """(status, headers, body) of one README curl, run by bash as a reader would."""
    result = subprocess.run(
        ["bash", "-c", command + " -o /dev/stdout -w '\\n%{http_code}' -D /dev/stderr"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, (command, result.stderr)
    body, _, status = result.stdout.rpartition("\n")
    return int(status), result.stderr, body


def drive(urls: dict[str, str]) -> None:
    env = {**os.environ}
    order_id = None
    for command, said in steps(readme_block()):
        if command.startswith("USER_ID="):
            env["USER_ID"] = command.split("=", 1)[1]
            continue
        for port, service in PORTS.items():
            command = command.replace(f"localhost:{port}", urls[service].removeprefix("http://"))
        command = command.replace("-si ", "-s ")  # headers are read from -D below
        if "<id>" in command:
            assert order_id, "the README reads an order before it creates one"
            command = command.replace("<id>", order_id)
        statuses, values = expected_statuses(said), expected_values(said)
        deadline = time.monotonic() + 20
        while True:  # a read may show what is still on its way ("a few milliseconds later"): asked again
            status, headers, body = run_curl(command, env)
            answer = json.loads(body) if body.startswith(("{", "[")) else None
            done = (status in statuses if statuses else 200 <= status < 300) and all(
                holds(answer, k, v) for k, v in values.items()
            )
            if done or "-X POST" in command or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done, f"{command}\n  README: {said}\n  got {status} {body[:500]}"
        if "Location:" in said:
            assert re.search(r"(?im)^location: /(api/)?orders/[0-9a-f-]{36}\s*$", headers), headers
        if "Link:" in said and isinstance(answer, list):
            assert all({"id", "status", "reason", "created_at"} <= item.keys() for item in answer)
        if "Idempotency-Key" in command and isinstance(answer, dict) and "id" in answer:
            order_id = answer["id"]


def help_example_curl() -> str:
    """The curl of `hsepay up --help`, as a reader would paste it."""
    doc = up.__doc__ or ""
    curl = doc[doc.index("curl ") :].split("\n\n")[0]
    return " ".join(curl.replace("\\\n", " ").split())


@pytest.fixture(scope="module")
def urls(tmp_path_factory) -> Iterator[dict[str, str]]:
    if shutil.which("curl") is None:
        pytest.skip("needs curl: apt-get install curl (Debian)")
    given = os.environ.get("HSEPAY_TEST_FLOW_URLS")
    if given:
        yield dict(pair.split("=", 1) for pair in given.split(","))
        return
    data = tmp_path_factory.mktemp("newcomer")  # nothing configured: its own embedded PostgreSQL and broker
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSEPAY_")} | {"HSEPAY_DATA_DIR": str(data)}
    ports = {service: free_port() for service in PORTS.values()}
    args = ["up", "--no-status"] + [f"--{service}-port={port}" for service, port in ports.items()]
    urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    try:
        with running(args, env, [f"{url}/health/ready" for url in urls.values()], timeout=180):
            yield urls
    finally:
        embedded.stop_broker(data)
        embedded.stop_postgres(data)


def test_the_readme_curl_flow_answers_as_written(urls):
    drive(urls)


def test_the_curl_of_up_help_opens_an_account_through_the_gateway(urls):
    """It sent no Content-Type and got a 415."""
    command = help_example_curl().replace("localhost:3000", urls["gateway"].removeprefix("http://"))
    assert "Content-Type: application/json" in command
    status, _, body = run_curl(command, dict(os.environ))
    assert status in (201, 409), body  # 409: a run before this one opened it
