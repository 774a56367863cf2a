"""The group coordinator in real broker processes, spoken to in raw protocol (one
``BrokerConnection`` per member: a held JoinGroup occupies its connection, as in Kafka).

One 3-broker cluster for the module (its start is most of the cost); the tests run in
file order and the last one kills the coordinator of its group. Each test uses its own
group ids. What is checked: the first FindCoordinator creates ``__consumer_offsets``
(replication factor min(3, brokers), compacted); the APIs are listed; members join, sync
the leader's assignment, heartbeat, rebalance when a third joins, commit and fetch;
admin requests; and a kill -9 of the coordinator moves the group with its offsets, its
Stable member heartbeating on without rejoining.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from broker import zk_layout as zl
from broker.group.offsets_records import OFFSETS_TOPIC, partition_for
from client.assignors import (
    Subscription,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
)
from client.conn import BrokerConnection
from proto import group_messages as g
from proto import messages as m
from proto.errors import (
    NONE,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupIdNotFoundError,
    MemberIdRequiredError,
    NotCoordinatorError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from tests.integration.cluster import LocalCluster

DEADLINE_S = 30.0
RETRIABLE = {
    NotCoordinatorError.code,
    CoordinatorLoadInProgressError.code,
    CoordinatorNotAvailableError.code,
}
GROUP_APIS = {8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path_factory.mktemp("groups"),
        brokers=3,
        settings={
            "offsets.topic.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "500",
            "zookeeper.session.timeout.ms": "2000",  # a killed broker is noticed in ~2 s
            "auto.leader.rebalance.enable": "false",
        },
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


@asynccontextmanager
async def connect(cluster: LocalCluster, broker_id: int) -> AsyncIterator[BrokerConnection]:
    async with trio.open_nursery() as nursery:
        conn = BrokerConnection(
            "127.0.0.1", cluster.advertised_port(broker_id), client_id=f"test-{broker_id}"
        )
        await conn.connect(nursery)
        try:
            yield conn
        finally:
            await conn.aclose()


async def call(conn: BrokerConnection, request: m.Request) -> Any:
    return await conn.request(request, timeout_ms=DEADLINE_S * 1000)


async def find_coordinator(cluster: LocalCluster, group: str, via: int) -> int:
    """Ask broker ``via`` until it names a coordinator (it creates the topic, elections
    take a moment); its node id."""
    deadline = time.monotonic() + DEADLINE_S
    async with connect(cluster, via) as conn:
        while True:
            resp = await call(conn, g.FindCoordinatorRequest(group))
            if resp.error_code == NONE:
                assert resp.port == cluster.advertised_port(resp.node_id)
                return int(resp.node_id)
            assert resp.error_code in RETRIABLE, resp
            assert time.monotonic() < deadline, f"no coordinator for {group}: {resp}"
            await trio.sleep(0.1)


async def retrying(conn: BrokerConnection, request: m.Request) -> Any:
    """A group request, retried while its coordinator loads or moves."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        resp = await call(conn, request)
        code = getattr(resp, "error_code", NONE)
        if code not in RETRIABLE:
            return resp
        assert time.monotonic() < deadline, resp
        await trio.sleep(0.1)


def subscription(*topics: str) -> list[g.JoinGroupProtocol]:
    return [g.JoinGroupProtocol("range", encode_subscription(Subscription(tuple(topics))))]


async def join(
    conn: BrokerConnection, group: str, member_id: str = "", session_ms: int = 10_000
) -> g.JoinGroupResponse:
    req = g.JoinGroupRequest(
        group, session_ms, 10_000, member_id, "consumer", subscription("orders")
    )
    resp = await retrying(conn, req)
    if resp.error_code == MemberIdRequiredError.code:
        return await join(conn, group, resp.member_id, session_ms)
    assert resp.error_code == NONE, resp
    return resp  # type: ignore[no-any-return]


async def sync_as_leader(conn: BrokerConnection, group: str, j: g.JoinGroupResponse) -> bytes:
    """Run the range assignor over the members' subscriptions, as a consumer leader does."""
    subs = {x.member_id: decode_subscription(x.metadata) for x in j.members}
    assignments = range_assign(subs, {"orders": 6})
    given = [g.SyncGroupAssignment(mid, encode_assignment(a)) for mid, a in assignments.items()]
    resp = await call(conn, g.SyncGroupRequest(group, j.generation_id, j.member_id, given))
    assert resp.error_code == NONE, resp
    return bytes(resp.assignment)


async def sync_as_follower(conn: BrokerConnection, group: str, j: g.JoinGroupResponse) -> bytes:
    resp = await call(conn, g.SyncGroupRequest(group, j.generation_id, j.member_id, []))
    assert resp.error_code == NONE, resp
    return bytes(resp.assignment)


async def heartbeat(conn: BrokerConnection, group: str, j: g.JoinGroupResponse) -> int:
    resp = await call(conn, g.HeartbeatRequest(group, j.generation_id, j.member_id))
    return int(resp.error_code)


