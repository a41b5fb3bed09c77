"""Where chaos tests leave their figures: HSEPAY_CHAOS_REPORT_DIR/<name>.json (CI prints the verdicts)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(name: str, report) -> None:
    print(report.verdict())
    directory = os.environ.get("HSEPAY_CHAOS_REPORT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(json.dumps(report.to_json(), indent=2, default=str))
