from __future__ import annotations

import pytest

from broker import zk_layout as zl
from proto.errors import InvalidRequestError


def test_round_trips() -> None:
    reg = zl.BrokerRegistration(3, "10.0.0.3", 9092, "r1", 1234)
    assert zl.BrokerRegistration.decode(3, reg.encode()) == reg
    ta = zl.TopicAssignment("abc", {0: [1, 2], 1: [2, 3]})
    assert zl.TopicAssignment.decode("t", ta.encode()) == ta
    st = zl.PartitionState(leader=2, leader_epoch=5, isr=[2, 3], controller_epoch=1)
    assert zl.PartitionState.decode("/x", st.encode()) == st
    assert zl.decode_topic_config("t", zl.encode_topic_config({"retention.ms": "5"})) == {
        "retention.ms": "5"
    }


def test_payloads_are_kafka_like_json() -> None:
    reg = zl.BrokerRegistration(1, "h", 9092, None, 1)
    assert b'"endpoints":["PLAINTEXT://h:9092"]' in reg.encode()
    assert zl.partition_state_path("t", 0) == "/brokers/topics/t/partitions/0/state"


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"host": 1}'])
def test_corrupt_payloads_raise_typed_error(data: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="/brokers/ids/1"):
        zl.BrokerRegistration.decode(1, data)