def partitions(assignment: bytes) -> list[int]:
    return [tp.partition for tp in decode_assignment(assignment).partitions]


async def test_find_coordinator_creates_a_compacted_offsets_topic(cluster: LocalCluster) -> None:
    fresh = await trio.to_thread.run_sync(cluster.read_znode, zl.topic_path(OFFSETS_TOPIC))
    if fresh is None:  # this test runs first: the cluster has no offsets topic yet
        async with connect(cluster, 1) as conn:
            first = await call(conn, g.FindCoordinatorRequest("lookup"))
        assert first.error_code == CoordinatorNotAvailableError.code
    node = await find_coordinator(cluster, "lookup", via=2)
    assert node in cluster.brokers
    data = await trio.to_thread.run_sync(cluster.read_znode, zl.topic_path(OFFSETS_TOPIC))
    assert data is not None
    assignment = zl.TopicAssignment.decode(OFFSETS_TOPIC, data)
    assert sorted(assignment.partitions) == [0, 1, 2]
    assert all(sorted(r) == [1, 2, 3] for r in assignment.partitions.values())  # min(3, 3)
    raw = await trio.to_thread.run_sync(cluster.read_znode, zl.topic_config_path(OFFSETS_TOPIC))
    assert raw is not None
    assert zl.decode_topic_config(OFFSETS_TOPIC, raw)["cleanup.policy"] == "compact"
    async with connect(cluster, 3) as conn:
        versions = await call(conn, m.ApiVersionsRequest())
        txn = await call(conn, g.FindCoordinatorRequest("x", g.COORDINATOR_KEY_TRANSACTION))
        meta = await call(conn, m.MetadataRequest([OFFSETS_TOPIC]))
    assert {v.api_key for v in versions.api_keys} >= GROUP_APIS
    assert txn.error_code != NONE and txn.node_id == -1
    assert meta.topics[0].is_internal


async def test_members_join_sync_rebalance_commit_and_leave(cluster: LocalCluster) -> None:
    group = "workers"
    coordinator = await find_coordinator(cluster, group, via=1)
    async with (
        connect(cluster, coordinator) as c1,
        connect(cluster, coordinator) as c2,
        connect(cluster, coordinator) as c3,
    ):
        j1 = await join(c1, group)
        assert (j1.generation_id, j1.leader) == (1, j1.member_id)
        assert partitions(await sync_as_leader(c1, group, j1)) == [0, 1, 2, 3, 4, 5]

        # A second member: the first learns of the rebalance from its heartbeat.
        async with trio.open_nursery() as nursery:
            joined: list[g.JoinGroupResponse] = []

            async def second() -> None:
                joined.append(await join(c2, group))

            nursery.start_soon(second)
            deadline = time.monotonic() + DEADLINE_S
            while await heartbeat(c1, group, j1) != RebalanceInProgressError.code:
                assert time.monotonic() < deadline
                await trio.sleep(0.05)
            j1 = await join(c1, group, j1.member_id)
        j2 = joined[0]
        assert j1.generation_id == j2.generation_id == 2 and j1.leader == j1.member_id
        assert sorted(x.member_id for x in j1.members) == sorted([j1.member_id, j2.member_id])
        async with trio.open_nursery() as nursery:
            got: dict[str, bytes] = {}

            async def follower() -> None:
                got["f"] = await sync_as_follower(c2, group, j2)

            nursery.start_soon(follower)
            got["l"] = await sync_as_leader(c1, group, j1)
        assert sorted(partitions(got["l"]) + partitions(got["f"])) == [0, 1, 2, 3, 4, 5]
        assert len(partitions(got["f"])) == 3
        assert await heartbeat(c1, group, j1) == NONE
        assert await heartbeat(c2, group, j2) == NONE

        # A third: both others get REBALANCE_IN_PROGRESS on their heartbeat.
        async with trio.open_nursery() as nursery:
            third: list[g.JoinGroupResponse] = []

            async def join_third() -> None:
                third.append(await join(c3, group))

            nursery.start_soon(join_third)
            deadline = time.monotonic() + DEADLINE_S
            while await heartbeat(c1, group, j1) != RebalanceInProgressError.code:
                assert time.monotonic() < deadline
                await trio.sleep(0.05)
            assert await heartbeat(c2, group, j2) == RebalanceInProgressError.code

            async def rejoin_second() -> None:
                joined.append(await join(c2, group, j2.member_id))

            nursery.start_soon(rejoin_second)
            j1 = await join(c1, group, j1.member_id)
        j2, j3 = joined[-1], third[0]
        assert j1.generation_id == j2.generation_id == j3.generation_id == 3
        async with trio.open_nursery() as nursery:
            for conn, j in ((c2, j2), (c3, j3)):
                nursery.start_soon(sync_as_follower, conn, group, j)
            await sync_as_leader(c1, group, j1)

        # Commit (acks=all) then fetch; a commit from outside the group is refused.
        await ensure_topic(cluster)
        resp = await call(c1, commit_request(group, {0: 100, 1: 101, 2: 102}, 3, j1.member_id))
        assert [p.error_code for p in resp.topics[0].partitions] == [NONE] * 3
        assert await fetch_offsets(c2, group) == {0: 100, 1: 101, 2: 102}
        simple = await call(c3, commit_request(group, {0: 5}))
        assert simple.topics[0].partitions[0].error_code == UnknownMemberIdError.code

        described = (await call(c3, g.DescribeGroupsRequest([group]))).groups[0]
        assert (described.group_state, described.protocol_data) == ("Stable", "range")
        assert {x.member_id for x in described.members} == {
            j1.member_id,
            j2.member_id,
            j3.member_id,
        }
        assert {x.client_host for x in described.members} == {"/127.0.0.1"}
        assert {x.client_id for x in described.members} == {f"test-{coordinator}"}
        listed = await call(c3, g.ListGroupsRequest(["Stable"]))
        assert group in [x.group_id for x in listed.groups]

        # Everyone leaves: the group is Empty and can be deleted, with its offsets.
        members = [g.LeaveGroupMember(j.member_id) for j in (j1, j2, j3)]
        left = await call(c1, g.LeaveGroupRequest(group, members))
        assert [x.error_code for x in left.members] == [NONE] * 3
        assert (await call(c2, g.DescribeGroupsRequest([group]))).groups[0].group_state == "Empty"
        # A group this broker would coordinate (same partition) but does not know.
        unknown = next(
            name
            for i in range(100)
            if partition_for(name := f"never-{i}", 3) == partition_for(group, 3)
        )
        deleted = await call(c2, g.DeleteGroupsRequest([group, unknown]))
        assert [(r.group_id, r.error_code) for r in deleted.results] == [
            (group, NONE),
            (unknown, GroupIdNotFoundError.code),
        ]
        assert await fetch_offsets(c3, group) == {}
        gone = (await call(c3, g.DescribeGroupsRequest([group]))).groups[0]
        assert gone.group_state == "Dead"
        listed = await call(c3, g.ListGroupsRequest())
        assert group not in [x.group_id for x in listed.groups]


