"""The group coordinator runtime in one trio run (autojump clock), over a real log and
replica manager but no coordinator ensemble: the test decides the cluster view (who leads
``__consumer_offsets`` in which epoch, with which ISR) and calls the request entry points
directly. Appends take the real leader path (LeaderState, acks=all): a one-member ISR
acknowledges at once; a follower that never fetches makes it time out.

This file: loading a partition from its log, unloading and reloading, membership through
the runtime and its timers. Offsets and admin requests: test_group_coordinator_offsets.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.group import GroupMetadataRecord, MemberRecord
from broker.group.offsets_records import (
    OFFSETS_TOPIC,
    OffsetCommitValue,
    OffsetsPartitionState,
    group_metadata_record,
    group_tombstone,
    offset_commit_record,
    offset_tombstone,
)
from broker.group_coordinator import GroupCoordinator
from broker.group_coordinator.partition import read_offsets_log
from broker.group_coordinator.runtime import GroupRuntime
from broker.log import Log, LogManager, wall_clock_ms
from broker.metadata_cache import ClusterView, MetadataCache, PartitionInfo, TopicInfo
from broker.partition_logs import open_partition_log
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from broker.topic_admin import TopicAdmin, topic_log_config
from coordinator.client import CoordinatorClient
from proto import group_messages as g
from proto import messages as m
from proto.batch import BatchBuilder
from proto.codec import packb
from proto.errors import (
    NONE,
    CoordinatorLoadInProgressError,
    IllegalGenerationError,
    InvalidConfigurationError,
    InvalidGroupIdError,
    InvalidRequestError,
    MemberIdRequiredError,
    NotCoordinatorError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

SETTINGS = {
    "offsets.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
    "offsets.commit.timeout.ms": "2000",
    "replica.lag.time.max.ms": "600000",  # no ISR change (it would need a coordinator)
}


class StaticCache(MetadataCache):
    """The view the test set; a refresh changes nothing."""

    async def refresh_now(self) -> ClusterView:
        return self.view


def _no_zk() -> CoordinatorClient:
    raise AssertionError("the harness has no coordinator ensemble")


def _no_admin() -> TopicAdmin:
    raise AssertionError("the harness creates no topics")


def topic(
    name: str,
    partitions: int,
    leader: int,
    epoch: int,
    isr: Sequence[int],
    config: dict[str, str] | None = None,
) -> TopicInfo:
    replicas = sorted({leader, *isr})
    return TopicInfo(
        name,
        f"id-{name}",
        {
            p: PartitionInfo(name, p, replicas, zl.PartitionState(leader, epoch, list(isr)), 0)
            for p in range(partitions)
        },
        dict(config or {}),
    )


def view_of(*topics: TopicInfo) -> ClusterView:
    brokers = {b: zl.BrokerRegistration(b, "127.0.0.1", 9000 + b, None, 0) for b in (1, 2)}
    return ClusterView("cluster", brokers, {t.name: t for t in topics}, 1)


def offsets_topic(
    leader: int = 1, epoch: int = 0, isr: Sequence[int] = (1,), config: dict[str, str] | None = None
) -> TopicInfo:
    return topic(OFFSETS_TOPIC, 1, leader, epoch, isr, config)


@dataclass
class Harness:
    config: BrokerConfig
    logs: LogManager
    replicas: ReplicaManager
    cache: StaticCache
    coordinator: GroupCoordinator
    scope: trio.CancelScope

    @property
    def runtime(self) -> GroupRuntime:
        return self.coordinator.runtime

    def offsets_log(self) -> Log:
        info = offsets_topic()
        return open_partition_log(self.logs, info, 0, self.config.log)

    def write(self, records: Sequence[tuple[bytes, bytes | None]], epoch: int = 0) -> None:
        """Put records in the offsets log directly (as an earlier leader did)."""
        builder = BatchBuilder()
        for key, value in records:
            builder.append(value, key=key)
        self.offsets_log().append(builder.build(), leader_epoch=epoch)

    async def set_view(self, view: ClusterView) -> None:
        """Apply ``view`` as the broker does (logs, roles, coordinator) and let the
        loads it starts finish."""
        for t in view.topics.values():
            for p in t.partitions:
                open_partition_log(self.logs, t, p, topic_log_config(self.config.log, t.config))
        self.cache.view = view
        self.replicas.on_view(view)
        self.coordinator.roles_changed()
        await trio.testing.wait_all_tasks_blocked()

    async def call(self, request: m.Request) -> Any:
        return await self.coordinator.handlers()[type(request)](request)

    async def stored(self) -> OffsetsPartitionState:
        """What a new coordinator would load from the offsets log now."""
        return await read_offsets_log(self.offsets_log(), 0)


async def _services(
    replicas: ReplicaManager,
    coordinator: GroupCoordinator,
    *,
    task_status: trio.TaskStatus[trio.CancelScope],
) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(replicas.run)
            await nursery.start(coordinator.run)
            task_status.started(scope)


async def start_harness(
    tmp_path: Path, nursery: trio.Nursery, settings: dict[str, str] | None = None
) -> Harness:
    config = BrokerConfig.from_settings(1, {**SETTINGS, **(settings or {})}, data_dir=str(tmp_path))
    logs = LogManager(tmp_path, config.log)
    logs.startup()
    purgatory = FetchPurgatory()
    replicas = ReplicaManager(
        config, logs, purgatory, _no_zk, lambda o: topic_log_config(config.log, o)
    )
    cache = StaticCache(cast(CoordinatorClient, None))
    coordinator = GroupCoordinator(
        config, replicas, purgatory, cache=lambda: cache, topic_admin=_no_admin
    )
    scope = await nursery.start(_services, replicas, coordinator)
    return Harness(config, logs, replicas, cache, coordinator, scope)


def stop_harness(h: Harness) -> None:
    h.scope.cancel()
    h.logs.shutdown()


# --- requests ---------------------------------------------------------------------------

SUBSCRIPTION = packb([0, ["t"], [], b"", -1])  # the consumer's [version, topics, ...]
PROTOCOLS = [g.JoinGroupProtocol("range", SUBSCRIPTION)]


async def join(
    h: Harness, group: str, member_id: str = "", session_ms: int = 1000
) -> g.JoinGroupResponse:
    req = g.JoinGroupRequest(group, session_ms, 5000, member_id, "consumer", PROTOCOLS)
    resp = await h.call(req)
    assert isinstance(resp, g.JoinGroupResponse)
    return resp


async def join_new(h: Harness, group: str, session_ms: int = 1000) -> g.JoinGroupResponse:
    """KIP-394: the first JoinGroup hands out a member id, the second joins with it."""
    first = await join(h, group, session_ms=session_ms)
    assert first.error_code == MemberIdRequiredError.code
    return await join(h, group, first.member_id, session_ms)


async def sync(
    h: Harness, group: str, j: g.JoinGroupResponse, assignments: dict[str, bytes] | None = None
) -> g.SyncGroupResponse:
    given = [g.SyncGroupAssignment(mid, a) for mid, a in (assignments or {}).items()]
    resp = await h.call(g.SyncGroupRequest(group, j.generation_id, j.member_id, given))
    assert isinstance(resp, g.SyncGroupResponse)
    return resp


async def stable_member(h: Harness, group: str, session_ms: int = 1000) -> g.JoinGroupResponse:
    j = await join_new(h, group, session_ms)
    assert j.error_code == NONE and j.leader == j.member_id
    assert (await sync(h, group, j, {j.member_id: b"A"})).error_code == NONE
    return j


async def heartbeat(h: Harness, group: str, member_id: str, generation: int) -> int:
    resp = await h.call(g.HeartbeatRequest(group, generation, member_id))
    assert isinstance(resp, g.HeartbeatResponse)
    return resp.error_code


async def describe(h: Harness, group: str) -> g.DescribedGroup:
    resp = await h.call(g.DescribeGroupsRequest([group]))
    assert isinstance(resp, g.DescribeGroupsResponse)
    return resp.groups[0]


def commit(group: str, offset: int, partition: int = 0, topic: str = "t") -> tuple[bytes, bytes]:
    return offset_commit_record(group, topic, partition, OffsetCommitValue(offset, 0, "", 1))


@pytest.fixture
async def make_harness(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(settings: dict[str, str] | None = None) -> Harness:
        h = await start_harness(tmp_path, nursery, settings)
        made.append(h)
        return h

    yield make
    for h in made:
        stop_harness(h)


@pytest.fixture
async def h(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    harness = await make_harness()
    await harness.set_view(view_of(offsets_topic(), topic("t", 2, 1, 0, (1,))))
    return harness


# --- loading ----------------------------------------------------------------------------


def _stable_record() -> GroupMetadataRecord:
    members = tuple(
        MemberRecord(mid, None, "client", "/10.0.0.1", 5000, 10_000, SUBSCRIPTION, asg)
        for mid, asg in (("m1", b"A1"), ("m2", b"A2"))
    )
    return GroupMetadataRecord("g1", "consumer", 3, "range", "m1", 0, members)


async def test_load_rebuilds_groups_and_offsets_from_the_log(
    make_harness: Callable[..., Awaitable[Harness]], autojump_clock: trio.testing.MockClock
) -> None:
    h = await make_harness()
    h.write([commit("g1", 5), commit("g1", 7, partition=1), commit("g1", 9)])
    h.write([offset_tombstone("g1", "t", 1), group_metadata_record(_stable_record())])
    gone = GroupMetadataRecord("g2", "consumer", 1, None, None, 0, ())
    h.write([group_metadata_record(gone), commit("g2", 1), offset_tombstone("g2", "t", 0)])
    h.write([group_tombstone("g2"), commit("g3", 11)])
    empty = GroupMetadataRecord("g4", "consumer", 5, None, None, 0, ())
    h.write([group_metadata_record(empty)], epoch=1)
    await h.set_view(view_of(offsets_topic(epoch=2), topic("t", 2, 1, 0, (1,))))
    assert h.runtime.partitions[0].loaded and h.runtime.partitions[0].leader_epoch == 2

    fetched = await h.call(g.OffsetFetchRequest("g1"))
    assert fetched.error_code == NONE
    assert [(t.name, p.partition, p.committed_offset) for t in fetched.topics
            for p in t.partitions] == [("t", 0, 9)]  # fmt: skip
    # The Stable group is back at its generation: its members heartbeat on, no rejoin.
    assert await heartbeat(h, "g1", "m1", 3) == NONE
    assert await heartbeat(h, "g1", "m2", 2) == IllegalGenerationError.code
    assert (
        await sync(h, "g1", g.JoinGroupResponse(0, 3, None, None, "", "m2", []))
    ).assignment == b"A2"
    described = await describe(h, "g1")
    assert (described.group_state, described.protocol_data) == ("Stable", "range")
    assert [x.member_assignment for x in described.members] == [b"A1", b"A2"]
    assert (await describe(h, "g2")).group_state == "Dead"
    listed = await h.call(g.ListGroupsRequest())
    assert listed.error_code == NONE
    assert [(x.group_id, x.protocol_type, x.group_state) for x in listed.groups] == [
        ("g1", "consumer", "Stable"),
        ("g3", "", "Empty"),  # offsets without a group record: a "simple" consumer's group
        ("g4", "consumer", "Empty"),
    ]
    fetched3 = await h.call(g.OffsetFetchRequest("g3", [g.OffsetFetchTopic("t", [0, 1])]))
    assert [p.committed_offset for p in fetched3.topics[0].partitions] == [11, g.NO_OFFSET]


async def test_requests_during_the_load_get_load_in_progress(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    h.write([commit("g1", 5)])
    view = view_of(offsets_topic(), topic("t", 2, 1, 0, (1,)))
    h.cache.view = view
    h.replicas.on_view(view)
    h.coordinator.roles_changed()
    # The load runs in its own task, which has not run yet.
    loading = CoordinatorLoadInProgressError.code
    assert await heartbeat(h, "g1", "m", 1) == loading
    assert (await h.call(g.OffsetFetchRequest("g1"))).error_code == loading
    assert (await h.call(g.ListGroupsRequest())).error_code == loading
    assert (await join(h, "g1")).error_code == loading
    await trio.testing.wait_all_tasks_blocked()
    assert (await h.call(g.OffsetFetchRequest("g1"))).topics[0].partitions[0].committed_offset == 5
    assert await heartbeat(h, "g1", "m", 1) == UnknownMemberIdError.code


async def test_only_the_partition_leader_coordinates(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make_harness()
    await h.set_view(view_of(offsets_topic(leader=2, isr=(2, 1))))
    assert h.runtime.partitions == {}
    assert (await join(h, "g")).error_code == NotCoordinatorError.code
    assert await heartbeat(h, "g", "m", 1) == NotCoordinatorError.code
    found = await h.call(g.FindCoordinatorRequest("g"))
    assert (found.error_code, found.node_id, found.port) == (NONE, 2, 9002)
    txn = await h.call(g.FindCoordinatorRequest("g", g.COORDINATOR_KEY_TRANSACTION))
    assert txn.error_code == InvalidRequestError.code and txn.node_id == -1
    assert (await join(h, "")).error_code == InvalidGroupIdError.code


# --- unloading and reloading ------------------------------------------------------------


async def test_unload_answers_a_held_join_not_coordinator(
    make_harness: Callable[..., Awaitable[Harness]], autojump_clock: trio.testing.MockClock
) -> None:
    h = await make_harness({"group.initial.rebalance.delay.ms": "3000"})
    await h.set_view(view_of(offsets_topic()))
    first = await join(h, "g")
    results: list[g.JoinGroupResponse] = []

    async def held_join() -> None:
        results.append(await join(h, "g", first.member_id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held_join)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # held for the initial rebalance delay
        started = trio.current_time()
        await h.set_view(view_of(offsets_topic(leader=2, epoch=1, isr=(2, 1))))
    assert trio.current_time() == started  # answered at the unload, not by a timer
    assert results[0].error_code == NotCoordinatorError.code
    assert h.runtime.partitions == {}
    assert (await join(h, "g", first.member_id)).error_code == NotCoordinatorError.code


async def test_a_newer_epoch_reloads_the_group_from_its_record(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    j = await stable_member(h, "g", session_ms=10_000)
    part = h.runtime.partitions[0]
    await h.set_view(view_of(offsets_topic(epoch=1), topic("t", 2, 1, 0, (1,))))
    reloaded = h.runtime.partitions[0]
    assert reloaded is not part and reloaded.leader_epoch == 1 and reloaded.loaded
    assert await heartbeat(h, "g", j.member_id, j.generation_id) == NONE
    assert (await sync(h, "g", j)).assignment == b"A"


# --- membership and timers --------------------------------------------------------------


async def test_the_initial_delay_timer_answers_the_held_join(
    make_harness: Callable[..., Awaitable[Harness]], autojump_clock: trio.testing.MockClock
) -> None:
    h = await make_harness({"group.initial.rebalance.delay.ms": "3000"})
    await h.set_view(view_of(offsets_topic()))
    first = await join(h, "g")
    started = trio.current_time()
    j = await join(h, "g", first.member_id)
    assert trio.current_time() - started == pytest.approx(3.0)
    assert (j.error_code, j.generation_id, j.leader) == (NONE, 1, j.member_id)


async def test_session_expiry_empties_the_group_and_stores_it(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    j = await stable_member(h, "g", session_ms=1000)
    await trio.sleep(0.6)
    assert await heartbeat(h, "g", j.member_id, j.generation_id) == NONE
    await trio.sleep(0.99)
    assert (await describe(h, "g")).group_state == "Stable"
    await trio.sleep(0.02)  # 1000 ms after the heartbeat
    assert (await describe(h, "g")).group_state == "Empty"
    assert await heartbeat(h, "g", j.member_id, j.generation_id) == UnknownMemberIdError.code
    record = (await h.stored()).groups["g"]
    assert (record.generation, record.members) == (2, ())
    # The stored state time is wall time (retention counts from it on a new coordinator).
    assert abs(record.current_state_timestamp_ms - wall_clock_ms()) < 60_000


async def test_a_joining_member_rebalances_the_group(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    j1 = await stable_member(h, "g", session_ms=5000)
    joined: list[g.JoinGroupResponse] = []

    async def second() -> None:
        joined.append(await join_new(h, "g", session_ms=5000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert joined == []  # held until the first member rejoins
        assert await heartbeat(h, "g", j1.member_id, 1) == RebalanceInProgressError.code
        r1 = await join(h, "g", j1.member_id, 5000)
    j2 = joined[0]
    assert (r1.generation_id, j2.generation_id) == (2, 2)
    assert r1.leader == j2.leader == j1.member_id
    assert sorted(x.member_id for x in r1.members) == sorted([j1.member_id, j2.member_id])
    assert j2.members == []
    synced: list[g.SyncGroupResponse] = []

    async def follower_sync() -> None:
        synced.append(await sync(h, "g", j2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower_sync)
        await trio.testing.wait_all_tasks_blocked()
        assert synced == []  # held until the leader's assignment is stored
        leader = await sync(h, "g", r1, {j1.member_id: b"L", j2.member_id: b"F"})
    assert (leader.assignment, synced[0].assignment) == (b"L", b"F")
    record = (await h.stored()).groups["g"]
    assert record.generation == 2
    assert {x.member_id: x.assignment for x in record.members} == {
        j1.member_id: b"L",
        j2.member_id: b"F",
    }


async def test_each_group_expires_at_its_own_deadline(
    h: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    a = await stable_member(h, "a", session_ms=1000)
    b = await stable_member(h, "b", session_ms=3000)
    await trio.sleep(0.5)
    assert await heartbeat(h, "b", b.member_id, b.generation_id) == NONE  # b: now 3.5 s
    await trio.sleep(t0 + 1.01 - trio.current_time())
    assert [(await describe(h, x)).group_state for x in "ab"] == ["Empty", "Stable"]
    await trio.sleep(t0 + 3.49 - trio.current_time())
    assert (await describe(h, "b")).group_state == "Stable"
    await trio.sleep(0.02)
    assert (await describe(h, "b")).group_state == "Empty"
    assert await heartbeat(h, "a", a.member_id, a.generation_id) == UnknownMemberIdError.code
    assert len(h.runtime.timers) == 0  # nothing left to wait for


# --- settings ---------------------------------------------------------------------------


def test_group_settings_have_kafkas_names_and_defaults() -> None:
    default = BrokerConfig.from_settings(1, {})
    assert (default.offsets_topic_num_partitions, default.offsets_topic_replication_factor) == (
        50,
        3,
    )
    assert (default.offsets_retention_minutes, default.offsets_commit_timeout_ms) == (10_080, 5000)
    assert default.group_config.group_initial_rebalance_delay_ms == 3000
    assert default.group_config.group_max_size is None
    config = BrokerConfig.from_settings(
        1,
        {
            "group.min.session.timeout.ms": "100",
            "group.max.session.timeout.ms": "200",
            "group.max.size": "4",
            "offset.metadata.max.bytes": "0",
        },
    )
    assert (config.group_config.group_max_session_timeout_ms, config.group_max_size) == (200, 4)
    assert config.offset_metadata_max_bytes == 0


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"offsets.topic.num.partitions": "0"}, "offsets.topic.num.partitions"),
        ({"group.max.size": "none"}, "group.max.size"),
        ({"group.min.session.timeout.ms": "9000000"}, "group.min.session.timeout.ms"),
    ],
)
def test_bad_group_settings_name_the_setting(settings: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=named.replace(".", r"\.")):
        BrokerConfig.from_settings(1, settings)
