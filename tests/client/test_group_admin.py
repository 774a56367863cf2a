"""The admin's consumer-group calls against an in-memory coordinator: what describe
assembles (members, assignments, committed, log end, lag), coordinator retries, listing
over every broker, typed per-group errors, and the CLI's tables."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from client import Admin, OffsetAndMetadata
from client.aio import AsyncAdmin
from client.assignors import Assignment, encode_assignment
from client.errors import (
    ConfigurationError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)
from client.groups_cli import _describe, _list, _offset_rows, _reset
from client.log_offsets import list_log_offsets
from client.types import BrokerDescription, GroupPartitionOffsets, TopicPartition
from proto.batch import BatchBuilder
from proto.errors import GroupIdNotFoundError, InvalidGroupIdError, NonEmptyGroupError
from proto.group_messages import (
    DeletableGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribedGroup,
    DescribedGroupMember,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    ListedGroup,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitPartitionResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitTopicResponse,
    OffsetFetchPartitionResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchTopicResponse,
)
from proto.messages import LATEST_TIMESTAMP, ApiKey, Request, RequestHeader, Response
from tests.client.fakebroker import FakeCluster

TP = TopicPartition
NOT_COORDINATOR = 16
COORDINATOR_NOT_AVAILABLE = 15
LOAD_IN_PROGRESS = 14


@dataclass
class FakeGroup:
    state: str = "Empty"
    protocol_type: str = "consumer"
    protocol: str = ""
    members: list[DescribedGroupMember] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


class FakeGroupCluster(FakeCluster):
    """FakeCluster plus a group coordinator on node ``coordinator`` (other nodes answer
    NOT_COORDINATOR), with error codes to inject per api."""

    def __init__(self) -> None:
        super().__init__()
        self.coordinator = 0
        self.groups: dict[str, FakeGroup] = {}
        self.group_errors: dict[ApiKey, list[int]] = {}

    def _error(self, api: ApiKey, node_id: int) -> int:
        errs = self.group_errors.get(api)
        if errs:
            return errs.pop(0)
        return 0 if node_id == self.coordinator else NOT_COORDINATOR

    async def _answer(self, node_id: int, header: RequestHeader, req: Request) -> Response | None:
        if isinstance(req, FindCoordinatorRequest):
            errs = self.group_errors.get(ApiKey.FIND_COORDINATOR)
            if errs:
                return FindCoordinatorResponse(errs.pop(0), -1, "", -1)
            host, port = self.addresses[self.coordinator]
            return FindCoordinatorResponse(0, self.coordinator, host, port)
        if isinstance(req, ListGroupsRequest):
            errs = self.group_errors.get(ApiKey.LIST_GROUPS)
            code = errs.pop(0) if errs else 0
            mine = self.groups.items() if node_id == self.coordinator else []
            listed = [ListedGroup(g, x.protocol_type, x.state) for g, x in mine]
            return ListGroupsResponse(code, [] if code else listed)
        if isinstance(req, DescribeGroupsRequest):
            code = self._error(ApiKey.DESCRIBE_GROUPS, node_id)
            out = []
            for g in req.groups:
                x = self.groups.get(g)
                if code or x is None:
                    out.append(DescribedGroup(code, g, "Dead", "", "", []))
                else:
                    out.append(
                        DescribedGroup(0, g, x.state, x.protocol_type, x.protocol, x.members)
                    )
            return DescribeGroupsResponse(out)
        if isinstance(req, OffsetFetchRequest):
            code = self._error(ApiKey.OFFSET_FETCH, node_id)
            x = self.groups.get(req.group_id, FakeGroup())
            by_topic: dict[str, list[OffsetFetchPartitionResponse]] = {}
            for tp, off in sorted(x.offsets.items()):
                by_topic.setdefault(tp.topic, []).append(
                    OffsetFetchPartitionResponse(tp.partition, off, 0)
                )
            topics = [OffsetFetchTopicResponse(t, ps) for t, ps in by_topic.items()]
            return OffsetFetchResponse(code, [] if code else topics)
        if isinstance(req, OffsetCommitRequest):
            code = self._error(ApiKey.OFFSET_COMMIT, node_id)
            x = self.groups.setdefault(req.group_id, FakeGroup())
            if not code and x.members:
                code = 25  # UNKNOWN_MEMBER_ID: generation -1 into an active group
            for t in req.topics:
                for p in t.partitions:
                    if not code:
                        x.offsets[TP(t.name, p.partition)] = p.committed_offset
            return OffsetCommitResponse(
                [
                    OffsetCommitTopicResponse(
                        t.name,
                        [OffsetCommitPartitionResponse(p.partition, code) for p in t.partitions],
                    )
                    for t in req.topics
                ]
            )
        if isinstance(req, DeleteGroupsRequest):
            code = self._error(ApiKey.DELETE_GROUPS, node_id)
            results = []
            for g in req.groups_names:
                x = self.groups.get(g)
                c = code or (69 if x is None else 68 if x.members else 0)
                if c == 0:
                    del self.groups[g]
                results.append(DeletableGroupResult(g, c))
            return DeleteGroupsResponse(results)
        return await super()._answer(node_id, header, req)


@asynccontextmanager
async def group_cluster(brokers: int = 2) -> AsyncIterator[FakeGroupCluster]:
    cluster = FakeGroupCluster()
    async with trio.open_nursery() as nursery:
        for node_id in range(brokers):
            await nursery.start(cluster.serve_broker, node_id)
        yield cluster
        nursery.cancel_scope.cancel()


def produce(cluster: FakeCluster, topic: str, partition: int, n: int) -> None:
    """``n`` records with timestamps 1000, 1001, ... after the log's current end."""
    log = cluster.topics[topic][partition]
    builder = BatchBuilder()
    for i in range(n):
        builder.append(b"x", timestamp_ms=1000 + log.end + i)
    log.append(builder.build())


