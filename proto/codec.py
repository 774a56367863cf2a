"""Typed message values <-> msgpack, with shape checking. Sans-IO, pure functions.

A message is a frozen dataclass. On the wire it is a msgpack array of its fields in
declaration order (nested dataclasses are nested arrays), so names cost no bytes.
``to_wire``/``from_wire`` are compiled once per class from its type hints; anything that
does not match the declared shape raises ``RemoteProtocolError`` and nothing else.

``FileRecords`` lets a server describe "these bytes of a segment file go here" inside a
response; ``encode_segments`` then yields the frame as byte chunks and file slices, so the
I/O layer can ``sendfile`` stored batches without copying them through Python.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, Union, get_args, get_origin

import msgpack

from proto.errors import RemoteProtocolError

__all__ = [
    "FileRecords",
    "Segment",
    "encode_segments",
    "from_wire",
    "packb",
    "segments_size",
    "to_wire",
    "unpackb",
]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class FileRecords:
    """``size`` bytes of an open file descriptor, starting at ``position``."""

    fd: int
    position: int
    size: int


Segment = bytes | FileRecords

Converter = Callable[[Any], Any]


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode one msgpack object; any decoding failure is a RemoteProtocolError."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc


def _fail(expected: str, value: Any) -> RemoteProtocolError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return RemoteProtocolError(f"expected {expected}, got {type(value).__name__} {shown}")


def _decoder_for(tp: Any) -> Converter:
    origin = get_origin(tp)
    if tp is int:

        def dec_int(v: Any) -> int:
            if type(v) is not int:
                raise _fail("int", v)
            return v

        return dec_int
    if tp is bool:

        def dec_bool(v: Any) -> bool:
            if type(v) is not bool:
                raise _fail("bool", v)
            return v

        return dec_bool
    if tp is float:

        def dec_float(v: Any) -> float:
            if type(v) is float or type(v) is int:
                return float(v)
            raise _fail("float", v)

        return dec_float
    if tp is str:

        def dec_str(v: Any) -> str:
            if type(v) is not str:
                raise _fail("str", v)
            return v

        return dec_str
    if tp is bytes:

        def dec_bytes(v: Any) -> bytes:
            if type(v) is not bytes:
                raise _fail("bytes", v)
            return v

        return dec_bytes
    if tp is Any:
        return lambda v: v
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(args) != len(get_args(tp))
        # bytes | FileRecords decodes as bytes: a file slice only exists on the sending side.
        args = [a for a in args if a is not FileRecords]
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp}")
        inner = _decoder_for(args[0])
        if not nullable:
            return inner

        def dec_optional(v: Any) -> Any:
            return None if v is None else inner(v)

        return dec_optional
    if origin is list or origin is tuple:
        seq_args = get_args(tp)
        if origin is tuple and not (len(seq_args) == 2 and seq_args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] is supported, not {tp}")
        item = _decoder_for(seq_args[0])
        make: Callable[[Any], Any] = list if origin is list else tuple

        def dec_seq(v: Any) -> Any:
            if type(v) is not list:
                raise _fail("array", v)
            return make(item(x) for x in v)

        return dec_seq
    if origin is dict:
        kt, vt = get_args(tp)
        kdec, vdec = _decoder_for(kt), _decoder_for(vt)

        def dec_map(v: Any) -> Any:
            if type(v) is not dict:
                raise _fail("map", v)
            return {kdec(k): vdec(x) for k, x in v.items()}

        return dec_map
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return lambda v: from_wire(tp, v)
    raise TypeError(f"unsupported field type {tp!r}")


def _encoder_for(tp: Any) -> Converter | None:
    """None means the value goes to msgpack as it is."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        encs = [_encoder_for(a) for a in get_args(tp) if a not in (type(None), FileRecords)]
        inner = next((e for e in encs if e is not None), None)
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if origin is list or origin is tuple:
        item = _encoder_for(get_args(tp)[0])
        if item is None:
            return list if origin is tuple else None
        return lambda v: [item(x) for x in v]
    if origin is dict:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not FileRecords:
        return to_wire
    return None


class _Plan:
    __slots__ = ("arity", "decoders", "encoders", "names")

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        self.names = [f.name for f in fields]
        self.arity = len(fields)
        self.decoders = [_decoder_for(hints[f.name]) for f in fields]
        self.encoders = [_encoder_for(hints[f.name]) for f in fields]


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(cls)
    return plan


def to_wire(obj: Any) -> list[Any]:
    """A message dataclass as nested lists, ready for msgpack."""
    plan = _plan(type(obj))
    out = []
    for name, enc in zip(plan.names, plan.encoders, strict=True):
        value = getattr(obj, name)
        out.append(value if enc is None or value is None else enc(value))
    return out


def from_wire(cls: type[T], data: Any) -> T:
    """Build ``cls`` from nested lists; a shape mismatch raises RemoteProtocolError."""
    plan = _plan(cls)
    if type(data) is not list:
        raise _fail(f"array for {cls.__name__}", data)
    if len(data) != plan.arity:
        raise RemoteProtocolError(
            f"{cls.__name__} has {plan.arity} fields, got an array of {len(data)}"
        )
    try:
        return cls(*[dec(v) for dec, v in zip(plan.decoders, data, strict=True)])
    except RemoteProtocolError:
        raise
    except (TypeError, ValueError) as exc:  # __post_init__ validation
        raise RemoteProtocolError(f"invalid {cls.__name__}: {exc}") from exc


_BIN32 = struct.Struct(">BI")


def encode_segments(obj: Any) -> list[Segment]:
    """msgpack-encode ``obj`` (plain nested lists) where some leaves are FileRecords.

    Each FileRecords becomes a msgpack bin32 header followed by the file slice itself, so
    the receiver decodes it as ordinary bytes.
    """
    out: list[Segment] = []
    buf = bytearray()
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def walk(v: Any) -> None:
        if type(v) is FileRecords:
            buf.extend(_BIN32.pack(0xC6, v.size))
            out.append(bytes(buf))
            buf.clear()
            out.append(v)
        elif type(v) is list:
            if not any(type(x) is FileRecords or type(x) is list for x in v):
                buf.extend(packer.pack(v))
                return
            buf.extend(packer.pack_array_header(len(v)))
            for x in v:
                walk(x)
        else:
            buf.extend(packer.pack(v))

    walk(obj)
    if buf:
        out.append(bytes(buf))
    return out


def segments_size(segments: list[Segment]) -> int:
    return sum(s.size if isinstance(s, FileRecords) else len(s) for s in segments)
