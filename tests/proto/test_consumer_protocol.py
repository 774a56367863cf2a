"""The consumer protocol's subscription and assignment: round trips, the exact layout both
the client and the broker read, newer versions, and garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.codec import packb
from proto.consumer_protocol import (
    ConsumerProtocolAssignment,
    ConsumerProtocolSubscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from proto.errors import RemoteProtocolError
from tests.proto.strategies import msgpack_values

tp_st = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 2**31 - 1))


@given(
    topics=st.lists(st.text(max_size=8), max_size=4),
    owned=st.lists(tp_st, max_size=8, unique=True),
    user_data=st.binary(max_size=16),
    generation=st.integers(-1, 2**31 - 1),
)
def test_subscription_round_trip(
    topics: list[str], owned: list[tuple[str, int]], user_data: bytes, generation: int
) -> None:
    sub = ConsumerProtocolSubscription(tuple(topics), tuple(sorted(owned)), user_data, generation)
    assert decode_subscription(encode_subscription(sub)) == sub


@given(partitions=st.lists(tp_st, max_size=8, unique=True), user_data=st.binary(max_size=8))
def test_assignment_round_trip(partitions: list[tuple[str, int]], user_data: bytes) -> None:
    a = ConsumerProtocolAssignment(tuple(sorted(partitions)), user_data)
    assert decode_assignment(encode_assignment(a)) == a


def test_the_layout_is_versioned_arrays_with_partitions_grouped_by_topic() -> None:
    sub = ConsumerProtocolSubscription(("t1", "t0"), (("t1", 2), ("t0", 1), ("t1", 0)), b"u", 4)
    assert encode_subscription(sub) == packb(
        [0, ["t1", "t0"], [["t0", [1]], ["t1", [0, 2]]], b"u", 4]
    )
    assert encode_assignment(ConsumerProtocolAssignment((("t0", 3),))) == packb(
        [0, [["t0", [3]]], b""]
    )
    newer = packb([3, ["t0"], [], b"", -1, {"rack": "r1"}])
    assert decode_subscription(newer) == ConsumerProtocolSubscription(("t0",))
    assert decode_assignment(b"") == ConsumerProtocolAssignment(())


@given(msgpack_values)
def test_garbage_is_a_protocol_error_or_a_value(value: Any) -> None:
    data = packb(value)
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(RemoteProtocolError):  # anything else fails the test
            decode(data)


@pytest.mark.parametrize(
    "data", [b"\xc1", packb([]), packb([0, ["t"]]), packb([0, [1], [], b"", 0])]
)
def test_malformed_subscriptions_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_subscription(data)
