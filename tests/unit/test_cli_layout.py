"""The status views at the widths people use: 80 columns and 120+, nothing cut (no `paymen…`,
`http:/…`, `quarant…`), with Rich's own width setting."""

from __future__ import annotations

import pytest
from rich.console import Console

from hsepay.commands.status import render
from hsepay.commands.up import heading_lines, panel

WIDTHS = [80, 120, 160]


def shown(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    return lines


def whole(lines: list[str], *values: str) -> None:
    text = "\n".join(lines)
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is cut or split in:\n{text}"


def service(name: str, relay_host: str, quarantined: int) -> dict:
    return {
        "database_error": None,
        "outbox": {
            "pending": 1234,
            "oldest_pending_age_s": 12.5,
            "topics": {},
            "active_relay": {"application_name": f"hsepay-relay-{name} {relay_host}", "pid": 1},
        },
        "inbox": {"processed": 10, "quarantined": quarantined, "quarantined_recent": []},
        "published_per_s": 3321.75,
        "applied_per_s": 3320.5,
        "broker_error": None,
        "lag": {"orders": {"0": 7}},
        "lag_total": 7,
    }


REPORT = {
    "services": {
        "payments": service("payments", "ip-10-0-0-5.ec2.internal:123456", 3),
        "orders": service("orders", "vm:42", 0),
    },
    "processes": [
        {
            "target": "http://127.0.0.1:9101",
            "ready": True,
            "checks": {},
            "services": {"payments": {"relay_active": 1.0, "consumer_joined": 1.0}},
            "error": None,
        }
    ],
    "errors": [{"where": "payments quarantine 6f1c4a52", "error": "failed 5 times: ValueError('no such account')"}],
}


@pytest.mark.parametrize("width", WIDTHS)
def test_status_fits_the_terminal_and_cuts_nothing(width):
    lines = shown(render(REPORT, width), width)
    whole(lines, "payments", "orders", "quarantined", "outbox pending", "ip-10-0-0-5.ec2.internal:123456", "3321.75")
    whole(lines, "http://127.0.0.1:9101", "payments relay active")
    one_row_per_service = any(line.split()[:1] == ["payments"] and "1234" in line for line in lines)
    assert one_row_per_service == (width >= 120)  # at 80 columns: one row per measure instead


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("auth_on", [False, True])
def test_the_live_panel_of_up_keeps_auth_and_addresses_whole(width, auth_on):
    urls = {
        name: f"http://127.0.0.1:{port}" for name, port in (("payments", 8080), ("orders", 8081), ("gateway", 3000))
    }
    heading = heading_lines(auth_on, "127.0.0.1:19092", urls)
    rows = [("payments", "1234", "active", "99999", "0", "3", "0"), ("orders", "0", "standby", "5", "1", "0", "12")]
    lines = shown(panel(heading, rows, width), width)
    whole(lines, "AUTHENTICATION IS OFF" if not auth_on else "auth on", "Ctrl-C stops", "quarantined", "duplicates")
    whole(lines, *(f"{url}/schema/swagger" for url in urls.values()))
    assert lines[0].startswith("AUTHENTICATION IS OFF" if not auth_on else "auth on")  # first, whatever scrolls
