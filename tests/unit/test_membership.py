"""Static membership ids: stable across restarts (a kill -9 frees the slot), unique among live consumers."""

from __future__ import annotations

import signal
import subprocess
import sys

from hsepay.relay.membership import claim_instance_id


def test_live_consumers_of_a_group_get_distinct_slots_and_a_freed_slot_is_taken_again(tmp_path):
    first = claim_instance_id("hsepay-orders", lock_dir=tmp_path)
    second = claim_instance_id("hsepay-orders", lock_dir=tmp_path)
    other_group = claim_instance_id("hsepay-payments", lock_dir=tmp_path)
    assert first.instance_id.endswith("#0") and second.instance_id.endswith("#1")
    assert other_group.instance_id.startswith("hsepay-payments@") and other_group.instance_id.endswith("#0")
    first.release()
    again = claim_instance_id("hsepay-orders", lock_dir=tmp_path)
    assert again.instance_id == first.instance_id
    for slot in (second, other_group, again):
        slot.release()


def test_a_killed_consumer_leaves_its_id_to_the_one_started_after_it(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from hsepay.relay.membership import claim_instance_id; "
            f"print(claim_instance_id('g', lock_dir=Path({str(tmp_path)!r})).instance_id, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    killed_id = holder.stdout.readline().strip()
    beside = claim_instance_id("g", lock_dir=tmp_path)
    assert beside.instance_id != killed_id  # it is still alive
    beside.release()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    after = claim_instance_id("g", lock_dir=tmp_path)
    assert after.instance_id == killed_id
    after.release()


def test_an_explicit_id_is_used_as_given(tmp_path):
    assert claim_instance_id("g", "orders-consumer-3", lock_dir=tmp_path).instance_id == "orders-consumer-3"
