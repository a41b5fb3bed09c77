"""When a consumer counts as behind (hsepay.relay.pacing.is_behind): records after the last one fetched."""

from types import SimpleNamespace

from aiokafka.structs import TopicPartition

from hsepay.relay.pacing import is_behind

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def records(*offsets):
    return [SimpleNamespace(offset=o) for o in offsets]


def test_a_batch_that_ends_at_the_high_watermark_is_caught_up():
    assert not is_behind({A: records(7, 8, 9)}, {A: 10}.get)


def test_one_partition_with_records_after_the_batch_is_behind():
    assert is_behind({A: records(9), B: records(3)}, {A: 10, B: 900}.get)


def test_an_empty_fetch_or_an_unknown_high_watermark_is_not_behind():
    assert not is_behind({}, {}.get)
    assert not is_behind({A: records(3)}, {}.get)
