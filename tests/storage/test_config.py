"""LogConfig: defaults, parsing, validation errors, broker-level names."""

from __future__ import annotations

import dataclasses

import pytest

from broker.log import BROKER_LOG_CONFIGS, BROKER_TO_TOPIC_CONFIG, LogConfig
from broker.log.config import LONG_MAX
from proto.errors import InvalidConfigurationError


def test_defaults_are_kafkas() -> None:
    c = LogConfig()
    assert c.segment_bytes == 1 << 30
    assert c.segment_ms == c.retention_ms == 604_800_000
    assert c.segment_index_bytes == 10 << 20 and c.index_interval_bytes == 4096
    assert c.retention_bytes == -1 and c.flush_messages == c.flush_ms == LONG_MAX
    assert c.max_message_bytes == 1048588 and c.file_delete_delay_ms == 60000
    assert c.cleanup_policy == "delete" and c.message_timestamp_type == "CreateTime"


def test_from_props_overlays_a_base() -> None:
    base = LogConfig(retention_ms=5)
    c = LogConfig.from_props(
        {"segment.bytes": " 2048 ", "cleanup.policy": "delete, compact", "retention.bytes": "-1"},
        base,
    )
    assert c.segment_bytes == 2048 and c.retention_ms == 5
    assert c.cleanup_policy == "delete,compact" and c.delete_enabled
    assert LogConfig.from_props({"cleanup.policy": "compact"}).delete_enabled is False
    assert LogConfig.from_props({"message.timestamp.type": "LogAppendTime"}).log_append_time


def test_to_props_round_trips() -> None:
    c = LogConfig(segment_bytes=999, unclean_leader_election_enable=True)
    props = c.to_props()
    assert props["segment.bytes"] == "999"
    assert props["unclean.leader.election.enable"] == "true"
    assert set(props) == set(LogConfig.names())
    assert LogConfig.from_props(props) == c


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("segment.bytes", "abc", ["segment.bytes", "'abc'", "integer"]),
        ("segment.bytes", "13", ["segment.bytes", "'13'", ">= 14"]),
        ("retention.ms", "-2", ["retention.ms", ">= -1"]),
        ("flush.messages", "0", ["flush.messages", ">= 1"]),
        ("cleanup.policy", "forever", ["cleanup.policy", "'forever'", "compact"]),
        ("cleanup.policy", "", ["cleanup.policy"]),
        ("message.timestamp.type", "Now", ["message.timestamp.type", "LogAppendTime"]),
        ("unclean.leader.election.enable", "yes", ["unclean.leader.election.enable", "true"]),
        ("segment.byte", "1", ["unknown", "segment.byte"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(key: str, value: str, words: list[str]) -> None:
    with pytest.raises(InvalidConfigurationError) as excinfo:
        LogConfig.from_props({key: value})
    assert excinfo.value.code == 40
    for word in words:
        assert word in str(excinfo.value)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidConfigurationError):
        LogConfig(segment_bytes=0)
    with pytest.raises(InvalidConfigurationError):
        dataclasses.replace(LogConfig(), message_timestamp_type="x")


def test_broker_props() -> None:
    c = LogConfig.from_broker_props(
        {
            "broker.id": "1",  # not a log setting: ignored
            "log.retention.hours": "1",
            "log.roll.hours": "2",
            "log.segment.bytes": "1000",
            "message.max.bytes": "500",
            "log.flush.interval.messages": "10",
        }
    )
    assert c.retention_ms == 3_600_000 and c.segment_ms == 7_200_000
    assert c.segment_bytes == 1000 and c.max_message_bytes == 500 and c.flush_messages == 10
    # the finest unit wins, whatever the order
    finest = {"log.retention.ms": "5", "log.retention.minutes": "1", "log.retention.hours": "1"}
    assert LogConfig.from_broker_props(finest).retention_ms == 5
    assert LogConfig.from_broker_props(dict(reversed(finest.items()))).retention_ms == 5
    assert LogConfig.from_broker_props({"log.retention.hours": "-1"}).retention_ms == -1
    with pytest.raises(InvalidConfigurationError, match=r"log\.retention\.hours"):
        LogConfig.from_broker_props({"log.retention.hours": "x"})
    assert all(
        target.replace(".", "_") in LogConfig.__dataclass_fields__
        for target, _ in BROKER_LOG_CONFIGS.values()
    )
    assert BROKER_TO_TOPIC_CONFIG["log.retention.hours"] == "retention.ms"
