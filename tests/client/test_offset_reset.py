"""The reset-offsets planner: Kafka's rule per scenario, clamping, and the time parsers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.offset_reset import (
    Clamped,
    InvalidOffsetResetError,
    PartitionOffsets,
    ResetScenario,
    ResetSpec,
    parse_datetime_ms,
    parse_duration_ms,
    plan_reset,
)
from client.types import TopicPartition

T0 = TopicPartition("t", 0)
T1 = TopicPartition("t", 1)
S = ResetScenario


def plan1(spec: ResetSpec, po: PartitionOffsets) -> int:
    return plan_reset(spec, {T0: po}).offsets[T0]


@pytest.mark.parametrize(
    ("spec", "po", "expected"),
    [
        (ResetSpec(S.TO_EARLIEST), PartitionOffsets(5, 20, 10), 5),
        (ResetSpec(S.TO_LATEST), PartitionOffsets(5, 20, 10), 20),
        (ResetSpec(S.TO_CURRENT), PartitionOffsets(5, 20, 10), 10),
        (ResetSpec(S.TO_CURRENT), PartitionOffsets(5, 20, None), 20),  # none committed: end
        (ResetSpec(S.SHIFT_BY, 3), PartitionOffsets(5, 20, 10), 13),
        (ResetSpec(S.SHIFT_BY, -3), PartitionOffsets(5, 20, 10), 7),
        (ResetSpec(S.TO_OFFSET, 12), PartitionOffsets(5, 20, None), 12),
        (ResetSpec(S.TO_DATETIME, 1000), PartitionOffsets(5, 20, 10, for_time=8), 8),
        (ResetSpec(S.TO_DATETIME, 1000), PartitionOffsets(5, 20, 10, for_time=None), 20),
        (ResetSpec(S.BY_DURATION, 1000), PartitionOffsets(5, 20, 10, for_time=-1), 20),
    ],
)
def test_each_scenario_follows_kafka(spec: ResetSpec, po: PartitionOffsets, expected: int) -> None:
    assert plan1(spec, po) == expected


def test_out_of_range_requests_are_clamped_and_reported() -> None:
    offsets = {T0: PartitionOffsets(5, 20, 18), T1: PartitionOffsets(5, 20, 6)}
    up = plan_reset(ResetSpec(S.SHIFT_BY, 10), offsets)
    assert up.offsets == {T0: 20, T1: 16}
    assert up.clamped == (Clamped(T0, 28, 20),)
    assert up.clamped[0].warning() == (
        "New offset (28) is higher than latest offset for topic partition t-0. "
        "Value will be set to 20"
    )
    down = plan_reset(ResetSpec(S.TO_OFFSET, 0), offsets)
    assert down.offsets == {T0: 5, T1: 5}
    assert down.clamped[0].warning().startswith("New offset (0) is lower than earliest offset")
    # a committed offset retention has overtaken is clamped too (Kafka would keep it)
    assert plan1(ResetSpec(S.TO_CURRENT), PartitionOffsets(5, 20, 2)) == 5


def test_rows_are_in_topic_partition_order() -> None:
    offsets = {
        TopicPartition("b", 0): PartitionOffsets(0, 1),
        T1: PartitionOffsets(0, 2),
        T0: PartitionOffsets(0, 3),
    }
    rows = plan_reset(ResetSpec(S.TO_LATEST), offsets).rows()
    assert rows == [(TopicPartition("b", 0), 1), (T0, 3), (T1, 2)]


def test_shift_without_committed_offset_is_a_clear_error() -> None:
    with pytest.raises(InvalidOffsetResetError, match="t-0 since there is no current committed"):
        plan_reset(ResetSpec(S.SHIFT_BY, 1), {T0: PartitionOffsets(0, 5)})


def test_inconsistent_log_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="log start 9 is after log end 3"):
        plan_reset(ResetSpec(S.TO_LATEST), {T0: PartitionOffsets(9, 3)})


bounds = st.tuples(st.integers(0, 10**12), st.integers(0, 10**6)).map(lambda t: (t[0], t[0] + t[1]))
maybe_offset = st.none() | st.integers(-(10**13), 10**13)


@st.composite
def partition_offsets(draw: st.DrawFn) -> PartitionOffsets:
    earliest, latest = draw(bounds)
    committed = draw(st.none() | st.integers(0, 10**13))
    for_time = draw(st.none() | st.just(-1) | st.integers(earliest, latest))
    return PartitionOffsets(earliest, latest, committed, for_time)


specs = st.builds(ResetSpec, st.sampled_from(list(ResetScenario)), st.integers(-(10**13), 10**13))


@given(
    specs,
    st.dictionaries(
        st.builds(TopicPartition, st.sampled_from("ab"), st.integers(0, 5)),
        partition_offsets(),
        max_size=8,
    ),
)
def test_new_offsets_always_lie_within_the_log(
    spec: ResetSpec, offsets: dict[TopicPartition, PartitionOffsets]
) -> None:
    if spec.scenario is S.SHIFT_BY and any(po.committed is None for po in offsets.values()):
        with pytest.raises(InvalidOffsetResetError):
            plan_reset(spec, offsets)
        return
    plan = plan_reset(spec, offsets)
    assert plan.offsets.keys() == offsets.keys()
    for tp, new in plan.offsets.items():
        po = offsets[tp]
        assert po.earliest <= new <= po.latest
    # only clamped partitions moved away from what was asked, and each says where it went
    for c in plan.clamped:
        assert plan.offsets[c.topic_partition] == c.applied != c.requested


@given(partition_offsets(), st.integers(-(10**6), 10**6))
def test_an_in_range_request_is_kept_exactly(po: PartitionOffsets, delta: int) -> None:
    target = po.earliest + abs(delta) % (po.latest - po.earliest + 1)
    plan = plan_reset(ResetSpec(S.TO_OFFSET, target), {T0: po})
    assert plan.offsets[T0] == target and plan.clamped == ()


# --- time parsing -------------------------------------------------------------------------


def test_datetime_with_zone_and_default_zone() -> None:
    expected = int(datetime(2024, 1, 31, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_datetime_ms("2024-01-31T12:00:00.000Z") == expected
    assert parse_datetime_ms("2024-01-31T14:00:00+02:00") == expected
    assert parse_datetime_ms("2024-01-31T12:00:00.250", default_tz=UTC) == expected + 250
    plus_one = timezone(timedelta(hours=1))
    assert parse_datetime_ms("2024-01-31T13:00:00", default_tz=plus_one) == expected
    spec = ResetSpec.to_datetime("2024-01-31T12:00:00Z")
    assert spec == ResetSpec(S.TO_DATETIME, expected) and spec.needs_timestamp_lookup


def test_datetime_without_zone_is_local_time() -> None:
    local = datetime(2024, 6, 1, 8, 30).astimezone()
    assert parse_datetime_ms("2024-06-01T08:30:00") == int(local.timestamp() * 1000)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01T00:00:00", "", "12:00"])
def test_bad_datetime_is_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidOffsetResetError, match="--to-datetime expects ISO 8601"):
        parse_datetime_ms(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("PT30M", 30 * 60_000),
        ("P1DT2H", 26 * 3_600_000),
        ("P2D", 2 * 86_400_000),
        ("PT0.5S", 500),
        ("PT1.25S", 1250),
        ("PT1.S", 1000),
        ("pt10s", 10_000),
        ("PT1H-5M", 55 * 60_000),
        ("-PT1M", -60_000),
        ("PT-0.5S", -500),
    ],
)
def test_durations_follow_java_duration_parse(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["P", "PT", "1H", "P1H", "PT1D", "P1DT", "PT.5S", "10m"])
def test_bad_duration_is_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidOffsetResetError, match="--by-duration expects an ISO 8601"):
        parse_duration_ms(text)


def test_by_duration_counts_back_from_now() -> None:
    spec = ResetSpec.by_duration("PT1M", now_ms=1_000_000)
    assert spec == ResetSpec(S.BY_DURATION, 940_000) and spec.needs_timestamp_lookup
    assert not ResetSpec(S.TO_LATEST).needs_timestamp_lookup
