"""The group coordinator runtime's offsets and admin requests, in one trio run over a real
log and replica manager (the harness of test_group_coordinator.py): OffsetCommit's checks
and acks=all behaviour, OffsetFetch, OffsetDelete, DescribeGroups/ListGroups/DeleteGroups,
and offset retention under the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from broker.group.offsets_records import OFFSETS_TOPIC
from proto import group_messages as g
from proto.errors import (
    NONE,
    BrokerRequestTimedOutError,
    CoordinatorNotAvailableError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    NonEmptyGroupError,
    NotCoordinatorError,
    OffsetMetadataTooLargeError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)
from tests.broker.test_group_coordinator import (
    Harness,
    offsets_topic,
    stable_member,
    start_harness,
    stop_harness,
    topic,
    view_of,
)

MakeHarness = Callable[..., Awaitable[Harness]]

TOPICS = (topic("t", 2, 1, 0, (1,)), topic("u", 1, 1, 0, (1,)))


def commit_request(
    group: str,
    offsets: dict[tuple[str, int], int],
    generation: int = -1,
    member_id: str = "",
    metadata: str | None = None,
) -> g.OffsetCommitRequest:
    by_topic: dict[str, list[g.OffsetCommitPartition]] = {}
    for (t, p), offset in offsets.items():
        by_topic.setdefault(t, []).append(g.OffsetCommitPartition(p, offset, 4, metadata))
    topics = [g.OffsetCommitTopic(t, ps) for t, ps in by_topic.items()]
    return g.OffsetCommitRequest(group, topics, generation, member_id)


async def commit(h: Harness, req: g.OffsetCommitRequest) -> dict[tuple[str, int], int]:
    resp = await h.call(req)
    assert isinstance(resp, g.OffsetCommitResponse)
    return {(t.name, p.partition): p.error_code for t in resp.topics for p in t.partitions}


async def fetch(h: Harness, group: str) -> dict[tuple[str, int], int]:
    resp = await h.call(g.OffsetFetchRequest(group))
    assert isinstance(resp, g.OffsetFetchResponse) and resp.error_code == NONE
    return {(t.name, p.partition): p.committed_offset for t in resp.topics for p in t.partitions}


@pytest.fixture
async def make_harness(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[MakeHarness]:
    made: list[Harness] = []

    async def make(settings: dict[str, str] | None = None) -> Harness:
        made.append(await start_harness(tmp_path, nursery, settings))
        return made[-1]

    yield make
    for h in made:
        stop_harness(h)


async def harness(make: MakeHarness, *, isr: tuple[int, ...] = (1,), **settings: str) -> Harness:
    h = await make({k.replace("_", "."): v for k, v in settings.items()})
    await h.set_view(view_of(offsets_topic(isr=isr), *TOPICS))
    return h


# --- OffsetCommit / OffsetFetch ---------------------------------------------------------


async def test_a_commit_is_one_batch_and_fetched_once_replicated(make_harness: MakeHarness) -> None:
    h = await harness(make_harness, offset_metadata_max_bytes="8")
    j = await stable_member(h, "g")
    plog = h.offsets_log()
    before = plog.log_end_offset
    req = commit_request(
        "g", {("t", 0): 10, ("t", 1): 11, ("t", 9): 12}, j.generation_id, j.member_id, "12345678"
    )
    assert await commit(h, req) == {("t", 0): NONE, ("t", 1): NONE,
                                    ("t", 9): UnknownTopicOrPartitionError.code}  # fmt: skip
    assert [hd.record_count for hd in plog.headers_from(before)] == [2]  # one batch
    assert await fetch(h, "g") == {("t", 0): 10, ("t", 1): 11}
    resp = await h.call(
        g.OffsetFetchRequest("g", [g.OffsetFetchTopic("t", [0]), g.OffsetFetchTopic("u", [0])])
    )
    got = {(t.name, p.partition): (p.committed_offset, p.committed_leader_epoch, p.metadata)
           for t in resp.topics for p in t.partitions}  # fmt: skip
    assert got == {("t", 0): (10, 4, "12345678"), ("u", 0): (g.NO_OFFSET, -1, "")}
    too_long = commit_request("g", {("t", 0): 20}, j.generation_id, j.member_id, "123456789")
    assert await commit(h, too_long) == {("t", 0): OffsetMetadataTooLargeError.code}
    assert (await h.stored()).offsets[("g", "t", 0)].offset == 10


async def test_commit_generation_and_member_checks(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    j = await stable_member(h, "g")
    tp = {("t", 0): 1}
    # Generation -1 (a client without group management) while the group has members.
    assert await commit(h, commit_request("g", tp)) == {("t", 0): UnknownMemberIdError.code}
    stale = commit_request("g", tp, j.generation_id - 1, j.member_id)
    assert await commit(h, stale) == {("t", 0): IllegalGenerationError.code}
    # A generation of a group this coordinator does not know (Kafka: ILLEGAL_GENERATION).
    assert await commit(h, commit_request("x", tp, 3, "m")) == {
        ("t", 0): IllegalGenerationError.code
    }
    assert "x" not in h.runtime.partitions[0].groups
    # Generation -1 for an unknown group creates it Empty, without a protocol.
    assert await commit(h, commit_request("simple", tp)) == {("t", 0): NONE}
    listed = await h.call(g.ListGroupsRequest())
    assert [(x.group_id, x.protocol_type, x.group_state) for x in listed.groups] == [
        ("g", "consumer", "Stable"),
        ("simple", "", "Empty"),
    ]


async def test_a_commit_the_isr_does_not_replicate_times_out(
    make_harness: MakeHarness, autojump_clock: trio.testing.MockClock
) -> None:
    h = await harness(make_harness, isr=(1, 2))  # broker 2 never fetches
    started = trio.current_time()
    result = await commit(h, commit_request("s", {("t", 0): 5}))
    assert result == {("t", 0): BrokerRequestTimedOutError.code}
    assert trio.current_time() - started == pytest.approx(2.0)  # offsets.commit.timeout.ms
    assert await fetch(h, "s") == {}  # never acknowledged, never served


async def test_a_commit_below_min_insync_replicas_writes_nothing(make_harness: MakeHarness) -> None:
    h = await make_harness()
    await h.set_view(view_of(offsets_topic(config={"min.insync.replicas": "2"}), *TOPICS))
    before = h.offsets_log().log_end_offset
    result = await commit(h, commit_request("s", {("t", 0): 5}))
    assert result == {("t", 0): CoordinatorNotAvailableError.code}
    assert h.offsets_log().log_end_offset == before


async def test_a_commit_whose_partition_moves_gets_not_coordinator(
    make_harness: MakeHarness, autojump_clock: trio.testing.MockClock
) -> None:
    h = await harness(make_harness, isr=(1, 2))
    results: list[dict[tuple[str, int], int]] = []

    async def committing() -> None:
        results.append(await commit(h, commit_request("s", {("t", 0): 5})))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(committing)
        await trio.testing.wait_all_tasks_blocked()
        await h.set_view(view_of(offsets_topic(leader=2, epoch=1, isr=(2, 1)), *TOPICS))
    assert results == [{("t", 0): NotCoordinatorError.code}]


async def test_a_commit_replicated_after_a_later_tombstone_stays_deleted(
    make_harness: MakeHarness,
) -> None:
    h = await harness(make_harness, isr=(1, 2))
    key = (OFFSETS_TOPIC, 0)

    def follower_catches_up() -> None:
        leader = h.replicas.leaders[key]
        h.replicas.on_follower_fetch(key, leader, 2, h.offsets_log().log_end_offset)

    outcomes: list[object] = []

    async def run(req: g.OffsetCommitRequest | g.OffsetDeleteRequest) -> None:
        outcomes.append(await h.call(req))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, commit_request("s", {("t", 0): 1}))
        await trio.testing.wait_all_tasks_blocked()
        follower_catches_up()
    assert await fetch(h, "s") == {("t", 0): 1}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, commit_request("s", {("t", 0): 2}))
        await trio.testing.wait_all_tasks_blocked()
        delete = g.OffsetDeleteRequest(
            "s", [g.OffsetDeleteTopic("t", [g.OffsetDeletePartition(0)])]
        )
        nursery.start_soon(run, delete)
        await trio.testing.wait_all_tasks_blocked()
        follower_catches_up()  # both replicate at once; the commit is older than the tombstone
    assert await fetch(h, "s") == {}
    assert ("s", "t", 0) not in (await h.stored()).offsets


# --- OffsetDelete, DeleteGroups, ListGroups ----------------------------------------------


async def test_offset_delete_spares_subscribed_topics_of_an_active_group(
    make_harness: MakeHarness,
) -> None:
    h = await harness(make_harness)
    j = await stable_member(h, "g", session_ms=10_000)  # subscribed to "t"
    both = {("t", 0): 1, ("u", 0): 2}
    assert set((await commit(h, commit_request("g", both, 1, j.member_id))).values()) == {NONE}
    req = g.OffsetDeleteRequest(
        "g",
        [
            g.OffsetDeleteTopic("t", [g.OffsetDeletePartition(0)]),
            g.OffsetDeleteTopic("u", [g.OffsetDeletePartition(0)]),
        ],
    )
    resp = await h.call(req)
    assert resp.error_code == NONE
    codes = {(t.name, p.partition): p.error_code for t in resp.topics for p in t.partitions}
    assert codes == {("t", 0): GroupSubscribedToTopicError.code, ("u", 0): NONE}
    assert await fetch(h, "g") == {("t", 0): 1}
    assert ("g", "u", 0) not in (await h.stored()).offsets
    unknown = await h.call(g.OffsetDeleteRequest("nope", []))
    assert unknown.error_code == GroupIdNotFoundError.code


async def test_delete_groups_only_empty_ones_and_their_offsets(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await stable_member(h, "busy", session_ms=10_000)
    assert await commit(h, commit_request("idle", {("t", 0): 3, ("t", 1): 4})) == {
        ("t", 0): NONE,
        ("t", 1): NONE,
    }
    resp = await h.call(g.DeleteGroupsRequest(["busy", "idle", "nope"]))
    assert {r.group_id: r.error_code for r in resp.results} == {
        "busy": NonEmptyGroupError.code,
        "idle": NONE,
        "nope": GroupIdNotFoundError.code,
    }
    assert await fetch(h, "idle") == {}
    described = await h.call(g.DescribeGroupsRequest(["idle", "busy"]))
    assert [x.group_state for x in described.groups] == ["Dead", "Stable"]
    stored = await h.stored()
    assert not any(k[0] == "idle" for k in stored.offsets) and "busy" in stored.groups


async def test_list_groups_filters_by_state_ignoring_case(make_harness: MakeHarness) -> None:
    h = await harness(make_harness)
    await stable_member(h, "a", session_ms=10_000)
    await commit(h, commit_request("b", {("t", 0): 1}))
    listed = await h.call(g.ListGroupsRequest(["stable"]))
    assert [x.group_id for x in listed.groups] == ["a"]
    listed = await h.call(g.ListGroupsRequest(["Empty", "Dead"]))
    assert [x.group_id for x in listed.groups] == ["b"]


# --- retention --------------------------------------------------------------------------


async def test_retention_counts_from_commit_empty_state_or_unsubscribing(
    make_harness: MakeHarness,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = await harness(
        make_harness, offsets_retention_minutes="1", offsets_retention_check_interval_ms="10000"
    )
    base = 1_700_000_000_000  # wall time moves with the autojump clock
    monkeypatch.setattr(h.runtime, "wall_ms", lambda: base + int(trio.current_time() * 1000))
    t0 = trio.current_time()

    async def until(seconds: float) -> None:
        await trio.sleep(t0 + seconds - trio.current_time())

    simple = await commit(h, commit_request("simple", {("t", 0): 1}))
    leaving = await stable_member(h, "leaving", session_ms=40_000)
    await commit(h, commit_request("leaving", {("t", 0): 2}, 1, leaving.member_id))
    staying = await stable_member(h, "staying", session_ms=300_000)  # subscribed to "t"
    both = {("t", 0): 3, ("u", 0): 4}
    await commit(h, commit_request("staying", both, 1, staying.member_id))
    assert set(simple.values()) == {NONE}

    await until(30)
    left = await h.call(g.LeaveGroupRequest("leaving", [g.LeaveGroupMember(leaving.member_id)]))
    assert left.members[0].error_code == NONE  # Empty from now on
    await until(55)
    assert await fetch(h, "simple") == {("t", 0): 1}
    await until(75)  # the simple consumer's commit is a minute old: gone with its group
    assert await fetch(h, "simple") == {}
    assert "simple" not in h.runtime.partitions[0].groups
    # Two minutes since the commit, but Empty only since 30 s: kept until 90 s.
    await until(85)
    assert await fetch(h, "leaving") == {("t", 0): 2}
    await until(100)
    assert await fetch(h, "leaving") == {}
    assert "leaving" not in h.runtime.partitions[0].groups
    # A Stable group keeps what it subscribes to, however old; not the rest.
    assert await fetch(h, "staying") == {("t", 0): 3}
    stored = await h.stored()
    assert set(stored.offsets) == {("staying", "t", 0)}
    assert set(stored.groups) == {"staying"}