async def test_killing_the_coordinator_moves_the_group_with_its_offsets(
    cluster: LocalCluster,
) -> None:
    """Last in the file: the cluster loses a broker."""
    group = "survivors"
    await ensure_topic(cluster)
    old = await find_coordinator(cluster, group, via=1)
    async with connect(cluster, old) as conn:
        j = await join(conn, group, session_ms=20_000)
        await sync_as_leader(conn, group, j)
        resp = await call(conn, commit_request(group, {3: 33, 4: 44}, j.generation_id, j.member_id))
        assert [p.error_code for p in resp.topics[0].partitions] == [NONE, NONE]
    killed_at = time.monotonic()
    await trio.to_thread.run_sync(cluster.kill_broker, old)
    survivor = next(b for b in cluster.brokers if b != old)
    deadline = time.monotonic() + DEADLINE_S
    while (new := await find_coordinator(cluster, group, via=survivor)) == old:
        assert time.monotonic() < deadline, "the coordinator never moved"
        await trio.sleep(0.1)
    async with connect(cluster, new) as conn:
        assert await retrying_fetch(conn, group) == {3: 33, 4: 44}
        # The member's Stable generation was reloaded from the group record: it heartbeats
        # on with the same member id and generation, no rejoin.
        beat = await retrying(conn, g.HeartbeatRequest(group, j.generation_id, j.member_id))
        assert beat.error_code == NONE
        moved_in = time.monotonic() - killed_at
        described = (await call(conn, g.DescribeGroupsRequest([group]))).groups[0]
    assert (described.group_state, [x.member_id for x in described.members]) == (
        "Stable",
        [j.member_id],
    )
    assert moved_in < 15.0, f"the group took {moved_in:.1f} s to move"


# --- helpers ----------------------------------------------------------------------------


async def ensure_topic(cluster: LocalCluster) -> None:
    async with connect(cluster, 1) as conn:
        resp = await call(conn, m.CreateTopicsRequest([m.CreatableTopic("orders", 6, 1)]))
    assert resp.topics[0].error_code in (NONE, TopicAlreadyExistsError.code)


def commit_request(
    group: str, offsets: dict[int, int], generation: int = -1, member_id: str = ""
) -> g.OffsetCommitRequest:
    parts = [g.OffsetCommitPartition(p, o) for p, o in offsets.items()]
    return g.OffsetCommitRequest(
        group, [g.OffsetCommitTopic("orders", parts)], generation, member_id
    )


async def fetch_offsets(conn: BrokerConnection, group: str) -> dict[int, int]:
    resp = await call(conn, g.OffsetFetchRequest(group))
    assert resp.error_code == NONE, resp
    return {p.partition: p.committed_offset for t in resp.topics for p in t.partitions}


async def retrying_fetch(conn: BrokerConnection, group: str) -> dict[int, int]:
    resp = await retrying(conn, g.OffsetFetchRequest(group))
    assert resp.error_code == NONE, resp
    return {p.partition: p.committed_offset for t in resp.topics for p in t.partitions}