def member(
    mid: str, tps: list[TopicPartition], instance: str | None = None
) -> DescribedGroupMember:
    return DescribedGroupMember(
        mid,
        instance,
        f"client-{mid}",
        f"/10.0.0.{len(mid)}",
        b"",
        encode_assignment(Assignment(tuple(tps))),
    )


def stable_group(cluster: FakeGroupCluster) -> None:
    cluster.create_topic("orders", 3)
    for p, n in enumerate((10, 4, 7)):
        produce(cluster, "orders", p, n)
    cluster.groups["g"] = FakeGroup(
        "Stable",
        "consumer",
        "range",
        [member("m-1", [TP("orders", 0), TP("orders", 1)]), member("m-22", [TP("orders", 2)])],
        {TP("orders", 0): 6, TP("orders", 2): 7},
    )


def admin_for(cluster: FakeCluster, request_timeout_ms: int = 30_000) -> AsyncAdmin:
    return AsyncAdmin(cluster.bootstrap, retry_backoff_ms=10, request_timeout_ms=request_timeout_ms)


# --- describe -------------------------------------------------------------------------------


async def test_describe_assembles_members_offsets_and_lag() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        cluster.groups["g"].offsets[TP("gone", 0)] = 3  # a topic deleted since the commit
        [desc] = await admin.describe_consumer_groups(["g"])
    host, port = cluster.addresses[0]
    assert desc.coordinator == BrokerDescription(0, host, port)
    assert (desc.state, desc.protocol_type, desc.protocol) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.client_id, m.assignment) for m in desc.members] == [
        ("m-1", "client-m-1", (TP("orders", 0), TP("orders", 1))),
        ("m-22", "client-m-22", (TP("orders", 2),)),
    ]
    assert desc.offsets == [
        GroupPartitionOffsets(TP("gone", 0), 3, None, None, None),
        GroupPartitionOffsets(TP("orders", 0), 6, 10, 4, "m-1"),
        GroupPartitionOffsets(TP("orders", 1), None, 4, None, "m-1"),  # assigned, no commit
        GroupPartitionOffsets(TP("orders", 2), 7, 7, 0, "m-22"),
    ]


