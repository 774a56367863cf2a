"""murmur2 against Kafka's vectors; keyed and sticky partitioning."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2  # type: ignore[import-untyped]

from client.partitioner import StickyPartitioner, keyed_partition, murmur2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Kafka's UtilsTest.testMurmur2 (Java's signed int results)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka_utils(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(
    ("key", "partition"),
    # kafka-python's test_murmur2_java_compatibility: 1000 partitions, from Java's client
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_keyed_partition_matches_java_client(key: bytes, partition: int) -> None:
    assert keyed_partition(key, 1000) == partition


def test_murmur2_non_ascii_and_long() -> None:
    assert -(2**31) <= murmur2(b"\xa4") < 2**31
    assert -(2**31) <= murmur2(b"\x81" * 1000) < 2**31


def test_sticky_stays_until_sealed_then_switches() -> None:
    sticky = StickyPartitioner(random.Random(7))
    first = sticky.current("t", 4, [0, 1, 2, 3])
    assert all(sticky.current("t", 4, [0, 1, 2, 3]) == first for _ in range(20))
    sticky.batch_sealed("t", (first + 1) % 4)  # not the sticky one: no switch
    assert sticky.current("t", 4, [0, 1, 2, 3]) == first
    sticky.batch_sealed("t", first)
    second = sticky.current("t", 4, [0, 1, 2, 3])
    assert second != first


def test_sticky_prefers_available_partitions() -> None:
    sticky = StickyPartitioner(random.Random(1))
    for _ in range(20):
        p = sticky.current("t", 5, [3])
        assert p == 3
        sticky.batch_sealed("t", p)
    # with nothing available it still picks some partition
    assert 0 <= StickyPartitioner().current("u", 3, []) < 3


@given(st.binary(max_size=300))
def test_murmur2_agrees_with_kafka_python(key: bytes) -> None:
    # kafka-python ports the Java client's murmur2 (unsigned result); ours is Java's signed.
    assert murmur2(key) & 0xFFFFFFFF == kafka_murmur2(key)
