"""A long-running process freezes what its start-up built (hsepay.heap): full collections then walk
only what the process made since, which is what removed the API's 70–210 ms pauses."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
import hsepay.api.app, hsepay.bootstrap  # what a role imports before it serves
from hsepay.heap import YOUNG_THRESHOLD, settle_after_startup
before = len(gc.get_objects(generation=2))
settle_after_startup()
print(json.dumps({"before": before, "old_after": len(gc.get_objects(generation=2)),
                  "frozen": gc.get_freeze_count(), "young": gc.get_threshold()[0], "want": YOUNG_THRESHOLD}))
"""


def test_start_up_objects_leave_the_collected_generations():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(out.stdout)
    assert figures["frozen"] >= figures["before"] > 20_000, figures
    assert figures["old_after"] < 1_000, figures  # a full pass no longer walks the imports
    assert figures["young"] == figures["want"], figures