async def test_unknown_group_is_dead_and_bad_ids_are_refused() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        [desc] = await admin.describe_consumer_groups(["nope"])
        assert (desc.state, desc.members, desc.offsets) == ("Dead", [], [])
        with pytest.raises(InvalidGroupIdError, match="non-empty"):
            await admin.describe_consumer_groups([""])


async def test_coordinator_errors_are_retried_with_a_new_lookup() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        cluster.group_errors[ApiKey.FIND_COORDINATOR] = [COORDINATOR_NOT_AVAILABLE] * 2
        cluster.group_errors[ApiKey.DESCRIBE_GROUPS] = [LOAD_IN_PROGRESS]
        cluster.group_errors[ApiKey.OFFSET_FETCH] = [NOT_COORDINATOR]
        [desc] = await admin.describe_consumer_groups(["g"])
        assert desc.state == "Stable" and len(desc.offsets) == 3
        # 2 failed lookups, then one per attempt: describe x2, offset fetch x2
        assert len(cluster.requests_of(ApiKey.FIND_COORDINATOR)) == 6


async def test_coordinator_that_never_comes_raises_the_last_error_after_the_timeout() -> None:
    async with group_cluster() as cluster, admin_for(cluster, request_timeout_ms=300) as admin:
        cluster.group_errors[ApiKey.FIND_COORDINATOR] = [COORDINATOR_NOT_AVAILABLE] * 10_000
        with pytest.raises(CoordinatorNotAvailableError, match="still failing after 300 ms"):
            await admin.list_consumer_group_offsets("g")
        cluster.group_errors[ApiKey.FIND_COORDINATOR] = []
        cluster.group_errors[ApiKey.OFFSET_FETCH] = [LOAD_IN_PROGRESS] * 10_000
        with pytest.raises(CoordinatorLoadInProgressError, match="'g'"):
            await admin.list_consumer_group_offsets("g")


# --- list, offsets, delete ------------------------------------------------------------------


async def test_list_asks_every_broker_and_keeps_consumer_groups() -> None:
    async with group_cluster(brokers=2) as cluster, admin_for(cluster) as admin:
        cluster.groups = {
            "b": FakeGroup("Stable"),
            "a": FakeGroup("Empty", protocol_type=""),  # only commits offsets
            "connect": FakeGroup("Stable", protocol_type="connect"),
        }
        cluster.coordinator = 1  # the groups live on broker 1; broker 0 has none
        listed = await admin.list_consumer_groups()
        assert [(g.group_id, g.state) for g in listed] == [("a", "Empty"), ("b", "Stable")]
        assert {n for n, api, _ in cluster.log if api == ApiKey.LIST_GROUPS} == {0, 1}
        assert [g.group_id for g in await admin.list_consumer_groups(["stable"])] == ["b"]
        cluster.group_errors[ApiKey.LIST_GROUPS] = [LOAD_IN_PROGRESS]  # retried
        assert len(await admin.list_consumer_groups()) == 2


async def test_alter_offsets_then_list_them() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        cluster.create_topic("t", 2)
        await admin.alter_consumer_group_offsets(
            "g", {TP("t", 0): OffsetAndMetadata(5), TP("t", 1): OffsetAndMetadata(0, "note")}
        )
        offsets = await admin.list_consumer_group_offsets("g")
        assert {tp: o.offset for tp, o in offsets.items()} == {TP("t", 0): 5, TP("t", 1): 0}
        [commit] = cluster.requests_of(ApiKey.OFFSET_COMMIT)
        assert isinstance(commit, OffsetCommitRequest)
        assert (commit.generation_id, commit.member_id) == (-1, "")
        assert commit.topics[0].partitions[1].committed_metadata == "note"
        with pytest.raises(ConfigurationError, match="offset for t-0 must be"):
            await admin.alter_consumer_group_offsets("g", {TP("t", 0): OffsetAndMetadata(-1)})


