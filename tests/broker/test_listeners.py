"""Kafka's listeners / advertised.listeners / inter.broker.listener.name: parsing, the
checks between them, and what a broker registers."""

from __future__ import annotations

import pytest

from broker import zk_layout as zl
from broker.cli import build_parser
from broker.commands import config_from_args
from broker.config import BrokerConfig
from broker.listeners import Endpoint, ListenerPlan, parse_endpoint, parse_endpoints
from proto.errors import InvalidConfigurationError, InvalidRequestError

DOCKER_STYLE = {
    "listeners": "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092",
    "advertised.listeners": "INTERNAL://broker-1:9092,EXTERNAL://localhost:19092",
    "inter.broker.listener.name": "INTERNAL",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PLAINTEXT://127.0.0.1:9092", Endpoint("PLAINTEXT", "127.0.0.1", 9092)),
        ("internal://broker-1:9092", Endpoint("INTERNAL", "broker-1", 9092)),
        ("EXTERNAL://:19092", Endpoint("EXTERNAL", "", 19092)),
        (" REPLICATION_1://[::1]:0 ", Endpoint("REPLICATION_1", "::1", 0)),
        ("X://[fe80::1%eth0]:9", Endpoint("X", "fe80::1%eth0", 9)),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


def test_endpoint_prints_as_kafka_does() -> None:
    assert str(Endpoint("INTERNAL", "broker-1", 9092)) == "INTERNAL://broker-1:9092"
    assert str(Endpoint("V6", "::1", 9092)) == "V6://[::1]:9092"
    for e in (Endpoint("A", "h", 1), Endpoint("B", "::1", 2), Endpoint("C", "", 3)):
        assert parse_endpoint(str(e)) == e


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("broker-1:9092", "NAME://HOST:PORT"),
        ("INTERNAL://broker-1", "NAME://HOST:PORT"),
        ("INTERNAL://broker-1:port", "NAME://HOST:PORT"),
        ("://broker-1:9092", "listener name"),
        ("IN.TERNAL://broker-1:9092", "listener name"),
        ("INTERNAL://broker-1:70000", "port out of range"),
        ("INTERNAL://::1:9092", "NAME://HOST:PORT"),
    ],
)
def test_bad_endpoints_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=words):
        parse_endpoint(text, "listeners")


def test_listener_names_must_be_unique() -> None:
    with pytest.raises(InvalidConfigurationError, match="repeat: A"):
        parse_endpoints("A://h:1,a://h:2", "listeners")
    with pytest.raises(InvalidConfigurationError, match="no listener"):
        parse_endpoints(" , ", "listeners")


def test_docker_style_settings() -> None:
    config = BrokerConfig.from_settings(1, DOCKER_STYLE)
    plan = config.listener_plan
    assert plan.bind == (
        Endpoint("INTERNAL", "0.0.0.0", 9092),
        Endpoint("EXTERNAL", "0.0.0.0", 19092),
    )
    assert plan.advertised == (
        Endpoint("INTERNAL", "broker-1", 9092),
        Endpoint("EXTERNAL", "localhost", 19092),
    )
    assert plan.inter_broker == "INTERNAL"
    bound = {"INTERNAL": ("0.0.0.0", 9092), "EXTERNAL": ("0.0.0.0", 19092)}
    endpoints = plan.advertise(bound, "container-7")
    assert plan.inter_broker_endpoint(endpoints) == Endpoint("INTERNAL", "broker-1", 9092)


def test_advertised_defaults_to_listeners_and_fills_ports_and_hosts() -> None:
    config = BrokerConfig.from_settings(1, {"listeners": "PLAINTEXT://127.0.0.1:0,OTHER://:0"})
    plan = config.listener_plan
    assert plan.inter_broker == "PLAINTEXT"  # Kafka's default listener name
    bound = {"PLAINTEXT": ("127.0.0.1", 4001), "OTHER": ("0.0.0.0", 4002)}
    assert plan.advertise(bound, "myhost") == (
        Endpoint("PLAINTEXT", "127.0.0.1", 4001),
        Endpoint("OTHER", "myhost", 4002),  # an empty host advertises the machine's name
    )


