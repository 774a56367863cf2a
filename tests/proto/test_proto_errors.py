"""The one registry of wire error codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import errors
from proto.errors import (
    NONE,
    BrokerResponseError,
    ClientError,
    MinibrokerError,
    RemoteProtocolError,
    error_name,
    for_code,
    raise_for_code,
)
from tests.proto.strategies import INT64

REGISTERED = dict(errors._REGISTRY)


def _all_subclasses(cls: type[BrokerResponseError]) -> set[type[BrokerResponseError]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_all_subclasses(sub)}
    return out


def test_registry_is_not_empty_and_has_no_success_code() -> None:
    assert len(REGISTERED) > 40
    assert NONE not in REGISTERED


@pytest.mark.parametrize("code", sorted(REGISTERED))
def test_each_code_maps_to_its_own_class(code: int) -> None:
    cls = for_code(code)
    assert cls is REGISTERED[code]
    assert cls.code == code
    assert issubclass(cls, BrokerResponseError)
    assert error_name(code) == cls.name
    assert cls.name.isupper()
    assert isinstance(cls.retriable, bool)
    with pytest.raises(cls) as info:
        raise_for_code(code, "detail")
    assert info.value.message == "detail"
    assert cls.name in str(info.value)


def test_codes_classes_and_names_are_distinct() -> None:
    classes = list(REGISTERED.values())
    assert len(set(classes)) == len(classes)
    assert len({c.name for c in classes}) == len(classes)


def test_every_error_class_in_the_module_is_registered() -> None:
    defined = {
        c for c in _all_subclasses(BrokerResponseError) if getattr(errors, c.__name__, None) is c
    }
    assert defined == set(REGISTERED.values())


@given(code=INT64.filter(lambda c: c not in REGISTERED and c != NONE))
def test_unknown_code_is_unknown_server_error(code: int) -> None:
    cls = for_code(code)
    assert cls is errors.UnknownServerError
    assert cls.code == -1
    assert error_name(code) == "UNKNOWN_SERVER_ERROR"
    with pytest.raises(errors.UnknownServerError):
        raise_for_code(code)


@given(message=st.none() | st.text())
def test_raise_for_code_zero_does_nothing(message: str | None) -> None:
    raise_for_code(0, message)
    raise_for_code(NONE)
    assert error_name(NONE) == "NONE"


def test_hierarchy() -> None:
    assert issubclass(RemoteProtocolError, MinibrokerError)
    assert issubclass(ClientError, MinibrokerError)
    assert issubclass(BrokerResponseError, MinibrokerError)
    assert issubclass(for_code(2), RemoteProtocolError)  # CORRUPT_MESSAGE
    for cls in (errors.ConnectionFailedError, errors.RequestTimedOutError):
        assert issubclass(cls, ClientError)
        assert not issubclass(cls, BrokerResponseError)
    assert for_code(-101) is errors.NoNodeError  # ZooKeeper's codes live below Kafka's -1


def test_registering_a_code_twice_fails() -> None:
    with pytest.raises(ValueError):

        @errors.register(6, "DUPLICATE")
        class Duplicate(BrokerResponseError):
            pass

    assert for_code(6) is errors.NotLeaderForPartitionError
