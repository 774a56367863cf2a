"""Hypothesis strategies for the protocol tests, derived from the messages' type hints.

``strategy_for(hint)`` mirrors what ``proto.codec`` can encode: ints within int64, any
unicode string, bytes, optionals, lists, ``tuple[X, ...]``, dicts and nested dataclasses.
A ``bytes | FileRecords`` leaf is plain bytes unless a FileRecords strategy is given.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

from hypothesis import strategies as st

from proto.codec import FileRecords
from proto.messages import REQUEST_TYPES, Request, Response

__all__ = [
    "INT64",
    "all_requests",
    "chunked",
    "msgpack_values",
    "request_classes",
    "response_classes",
    "split_points",
    "strategy_for",
]

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
)

# Anything msgpack can carry: what a confused or hostile peer might send.
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.none(), st.booleans(), INT64, st.text(max_size=6), st.binary(max_size=6)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=16,
)


def strategy_for(
    hint: Any, file_records: st.SearchStrategy[FileRecords] | None = None
) -> st.SearchStrategy[Any]:
    """Values of the type ``hint``, as the codec declares it."""
    origin = get_origin(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return INT64
    if hint is float:
        return st.floats(allow_nan=False)
    if hint is str:
        return st.text(max_size=16)
    if hint is bytes:
        return st.binary(max_size=32)
    if origin is Union or origin is types.UnionType:
        args = get_args(hint)
        members = [a for a in args if a is not type(None) and a is not FileRecords]
        if len(members) != 1:
            raise TypeError(f"no strategy for {hint}")
        inner = strategy_for(members[0], file_records)
        if FileRecords in args and file_records is not None:
            inner = st.one_of(inner, file_records)
        return st.one_of(st.none(), inner) if type(None) in args else inner
    if origin is list:
        return st.lists(strategy_for(get_args(hint)[0], file_records), max_size=3)
    if origin is tuple:
        item = strategy_for(get_args(hint)[0], file_records)
        return st.lists(item, max_size=3).map(tuple)
    if origin is dict:
        key, value = get_args(hint)
        return st.dictionaries(strategy_for(key), strategy_for(value, file_records), max_size=3)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = typing.get_type_hints(hint)
        fields = {
            f.name: strategy_for(hints[f.name], file_records) for f in dataclasses.fields(hint)
        }
        return st.builds(hint, **fields)
    raise TypeError(f"no strategy for {hint!r}")


def request_classes() -> list[type[Request]]:
    return sorted(REQUEST_TYPES.values(), key=lambda cls: cls.__name__)


def response_classes() -> list[type[Response]]:
    return sorted({cls.RESPONSE for cls in REQUEST_TYPES.values()}, key=lambda c: c.__name__)


all_requests: st.SearchStrategy[Request] = st.one_of([strategy_for(c) for c in request_classes()])


def split_points(size: int) -> st.SearchStrategy[list[int]]:
    """Sorted, distinct cut points strictly inside ``range(size)``: no empty chunk."""
    if size < 2:
        return st.just([])
    return st.lists(st.integers(1, size - 1), max_size=12, unique=True).map(sorted)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` cut at ``cuts``; never yields ``b""`` (which would mean end of stream)."""
    start = 0
    for cut in [*cuts, len(data)]:
        if cut > start:
            yield data[start:cut]
            start = cut