def test_single_listen_flag_behaves_as_before() -> None:
    """--listen/--advertise: one PLAINTEXT listener; what --advertise leaves out comes
    from the bound socket, the bound host included (as before listeners existed)."""
    plan = BrokerConfig(1, listen_host="0.0.0.0", listen_port=0).listener_plan
    assert plan.bind == (Endpoint("PLAINTEXT", "0.0.0.0", 0),)
    assert plan.inter_broker == "PLAINTEXT"
    assert plan.advertise({"PLAINTEXT": ("0.0.0.0", 5555)}, "myhost") == (
        Endpoint("PLAINTEXT", "0.0.0.0", 5555),
    )
    plan = BrokerConfig(1, listen_port=0, advertised_host="proxy").listener_plan
    assert plan.advertise({"PLAINTEXT": ("127.0.0.1", 5555)}, "h") == (
        Endpoint("PLAINTEXT", "proxy", 5555),
    )
    plan = BrokerConfig(1, advertised_host="proxy", advertised_port=7).listener_plan
    assert plan.advertise({"PLAINTEXT": ("127.0.0.1", 5555)}, "h") == (
        Endpoint("PLAINTEXT", "proxy", 7),
    )


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            {"listeners": "A://h:1", "advertised.listeners": "B://h:1"},
            "B is not one of listeners",
        ),
        ({"listeners": "A://0.0.0.0:1,B://h:2"}, "non-routable address 0.0.0.0"),
        (
            {"listeners": "A://h:1", "advertised.listeners": "A://[::]:1"},
            "non-routable address ::",
        ),
        ({"listeners": "A://h:1,B://h:2"}, "set inter.broker.listener.name"),
        (
            {"listeners": "A://h:1,B://h:2", "inter.broker.listener.name": "C"},
            "inter.broker.listener.name=C must be one of the advertised listeners",
        ),
        (
            {
                "listeners": "A://h:1,B://h:2",
                "advertised.listeners": "A://h:1",
                "inter.broker.listener.name": "B",
            },
            "inter.broker.listener.name=B",
        ),
        ({"listeners": "A://h:1,B://h:1"}, "B and A both bind h:1"),
        (
            {"listeners": "A://h:1", "listener.security.protocol.map": "A:SSL"},
            "only PLAINTEXT is supported",
        ),
        (
            {"listeners": "A://h:1", "listener.security.protocol.map": "B:PLAINTEXT"},
            "no protocol for listener A",
        ),
        ({"listener.security.protocol.map": "A"}, "is not NAME:PROTOCOL"),
        ({"inter.broker.listener.name": "INTERNAL"}, "must be one of the advertised"),
        ({"listeners": "INTERNAL:9092"}, "NAME://HOST:PORT"),
    ],
)
def test_inconsistent_listener_settings_are_refused(settings: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=words):
        BrokerConfig.from_settings(1, settings)


def test_protocol_map_of_plaintext_listeners_is_accepted() -> None:
    settings = dict(DOCKER_STYLE)
    settings["listener.security.protocol.map"] = "INTERNAL:PLAINTEXT,EXTERNAL:plaintext"
    assert BrokerConfig.from_settings(1, settings).listener_plan.inter_broker == "INTERNAL"


def test_advertised_listeners_with_the_default_listener() -> None:
    """Without listeners=, advertised.listeners describes the one PLAINTEXT listener."""
    config = BrokerConfig.from_settings(
        1, {"advertised.listeners": "PLAINTEXT://public:9092"}, listen_host="0.0.0.0"
    )
    plan = config.listener_plan
    assert plan.bind == (Endpoint("PLAINTEXT", "0.0.0.0", 9092),)
    assert plan.advertised == (Endpoint("PLAINTEXT", "public", 9092),)


def _args(*argv: str) -> BrokerConfig:
    args = build_parser().parse_args(["broker", "--id", "1", "--data-dir", "d", *argv])
    return config_from_args(args)


def test_command_line() -> None:
    sets = [x for k, v in DOCKER_STYLE.items() for x in ("--set", f"{k}={v}")]
    assert _args(*sets).listener_plan.inter_broker == "INTERNAL"
    plan = _args().listener_plan  # the old default: one listener on 127.0.0.1:9092
    assert plan.bind == (Endpoint("PLAINTEXT", "127.0.0.1", 9092),)
    plan = _args("--listen", "0.0.0.0:9000", "--advertise", "public").listener_plan
    assert plan.advertise({"PLAINTEXT": ("0.0.0.0", 9000)}, "h") == (
        Endpoint("PLAINTEXT", "public", 9000),
    )
    with pytest.raises(InvalidConfigurationError, match="listeners= and --listen"):
        _args("--listen", "0.0.0.0:9000", "--set", "listeners=A://h:1")
    with pytest.raises(InvalidConfigurationError, match="--advertise goes with --listen"):
        _args("--advertise", "h:1", "--set", "listeners=A://h:1")


def test_registration_carries_every_endpoint() -> None:
    endpoints = (Endpoint("INTERNAL", "broker-1", 9092), Endpoint("EXTERNAL", "localhost", 19092))
    reg = zl.BrokerRegistration(1, "broker-1", 9092, None, 5, endpoints)
    data = reg.encode()
    assert b'"endpoints":["INTERNAL://broker-1:9092","EXTERNAL://localhost:19092"]' in data
    assert b'"host":"broker-1","listener_security_protocol_map"' in data
    back = zl.BrokerRegistration.decode(1, data)
    assert back == reg
    assert back.endpoint("EXTERNAL") == Endpoint("EXTERNAL", "localhost", 19092)
    assert back.endpoint("PLAINTEXT") is None


def test_registration_without_endpoints_is_one_plaintext_listener() -> None:
    old = b'{"host":"h","port":9092,"rack":null,"timestamp":"1","version":4}'
    reg = zl.BrokerRegistration.decode(1, old)
    assert reg.endpoints == (Endpoint("PLAINTEXT", "h", 9092),)
    assert zl.BrokerRegistration(1, "h", 9092, None, 1) == reg


def test_registration_with_a_bad_endpoint_is_corrupt_metadata() -> None:
    data = b'{"host":"h","port":1,"timestamp":"1","endpoints":["nonsense"]}'
    with pytest.raises(InvalidRequestError, match="/brokers/ids/1"):
        zl.BrokerRegistration.decode(1, data)


def test_plan_is_a_value() -> None:
    a = ListenerPlan.single("h", 1)
    assert a == ListenerPlan.single("h", 1) and a != ListenerPlan.single("h", 2)
