"""`hsepay up` says how long it took since the process started; that age must match a stopwatch."""

import subprocess
import sys
import time

PROBE = "import time; time.sleep(1.0); from hsepay.commands.up import since_start; print(since_start())"


def test_the_age_it_says_lies_between_the_sleep_and_the_wall_time():
    """psutil's create_time adds a boot time given in whole seconds: CI saw 1.7 s said after 1.3 s."""
    began = time.monotonic()
    said = float(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    wall = time.monotonic() - began
    assert 1.0 <= said <= wall + 0.02, (said, wall)
