"""``__consumer_offsets`` records: Java's hashCode and the group's partition, key and value
round trips, garbage, and loading a partition (tombstones, last write wins) vs a dict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.group.offsets_records import (
    DEFAULT_OFFSETS_TOPIC_PARTITIONS,
    GroupMetadataKey,
    OffsetCommitKey,
    OffsetCommitValue,
    OffsetsPartitionState,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_value,
    encode_key,
    encode_offset_commit_value,
    group_metadata_record,
    group_tombstone,
    java_string_hashcode,
    load_offsets_partition,
    offset_commit_record,
    offset_tombstone,
    partition_for,
)
from broker.group.records import GroupMetadataRecord, MemberRecord
from proto.batch import BatchBuilder, decode_records
from proto.codec import packb
from proto.errors import RemoteProtocolError
from tests.proto.strategies import INT64, msgpack_values

SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (string, Java's "s".hashCode(), Kafka's partition of 50), printed by a JVM (OpenJDK).
JAVA_HASHES = [
    ("", 0, 0),
    ("a", 97, 47),
    ("hello", 99162322, 22),
    ("hello world", 1794106052, 2),
    ("Aa", 2112, 12),
    ("BB", 2112, 12),
    ("my-group", -1906497762, 12),
    ("zzzzzzzzzz", -1580979136, 36),
    ("console-consumer-12345", 158455506, 6),
    ("grupp\u00e9", -1237286465, 15),
    ("\U0001f600", 1772899, 49),  # outside the BMP: two UTF-16 surrogates
    ("polygenelubricants", -(2**31), 0),  # Integer.MIN_VALUE: Kafka's Utils.abs gives 0
]


@pytest.mark.parametrize(("s", "java_hash", "partition"), JAVA_HASHES)
def test_java_string_hashcode_and_kafkas_partition(s: str, java_hash: int, partition: int) -> None:
    assert java_string_hashcode(s) == java_hash
    assert partition_for(s) == partition
    assert DEFAULT_OFFSETS_TOPIC_PARTITIONS == 50


@given(s=st.text(), n=st.integers(1, 1000))
def test_partition_for_is_in_range_and_hash_is_int32(s: str, n: int) -> None:
    assert -(2**31) <= java_string_hashcode(s) < 2**31
    assert 0 <= partition_for(s, n) < n


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        partition_for("g", 0)


# --- keys and values --------------------------------------------------------------------

names = st.text(max_size=8)
offset_keys = st.builds(OffsetCommitKey, names, names, st.integers(0, 2**31 - 1))
group_keys = st.builds(GroupMetadataKey, names)
offset_values = st.builds(OffsetCommitValue, INT64, INT64, st.text(max_size=12), INT64)


@st.composite
def group_records(draw: st.DrawFn, group_id: st.SearchStrategy[str] = names) -> GroupMetadataRecord:
    ids = draw(st.lists(st.text(min_size=1, max_size=6), max_size=3, unique=True))
    members = tuple(
        MemberRecord(
            member_id=mid,
            group_instance_id=draw(st.none() | names),
            client_id=draw(names),
            client_host=draw(names),
            rebalance_timeout_ms=draw(st.integers(0, 10**6)),
            session_timeout_ms=draw(st.integers(0, 10**6)),
            subscription=draw(st.binary(max_size=8)),
            assignment=draw(st.binary(max_size=8)),
        )
        for mid in ids
    )
    return GroupMetadataRecord(
        group_id=draw(group_id),
        protocol_type=draw(st.none() | st.just("consumer")),
        generation=draw(st.integers(0, 100)),
        protocol="range" if members else draw(st.none() | st.just("range")),
        leader=draw(st.sampled_from(ids)) if ids else None,
        current_state_timestamp_ms=draw(st.integers(0, 2**41)),
        members=members,
    )


@given(key=offset_keys | group_keys)
def test_keys_round_trip_to_the_same_bytes(key: OffsetCommitKey | GroupMetadataKey) -> None:
    data = encode_key(key)
    assert decode_key(data) == key
    assert encode_key(key) == data  # compaction compares key bytes


def test_offset_and_group_keys_of_one_name_differ() -> None:
    assert encode_key(GroupMetadataKey("g")) != encode_key(OffsetCommitKey("g", "", 0))
    assert encode_key(OffsetCommitKey("g", "t", 0))[:2] == packb([1, "g", "t", 0])[:2]
    # key version 0 (older Kafka) is an offset commit key too; unknown versions are skipped
    assert decode_key(packb([0, "g", "t", 3])) == OffsetCommitKey("g", "t", 3)
    assert decode_key(packb([3, "anything", "new"])) is None


@given(value=offset_values)
def test_offset_commit_values_round_trip(value: OffsetCommitValue) -> None:
    assert decode_offset_commit_value(encode_offset_commit_value(value)) == value


def test_a_newer_offset_value_is_read_and_an_older_one_refused() -> None:
    newer = packb([4, 10, 2, "meta", 1234, "a field from the future"])
    assert decode_offset_commit_value(newer) == OffsetCommitValue(10, 2, "meta", 1234)
    with pytest.raises(RemoteProtocolError):
        decode_offset_commit_value(packb([2, 10, 2, "meta", 1234]))


@given(record=group_records())
def test_group_metadata_values_round_trip(record: GroupMetadataRecord) -> None:
    assert decode_group_metadata_value(encode_group_metadata_value(record)) == record


@pytest.mark.parametrize(
    "key",
    [
        packb([1, "g", "t"]),
        packb([1, "g", "t", "0"]),
        packb([1, "g", "t", True]),
        packb([2, 5]),
        packb([2, "g", "extra"]),
        packb([-1, "g"]),
        packb([]),
        packb({"version": 1}),
        packb("g"),
        b"\xc1",
    ],
)
def test_malformed_keys_raise_remote_protocol_error(key: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_key(key)


@SLOW
@given(value=msgpack_values | st.binary(max_size=40))
def test_garbage_keys_and_values_raise_remote_protocol_error_only(value: Any) -> None:
    data = value if isinstance(value, bytes) else packb(value)
    decoders: list[tuple[Callable[[bytes], object], tuple[type, ...]]] = [
        (decode_key, (OffsetCommitKey, GroupMetadataKey, type(None))),
        (decode_offset_commit_value, (OffsetCommitValue,)),
        (decode_group_metadata_value, (GroupMetadataRecord,)),
    ]
    for decode, types in decoders:
        try:
            decoded = decode(data)
        except RemoteProtocolError:
            continue
        assert isinstance(decoded, types)


# --- loading a partition ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rec:
    key: bytes | None
    value: bytes | None


GROUPS = st.sampled_from(["g1", "g2", "g3"])
TOPICS = st.sampled_from(["t", "u"])

# One step written to the partition: what it does to the model, and the record itself.
commit_op = st.tuples(st.just("commit"), GROUPS, TOPICS, st.integers(0, 2), offset_values)
delete_offset_op = st.tuples(st.just("delete_offset"), GROUPS, TOPICS, st.integers(0, 2))
store_group_op = st.tuples(
    st.just("store_group"), GROUPS.flatmap(lambda g: group_records(st.just(g)))
)
delete_group_op = st.tuples(st.just("delete_group"), GROUPS)
ops = st.lists(st.one_of(commit_op, delete_offset_op, store_group_op, delete_group_op), max_size=40)


@SLOW
@given(steps=ops)
def test_loading_matches_a_last_write_wins_dict(steps: list[tuple[Any, ...]]) -> None:
    records: list[Rec] = []
    groups: dict[str, GroupMetadataRecord] = {}
    offsets: dict[tuple[str, str, int], OffsetCommitValue] = {}
    for op, *args in steps:
        if op == "commit":
            group, topic, partition, value = args
            offsets[(group, topic, partition)] = value
            records.append(Rec(*offset_commit_record(group, topic, partition, value)))
        elif op == "delete_offset":
            group, topic, partition = args
            offsets.pop((group, topic, partition), None)
            records.append(Rec(*offset_tombstone(group, topic, partition)))
        elif op == "store_group":
            (record,) = args
            groups[record.group_id] = record
            records.append(Rec(*group_metadata_record(record)))
        else:
            (group,) = args
            groups.pop(group, None)
            records.append(Rec(*group_tombstone(group)))
    state = load_offsets_partition(records)
    assert state.groups == groups
    assert state.offsets == offsets
    for group in ("g1", "g2", "g3"):
        assert state.group_offsets(group) == {
            (t, p): v for (g, t, p), v in offsets.items() if g == group
        }
    # compaction keeps the last record per key: loading what it leaves gives the same state
    last: dict[bytes, Rec] = {}
    for rec in records:
        assert rec.key is not None
        last.pop(rec.key, None)
        last[rec.key] = rec
    compacted = load_offsets_partition(last.values())
    assert (compacted.groups, compacted.offsets) == (groups, offsets)


def test_tombstones_apply_in_order_and_a_later_write_revives_the_key() -> None:
    v1, v2 = OffsetCommitValue(5, 0, "", 1), OffsetCommitValue(9, 1, "x", 2)
    records = [
        Rec(*offset_commit_record("g", "t", 0, v1)),
        Rec(*offset_tombstone("g", "t", 0)),
        Rec(*offset_commit_record("g", "t", 1, v1)),
        Rec(*offset_commit_record("g", "t", 0, v2)),
        Rec(*offset_tombstone("g", "t", 1)),
        Rec(*group_tombstone("never-stored")),  # a tombstone for nothing is harmless
    ]
    state = load_offsets_partition(records)
    assert state.offsets == {("g", "t", 0): v2}
    assert state.groups == {}


def test_a_group_tombstone_leaves_its_offsets_to_their_own_tombstones() -> None:
    group = GroupMetadataRecord("g", "consumer", 3, None, None, 10, ())
    value = OffsetCommitValue(7)
    state = load_offsets_partition(
        [
            Rec(*group_metadata_record(group)),
            Rec(*offset_commit_record("g", "t", 0, value)),
            Rec(*group_tombstone("g")),
        ]
    )
    assert state.groups == {} and state.offsets == {("g", "t", 0): value}


def test_loading_log_records_read_back_from_a_batch() -> None:
    group = GroupMetadataRecord("g", "consumer", 1, None, None, 10, ())
    builder = BatchBuilder()
    for key, value in [
        group_metadata_record(group),
        offset_commit_record("g", "t", 0, OffsetCommitValue(3)),
        offset_tombstone("g", "t", 0),
        offset_commit_record("g", "t", 1, OffsetCommitValue(4, 2, "m", 99)),
    ]:
        builder.append(value, key=key, timestamp_ms=1)
    state = load_offsets_partition(decode_records(builder.build()))
    assert state.groups == {"g": group}
    assert state.offsets == {("g", "t", 1): OffsetCommitValue(4, 2, "m", 99)}


def test_unknown_key_versions_are_skipped_and_bad_records_refused() -> None:
    state = OffsetsPartitionState()
    state.apply(packb([7, "future-kind"]), b"\xc1")
    assert state.skipped == 1 and state.groups == {} and state.offsets == {}
    with pytest.raises(RemoteProtocolError, match="without a key"):
        state.apply(None, b"")
    other = GroupMetadataRecord("other", None, 0, None, None, 0, ())
    with pytest.raises(RemoteProtocolError, match="under the key"):
        state.apply(encode_key(GroupMetadataKey("g")), encode_group_metadata_value(other))
    with pytest.raises(RemoteProtocolError):
        state.apply(encode_key(OffsetCommitKey("g", "t", 0)), packb([3, "not an offset", 0, "", 0]))