async def test_alter_offsets_of_an_active_group_says_it_must_be_inactive() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        with pytest.raises(UnknownMemberIdError, match="only be altered while it is inactive"):
            await admin.alter_consumer_group_offsets("g", {TP("orders", 0): OffsetAndMetadata(1)})
        assert cluster.groups["g"].offsets[TP("orders", 0)] == 6


async def test_delete_answers_per_group_with_typed_errors() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        cluster.groups["idle"] = FakeGroup()
        cluster.group_errors[ApiKey.DELETE_GROUPS] = [NOT_COORDINATOR]  # retried
        results = await admin.delete_consumer_groups(["idle", "g", "nope"])
        assert results["idle"] is None
        assert isinstance(results["g"], NonEmptyGroupError)
        assert "The group is not empty" in str(results["g"])
        assert isinstance(results["nope"], GroupIdNotFoundError)
        assert set(cluster.groups) == {"g"}


async def test_log_offsets_leave_out_or_raise_for_missing_partitions() -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        cluster.create_topic("t", 1)
        produce(cluster, "t", 0, 3)
        asked = {TP("t", 0): LATEST_TIMESTAMP, TP("t", 5): LATEST_TIMESTAMP}
        assert await list_log_offsets(admin.cluster, asked) == {TP("t", 0): (3, -1)}
        with pytest.raises(UnknownTopicOrPartitionError, match="t-5"):
            await list_log_offsets(admin.cluster, asked, strict=True)
        by_time = await list_log_offsets(admin.cluster, {TP("t", 0): 1001})
        assert by_time == {TP("t", 0): (1, 1001)}


async def test_sync_admin_wraps_the_group_calls() -> None:
    async with group_cluster() as cluster:
        stable_group(cluster)

        def use() -> None:
            with Admin(cluster.bootstrap) as admin:
                assert [g.group_id for g in admin.list_consumer_groups()] == ["g"]
                [desc] = admin.describe_consumer_groups(["g"])
                assert desc.state == "Stable"
                assert admin.list_consumer_group_offsets("g")[TP("orders", 0)].offset == 6
                cluster.groups["e"] = FakeGroup()
                admin.alter_consumer_group_offsets("e", {TP("orders", 1): OffsetAndMetadata(2)})
                assert admin.delete_consumer_groups(["e"]) == {"e": None}

        await trio.to_thread.run_sync(use)


# --- the CLI's tables -----------------------------------------------------------------------


def cli_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "groups": [], "group": None, "all_groups": False, "members": False, "state": None,
        "verbose": False, "topic": None, "all_topics": False, "to_earliest": False,
        "to_latest": False, "to_current": False, "to_datetime": None, "by_duration": None,
        "shift_by": None, "to_offset": None, "dry_run": False, "execute": False,
    }  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


async def test_describe_table_is_kafkas(capsys: pytest.CaptureFixture[str]) -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        assert await _describe(admin, cli_args(groups=["g"])) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == ""
        assert out[1].split() == [
            "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
            "CONSUMER-ID", "HOST", "CLIENT-ID",
        ]  # fmt: skip
        assert out[1].startswith("GROUP           TOPIC           PARTITION  CURRENT-OFFSET  ")
        assert [line.split() for line in out[2:]] == [
            ["g", "orders", "0", "6", "10", "4", "m-1", "/10.0.0.3", "client-m-1"],
            ["g", "orders", "1", "-", "4", "-", "m-1", "/10.0.0.3", "client-m-1"],
            ["g", "orders", "2", "7", "7", "0", "m-22", "/10.0.0.4", "client-m-22"],
        ]
        assert await _describe(admin, cli_args(group=["g"], members=True, verbose=True)) == 0
        members = capsys.readouterr().out.splitlines()
        assert members[1].split() == [
            "GROUP",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
            "ASSIGNMENT",
        ]
        assert members[2].split() == ["g", "m-1", "/10.0.0.3", "client-m-1", "2", "orders(0,1)"]
        assert await _describe(admin, cli_args(groups=["g"], state=True)) == 0
        state = capsys.readouterr().out.splitlines()
        host, port = cluster.addresses[0]
        assert state[2].split() == ["g", f"{host}:{port}", "(0)", "range", "Stable", "2"]


