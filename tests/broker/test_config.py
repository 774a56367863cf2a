from __future__ import annotations

import pytest

from broker.config import BrokerConfig, parse_hostport
from proto.errors import InvalidConfigurationError


def test_kafka_names_reach_the_log_defaults_and_the_broker() -> None:
    config = BrokerConfig.from_settings(
        3,
        {
            "log.segment.bytes": "1048576",
            "log.retention.hours": "1",
            "num.partitions": "6",
            "auto.create.topics.enable": "true",
        },
    )
    assert config.log.segment_bytes == 1048576
    assert config.log.retention_ms == 3_600_000
    assert config.num_partitions == 6 and config.auto_create_topics_enable


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"no.such.setting": "1"}, "no.such.setting"),
        ({"num.partitions": "many"}, "num.partitions"),
        ({"num.partitions": "0"}, "num.partitions"),
        ({"log.segment.bytes": "-5"}, "segment.bytes"),
        ({"delete.topic.enable": "perhaps"}, "delete.topic.enable"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=named.replace(".", r"\.")):
        BrokerConfig.from_settings(1, settings)


def test_parse_hostport() -> None:
    assert parse_hostport("h:1", 9) == ("h", 1)
    assert parse_hostport("h", 9092) == ("h", 9092)
    assert parse_hostport("[::1]:5", 9) == ("::1", 5)
    for bad in (":1", "h:x", "h:70000"):
        with pytest.raises(InvalidConfigurationError):
            parse_hostport(bad, 9)
