"""Record batches: build/decode round trips, offset patching, corruption and garbage."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.batch import (
    BATCH_OVERHEAD,
    CODEC_NONE,
    CODEC_ZSTD,
    MAGIC,
    BatchBuilder,
    BatchHeader,
    Record,
    build_raw,
    decode_records,
    iter_batches,
    read_header,
    records_of,
    set_base_offset,
    set_leader_epoch,
    validate_batch,
)
from proto.errors import CorruptRecordError, RemoteProtocolError
from tests.proto.strategies import INT64, msgpack_values

SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LENGTH_BYTES = range(8, 12)
MAGIC_BYTE = 16
CRC_COVERED_FROM = 17  # the CRC field itself, then everything it covers (21..end)

codecs = st.sampled_from([CODEC_NONE, CODEC_ZSTD])
optional_bytes = st.none() | st.binary(max_size=40)
headers_st = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3)
timestamps = st.integers(-(2**40), 2**40)


@st.composite
def record_inputs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "value": draw(optional_bytes),
        "key": draw(optional_bytes),
        "headers": draw(headers_st),
        "timestamp_ms": draw(timestamps),
    }


record_lists = st.lists(record_inputs(), min_size=1, max_size=12)


def build(records: list[dict[str, Any]], codec: int, **producer: int) -> bytes:
    builder = BatchBuilder(codec, **producer)
    for i, record in enumerate(records):
        assert builder.append(**record) == i
    assert builder.count == len(records)
    return builder.build()


def assert_well_typed(record: Record) -> None:
    assert type(record.offset) is int
    assert type(record.timestamp) is int
    assert record.key is None or type(record.key) is bytes
    assert record.value is None or type(record.value) is bytes
    assert type(record.headers) is list
    for name, value in record.headers:
        assert type(name) is str
        assert type(value) is bytes


# --- round trips ------------------------------------------------------------------------


@SLOW
@given(
    records=record_lists,
    codec=codecs,
    producer_id=INT64,
    producer_epoch=st.integers(-(2**15), 2**15 - 1),
    base_sequence=st.integers(-(2**31), 2**31 - 1),
)
def test_builder_round_trip(
    records: list[dict[str, Any]],
    codec: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
) -> None:
    raw = build(
        records,
        codec,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    h = validate_batch(raw)
    assert h == read_header(raw)
    assert h.size == len(raw)
    assert h.magic == MAGIC
    assert h.codec == codec
    assert h.base_offset == 0
    assert h.record_count == len(records)
    assert h.last_offset_delta == len(records) - 1
    assert h.next_offset == len(records)
    assert h.first_timestamp == records[0]["timestamp_ms"]
    assert h.max_timestamp == max(r["timestamp_ms"] for r in records)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (
        producer_id,
        producer_epoch,
        base_sequence,
    )
    decoded = decode_records(raw)
    expected = [
        Record(i, r["timestamp_ms"], r["key"], r["value"], list(r["headers"]))
        for i, r in enumerate(records)
    ]
    assert decoded == expected
    for record in decoded:
        assert_well_typed(record)


def test_builder_defaults_and_limits() -> None:
    builder = BatchBuilder()
    with pytest.raises(ValueError):
        builder.build()
    builder.append(b"v")  # timestamp from the wall clock
    h = validate_batch(builder.build())
    assert h.first_timestamp == h.max_timestamp > 0
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (-1, -1, -1)
    with pytest.raises(ValueError):
        BatchBuilder(codec=3)


@given(records=st.lists(st.binary(min_size=100, max_size=200), min_size=20, max_size=30))
def test_zstd_shrinks_repetitive_batches(records: list[bytes]) -> None:
    payload = [{"value": records[0], "timestamp_ms": 0}] * len(records)
    assert len(build(payload, CODEC_ZSTD)) < len(build(payload, CODEC_NONE))


@SLOW
@given(
    records=record_lists,
    codec=codecs,
    base_offset=st.integers(0, 2**62),
    epoch=st.integers(-(2**31), 2**31 - 1),
)
def test_set_base_offset_and_leader_epoch_keep_crc_valid(
    records: list[dict[str, Any]], codec: int, base_offset: int, epoch: int
) -> None:
    buf = bytearray(build(records, codec))
    before = validate_batch(buf)
    set_base_offset(buf, base_offset)
    set_leader_epoch(buf, epoch)
    h = validate_batch(buf)
    assert h.crc == before.crc
    assert (h.base_offset, h.leader_epoch) == (base_offset, epoch)
    assert h.last_offset == base_offset + len(records) - 1
    assert [r.offset for r in decode_records(buf)] == [base_offset + i for i in range(len(records))]


@SLOW
@given(
    batches=st.lists(st.tuples(record_lists, codecs), min_size=1, max_size=5),
    epoch=st.integers(0, 1000),
)
def test_iter_batches_over_concatenation(
    batches: list[tuple[list[dict[str, Any]], int]], epoch: int
) -> None:
    built = [build(records, codec) for records, codec in batches]
    buf = bytearray(b"".join(built))
    # Patch each batch in place, as a broker assigning offsets does.
    next_offset = 100
    positions = []
    pos = 0
    for raw in built:
        set_base_offset(buf, next_offset, pos)
        set_leader_epoch(buf, epoch, pos)
        positions.append(pos)
        next_offset += read_header(raw).record_count
        pos += len(raw)
    seen = list(iter_batches(buf))
    assert [p for p, _ in seen] == positions
    assert [p for p, _ in iter_batches(bytes(buf), validate=False)] == positions
    assert all(h.leader_epoch == epoch for _, h in seen)
    offsets = [r.offset for r in records_of(buf)]
    assert offsets == list(range(100, next_offset))
    values = [r.value for r in records_of(memoryview(buf))]
    assert values == [r["value"] for records, _ in batches for r in records]
    for p, h in seen:
        assert validate_batch(buf, p) == h


def test_iter_batches_on_empty_buffer() -> None:
    assert list(iter_batches(b"")) == []
    assert list(records_of(b"")) == []


# --- corruption -------------------------------------------------------------------------


@st.composite
def built_batches(draw: st.DrawFn) -> bytes:
    return build(draw(st.lists(record_inputs(), min_size=1, max_size=4)), draw(codecs))


def _flip(buf: bytes, bit: int) -> bytearray:
    out = bytearray(buf)
    out[bit // 8] ^= 1 << (bit % 8)
    return out


@SLOW
@given(raw=built_batches(), data=st.data())
def test_any_flipped_bit_in_crc_region_magic_or_length_is_detected(
    raw: bytes, data: st.DataObject
) -> None:
    checked = [*LENGTH_BYTES, MAGIC_BYTE, *range(CRC_COVERED_FROM, len(raw))]
    byte = data.draw(st.sampled_from(checked))
    flipped = _flip(raw, byte * 8 + data.draw(st.integers(0, 7)))
    with pytest.raises(CorruptRecordError):
        validate_batch(flipped)
    with pytest.raises(CorruptRecordError):
        list(iter_batches(flipped))
    # Followed by a healthy batch, the damage is still found.
    with pytest.raises(CorruptRecordError):
        list(iter_batches(flipped + raw))


def test_every_bit_of_one_batch_is_covered() -> None:
    raw = build([{"value": b"v" * 10, "key": b"k", "headers": [("h", b"x")], "timestamp_ms": 5}], 0)
    unchecked = set(range(0, 8)) | set(range(12, 16))  # base offset and leader epoch
    for bit in range(len(raw) * 8):
        flipped = _flip(raw, bit)
        if bit // 8 in unchecked:
            validate_batch(flipped)  # patched by the broker: outside the CRC on purpose
        else:
            with pytest.raises(CorruptRecordError):
                validate_batch(flipped)


@SLOW
@given(raw=built_batches(), data=st.data())
def test_truncation_at_any_point_is_detected(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(CorruptRecordError):
        validate_batch(raw[:cut])
    if cut:
        with pytest.raises(CorruptRecordError):
            list(iter_batches(raw[:cut]))
    # A fetch cut at max bytes: the whole batches before the cut are still readable.
    assert [p for p, _ in iter_batches(raw + raw[:cut], validate=False)] == [0]


@given(raw=built_batches())
def test_wrong_magic_and_bad_counts_are_detected(raw: bytes) -> None:
    h = read_header(raw)
    for fields in (
        h._replace(magic=MAGIC + 1),
        h._replace(record_count=0, last_offset_delta=-1),
        h._replace(length=BATCH_OVERHEAD - 13),
    ):
        bad = _with_header(raw, fields)
        with pytest.raises(CorruptRecordError):
            validate_batch(bad)


def _with_header(raw: bytes, h: BatchHeader) -> bytes:
    return struct.pack(">qiibIhiqqqhii", *h) + raw[BATCH_OVERHEAD:]


def test_corrupt_record_error_is_a_protocol_error() -> None:
    assert issubclass(CorruptRecordError, RemoteProtocolError)
    assert CorruptRecordError.code == 2


# --- garbage ----------------------------------------------------------------------------


def _decode_or_corrupt(buf: bytes | bytearray) -> None:
    """Whatever decode_records returns for garbage must at least be well typed."""
    try:
        records = decode_records(buf)
    except CorruptRecordError:
        return
    for record in records:
        assert_well_typed(record)


@SLOW
@given(garbage=st.binary(max_size=300))
def test_garbage_bytes_raise_only_corrupt_record_error(garbage: bytes) -> None:
    with contextlib.suppress(CorruptRecordError):
        validate_batch(garbage)
    with contextlib.suppress(CorruptRecordError):
        list(iter_batches(garbage))
    list(iter_batches(garbage, validate=False))
    _decode_or_corrupt(garbage)


@SLOW
@given(
    header=st.tuples(
        INT64,
        st.integers(BATCH_OVERHEAD - 12, 400),
        st.integers(-(2**31), 2**31 - 1),
        st.just(MAGIC),
        st.integers(0, 2**32 - 1),
        st.integers(0, 7),
        st.integers(-1, 5),
        INT64,
        INT64,
        INT64,
        st.integers(-(2**15), 2**15 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 6),
    ),
    body=st.binary(max_size=300),
)
def test_plausible_headers_over_garbage(header: tuple[int, ...], body: bytes) -> None:
    buf = struct.pack(">qiibIhiqqqhii", *header) + body
    with contextlib.suppress(CorruptRecordError):
        validate_batch(buf)
    _decode_or_corrupt(buf)


@SLOW
@given(body=st.binary(max_size=300), count=st.integers(1, 5), codec=codecs)
def test_crc_valid_batch_of_garbage_records(body: bytes, count: int, codec: int) -> None:
    """A batch whose CRC is right but whose records are not: a buggy or hostile producer."""
    raw = build_raw(body, count, 0, 0, codec=codec)
    validate_batch(raw)
    _decode_or_corrupt(raw)


@SLOW
@given(items=st.lists(msgpack_values, min_size=1, max_size=5), codec=codecs)
def test_crc_valid_batch_of_random_msgpack_records(items: list[Any], codec: int) -> None:
    body = b"".join(msgpack.packb(item) for item in items)
    if codec == CODEC_ZSTD:
        body = zstandard.ZstdCompressor().compress(body)
    raw = build_raw(body, len(items), 0, 0, codec=codec)
    validate_batch(raw)
    _decode_or_corrupt(raw)


@pytest.mark.parametrize(
    "record",
    [
        [0.5, 0, None, None, []],
        [0, 0.5, None, None, []],
        [True, 0, None, None, []],
        [0, 0, 5, None, []],
        [0, 0, None, "text", []],
        [0, 0, None, None, None],
        [0, 0, None, None, [["h", 1]]],
        [0, 0, None, None, [[b"h", b"v"]]],
        [0, 0, None, None, [["h", b"v", b"w"]]],
        [0, 0, None, None],
        {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5},
        "abcde",
    ],
)
def test_records_of_the_wrong_shape_are_corrupt(record: Any) -> None:
    raw = build_raw(msgpack.packb(record), 1, 0, 0)
    with pytest.raises(CorruptRecordError):
        decode_records(raw)


def test_zstd_frame_claiming_a_huge_content_size_is_corrupt() -> None:
    """A decompression bomb header must not make decode_records allocate terabytes."""
    frame_header = bytes.fromhex("28b52ffd") + bytes([0b11100000]) + struct.pack("<Q", 1 << 40)
    for body in (frame_header, frame_header + b"\x01\x00\x00"):
        raw = build_raw(body, 1, 0, 0, codec=CODEC_ZSTD)
        validate_batch(raw)
        with pytest.raises(CorruptRecordError):
            decode_records(raw)


def test_zstd_garbage_is_corrupt() -> None:
    raw = build_raw(b"not zstd at all", 1, 0, 0, codec=CODEC_ZSTD)
    with pytest.raises(CorruptRecordError):
        decode_records(raw)


def test_record_count_must_match_records() -> None:
    one = msgpack.packb([0, 0, None, b"v", []])
    with pytest.raises(CorruptRecordError):
        decode_records(build_raw(one, 2, 0, 0))
    with pytest.raises(CorruptRecordError):
        decode_records(build_raw(one + one, 1, 0, 0))