async def test_describe_notes_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        cluster.create_topic("t", 1)
        cluster.groups["idle"] = FakeGroup(offsets={TP("t", 0): 0})
        assert await _describe(admin, cli_args(groups=["idle", "nope"])) == 1
        captured = capsys.readouterr()
        assert "Consumer group 'idle' has no active members." in captured.err
        assert "Error: Consumer group 'nope' does not exist." in captured.err
        assert captured.out.splitlines()[2].split() == [
            "idle",
            "t",
            "0",
            "0",
            "0",
            "0",
            "-",
            "-",
            "-",
        ]


def test_unassigned_rows_only_for_committed_partitions() -> None:
    from client.types import ConsumerGroupDescription

    desc = ConsumerGroupDescription(
        "g", "Empty", "consumer", "", BrokerDescription(0, "h", 1), [],
        [GroupPartitionOffsets(TP("t", 0), None, 5, None),
         GroupPartitionOffsets(TP("t", 1), 2, 5, 3)],
    )  # fmt: skip
    assert _offset_rows(desc) == [("g", "t", 1, 2, 5, 3, "-", "-", "-")]


async def test_list_with_states_table(capsys: pytest.CaptureFixture[str]) -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        cluster.groups = {"a-rather-long-group-name": FakeGroup("Stable"), "b": FakeGroup()}
        await _list(admin, cli_args(state=""))
        assert capsys.readouterr().out.splitlines() == [
            "GROUP                    STATE",
            "a-rather-long-group-name Stable",
            "b                        Empty",
        ]
        await _list(admin, cli_args(state="empty"))
        assert capsys.readouterr().out.split() == ["GROUP", "STATE", "b", "Empty"]


async def test_reset_dry_run_then_execute(capsys: pytest.CaptureFixture[str]) -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        cluster.groups["g"].members = []
        cluster.groups["g"].state = "Empty"
        args = cli_args(groups=["g"], topic=["orders:0,2"], shift_by=-5)
        assert await _reset(admin, args) == 0
        captured = capsys.readouterr()
        assert "No action will be performed" in captured.err
        plan = captured.out.splitlines()
        assert plan[1] == f"{'GROUP':<30} {'TOPIC':<30} {'PARTITION':<10} {'NEW-OFFSET':<15}"
        assert [r.split() for r in plan[2:]] == [
            ["g", "orders", "0", "1"],
            ["g", "orders", "2", "2"],
        ]
        assert cluster.groups["g"].offsets[TP("orders", 0)] == 6  # unchanged
        args = cli_args(groups=["g"], topic=["orders:0,2"], shift_by=-5, execute=True)
        assert await _reset(admin, args) == 0
        assert capsys.readouterr().out.splitlines() == plan
        assert cluster.groups["g"].offsets == {TP("orders", 0): 1, TP("orders", 2): 2}


async def test_reset_is_refused_while_active(capsys: pytest.CaptureFixture[str]) -> None:
    async with group_cluster() as cluster, admin_for(cluster) as admin:
        stable_group(cluster)
        assert (
            await _reset(
                admin, cli_args(groups=["g"], all_topics=True, to_earliest=True, execute=True)
            )
            == 1
        )
        assert (
            "Assignments can only be reset if the group 'g' is inactive, but the current state "
            "is Stable." in capsys.readouterr().err
        )
        assert cluster.requests_of(ApiKey.OFFSET_COMMIT) == []
