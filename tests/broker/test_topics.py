from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.topics import assign_replicas, validate_topic_name
from proto.errors import (
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
)


@pytest.mark.parametrize("name", ["a", "orders", "my.topic_1-x", "A" * 249])
def test_legal_topic_names(name: str) -> None:
    validate_topic_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/x", "ü", "a:b"])
def test_illegal_topic_names(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        validate_topic_name(name)


@given(
    brokers=st.lists(st.integers(0, 50), min_size=1, max_size=7, unique=True),
    partitions=st.integers(1, 40),
    data=st.data(),
)
def test_assignment_is_valid_and_spread(
    brokers: list[int], partitions: int, data: st.DataObject
) -> None:
    rf = data.draw(st.integers(1, len(brokers)))
    seed = data.draw(st.integers(0, 2**32))
    out = assign_replicas(brokers, partitions, rf, rng=random.Random(seed))
    assert sorted(out) == list(range(partitions))
    for replicas in out.values():
        assert len(replicas) == rf
        assert len(set(replicas)) == rf  # no broker twice in one partition
        assert set(replicas) <= set(brokers)
    leaders = Counter(r[0] for r in out.values())
    # Leaders round-robin: no broker leads more than its fair share rounded up.
    assert max(leaders.values()) <= -(-partitions // len(brokers))


def test_replication_factor_above_live_brokers_is_a_clear_error() -> None:
    with pytest.raises(InvalidReplicationFactorError, match="larger than the 2 live"):
        assign_replicas([1, 2], 3, 3)


def test_bad_partition_count() -> None:
    with pytest.raises(InvalidPartitionsError):
        assign_replicas([1], 0, 1)
    with pytest.raises(InvalidReplicationFactorError):
        assign_replicas([1], 1, 0)
