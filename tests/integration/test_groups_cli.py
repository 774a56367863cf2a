"""``minibroker groups`` and the admin's group calls against real brokers: lag equals log end
minus committed, the describe tables, reset-offsets (a dry run changes nothing, --execute
commits exactly what it printed, refused while the group is active), delete, and errors.

One two-broker cluster serves the module (each test uses its own topic and group names),
so the file stays well under a minute. Group state is made with raw protocol (JoinGroup
and SyncGroup of a hand-made member; OffsetCommit from outside the group through
``alter_consumer_group_offsets``) so these tests depend on the broker only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import trio

from client import Admin, Consumer, NewTopic, OffsetAndMetadata, Producer, TopicPartition
from client.aio import AsyncAdmin
from client.assignors import Assignment, Subscription, encode_assignment, encode_subscription
from client.errors import UnknownMemberIdError
from proto.errors import MemberIdRequiredError
from proto.group_messages import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    JoinGroupProtocol,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupMember,
    LeaveGroupRequest,
    LeaveGroupResponse,
    SyncGroupAssignment,
    SyncGroupRequest,
    SyncGroupResponse,
)
from tests.integration.cluster import LocalCluster
from tests.integration.test_cli import run_cli

SETTINGS = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
}
TP = TopicPartition


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("groups"), brokers=2, settings=SETTINGS).start()
    try:
        yield c
    finally:
        c.stop()


def make_topic(cluster: LocalCluster, name: str, counts: list[int], ts0: int = 0) -> None:
    """A topic with ``counts[p]`` records in partition p, batched as the producer likes;
    with ``ts0`` record i has timestamp ts0 + i s (an offset-by-time lookup must find the
    record inside its batch, as Kafka's does)."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(name, len(counts), 1)])
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=50) as producer:
        futures = [
            producer.send(name, b"v", partition=p, timestamp_ms=ts0 + i * 1000 or None)
            for p, n in enumerate(counts)
            for i in range(n)
        ]
        producer.flush()
        for f in futures:
            f.get()


def commit(cluster: LocalCluster, group: str, offsets: dict[TopicPartition, int]) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.alter_consumer_group_offsets(
            group, {tp: OffsetAndMetadata(o) for tp, o in offsets.items()}
        )


def committed(cluster: LocalCluster, group: str) -> dict[TopicPartition, int]:
    """What OffsetFetch says the group has committed."""
    with Admin(cluster.bootstrap) as admin:
        return {tp: om.offset for tp, om in admin.list_consumer_group_offsets(group).items()}


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.strip()]


# --- a member made by hand ----------------------------------------------------------------


async def _coordinator(admin: AsyncAdmin, group: str) -> int:
    while True:
        found = await admin.cluster.request_any(FindCoordinatorRequest(group))
        assert isinstance(found, FindCoordinatorResponse)
        if found.error_code == 0:
            await admin.cluster.fetch_metadata([])
            return found.node_id
        await trio.sleep(0.1)  # __consumer_offsets being created or loaded


async def _join(bootstrap: str, group: str, owned: list[TopicPartition]) -> str:
    """Join ``group`` as its only member (the leader), give itself ``owned``, and stop: the
    member stays until its 30 s session runs out or it leaves."""
    async with AsyncAdmin(bootstrap, client_id="hand-made") as admin:
        node = await _coordinator(admin, group)
        sub = encode_subscription(Subscription(tuple(sorted({tp.topic for tp in owned}))))

        async def join(member_id: str) -> JoinGroupResponse:
            request = JoinGroupRequest(
                group, 30_000, 30_000, member_id, "consumer", [JoinGroupProtocol("range", sub)]
            )
            response = await admin.cluster.request_node(node, request)
            assert isinstance(response, JoinGroupResponse)
            return response

        joined = await join("")
        if joined.error_code == MemberIdRequiredError.code:  # KIP-394: join again with the id
            joined = await join(joined.member_id)
        member_id = joined.member_id
        assert joined.error_code == 0 and joined.leader == member_id, joined
        assignment = encode_assignment(Assignment(tuple(owned)))
        sync = SyncGroupRequest(
            group, joined.generation_id, member_id, [SyncGroupAssignment(member_id, assignment)]
        )
        synced = await admin.cluster.request_node(node, sync)
        assert isinstance(synced, SyncGroupResponse) and synced.error_code == 0, synced
        return member_id


async def _leave(bootstrap: str, group: str, member_id: str) -> None:
    async with AsyncAdmin(bootstrap) as admin:
        node = await _coordinator(admin, group)
        left = await admin.cluster.request_node(
            node, LeaveGroupRequest(group, [LeaveGroupMember(member_id)])
        )
        assert isinstance(left, LeaveGroupResponse) and left.error_code == 0, left


# --- tests --------------------------------------------------------------------------------


def test_lag_is_log_end_minus_committed(cluster: LocalCluster) -> None:
    make_topic(cluster, "lag", [10, 4, 7])
    commit(cluster, "lagging", {TP("lag", 0): 6, TP("lag", 1): 4})
    with Admin(cluster.bootstrap) as admin:
        [desc] = admin.describe_consumer_groups(["lagging"])
    assert desc.state == "Empty" and desc.members == []
    lags = {o.topic_partition: (o.committed_offset, o.log_end_offset, o.lag) for o in desc.offsets}
    assert lags == {TP("lag", 0): (6, 10, 4), TP("lag", 1): (4, 4, 0)}

    out = run_cli(cluster, "groups", "describe", "lagging")
    assert "Consumer group 'lagging' has no active members." in out.stderr
    assert table(out.stdout) == [
        ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
         "CONSUMER-ID", "HOST", "CLIENT-ID"],
        ["lagging", "lag", "0", "6", "10", "4", "-", "-", "-"],
        ["lagging", "lag", "1", "4", "4", "0", "-", "-", "-"],
    ]  # fmt: skip
    # Kafka's --group form; --state names the coordinator
    state = run_cli(cluster, "groups", "describe", "--group", "lagging", "--state")
    [_, row] = table(state.stdout)
    assert row[0] == "lagging" and row[-2:] == ["Empty", "0"]


def test_reset_dry_run_changes_nothing_and_execute_commits_what_it_printed(
    cluster: LocalCluster,
) -> None:
    ts0 = int(time.time() * 1000) - 3_600_000
    make_topic(cluster, "reset", [8, 8], ts0=ts0)
    commit(cluster, "resetting", {TP("reset", 0): 2, TP("reset", 1): 5})
    # record 3 is the first at or after ts0 + 2.5 s
    when = datetime.fromtimestamp((ts0 + 2500) / 1000, UTC).isoformat(timespec="milliseconds")
    cases = [
        (["--shift-by", "4"], {TP("reset", 0): 6, TP("reset", 1): 8}),  # 9 clamped to 8
        (["--by-duration", "PT30M"], {TP("reset", 0): 8, TP("reset", 1): 8}),  # none: end
        (["--to-datetime", when], {TP("reset", 0): 3, TP("reset", 1): 3}),
        (["--to-earliest"], {TP("reset", 0): 0, TP("reset", 1): 0}),
    ]
    for how, expected in cases:
        before = committed(cluster, "resetting")
        dry = run_cli(cluster, "groups", "reset-offsets", "--group", "resetting",
                      "--topic", "reset", *how)  # fmt: skip
        assert "No action will be performed" in dry.stderr
        rows = table(dry.stdout)
        assert rows[0] == ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
        printed = {TP(t, int(p)): int(o) for _, t, p, o in rows[1:]}
        assert printed == expected, how
        if how[0] == "--shift-by":
            assert "New offset (9) is higher than latest offset for topic partition reset-1" in (
                dry.stderr
            )
        assert committed(cluster, "resetting") == before  # a dry run commits nothing

        done = run_cli(cluster, "groups", "reset-offsets", "resetting", "--topic", "reset",
                       *how, "--execute")  # fmt: skip
        assert done.stdout == dry.stdout
        assert committed(cluster, "resetting") == printed
    # one partition only, to a fixed offset
    run_cli(cluster, "groups", "reset-offsets", "--group", "resetting", "--topic", "reset:1",
            "--to-offset", "7", "--execute")  # fmt: skip
    assert committed(cluster, "resetting") == {TP("reset", 0): 0, TP("reset", 1): 7}


def test_active_group_is_described_and_protected_until_it_leaves(cluster: LocalCluster) -> None:
    make_topic(cluster, "busy", [5, 3])
    owned = [TP("busy", 0), TP("busy", 1)]
    member_id = trio.run(_join, cluster.bootstrap, "workers", owned)
    commit_error = None
    try:
        commit(cluster, "workers", {TP("busy", 0): 1})
    except UnknownMemberIdError as exc:
        commit_error = exc
    assert commit_error is not None and "only be altered while it is inactive" in str(commit_error)

    rows = table(run_cli(cluster, "groups", "describe", "workers").stdout)
    assert [r[:6] for r in rows[1:]] == [
        ["workers", "busy", "0", "-", "5", "-"],
        ["workers", "busy", "1", "-", "3", "-"],
    ]
    assert {r[6] for r in rows[1:]} == {member_id} and {r[8] for r in rows[1:]} == {"hand-made"}
    members = table(run_cli(cluster, "groups", "describe", "workers", "--members").stdout)
    assert members[1][0] == "workers" and members[1][1] == member_id and members[1][-1] == "2"

    refused = run_cli(cluster, "groups", "reset-offsets", "--group", "workers", "--topic", "busy",
                      "--to-earliest", "--execute", check=False)  # fmt: skip
    assert refused.returncode == 1
    assert (
        "Assignments can only be reset if the group 'workers' is inactive, but the current "
        "state is Stable." in refused.stderr
    )
    assert committed(cluster, "workers") == {}
    busy = run_cli(cluster, "groups", "delete", "--group", "workers", check=False)
    assert busy.returncode == 1 and "NON_EMPTY_GROUP" in busy.stderr

    trio.run(_leave, cluster.bootstrap, "workers", member_id)
    listed = table(run_cli(cluster, "groups", "list", "--state").stdout)
    assert ["workers", "Empty"] in listed
    ok = run_cli(cluster, "groups", "reset-offsets", "workers", "--topic", "busy",
                 "--to-latest", "--execute")  # fmt: skip
    assert table(ok.stdout)[1:] == [["workers", "busy", "0", "5"], ["workers", "busy", "1", "3"]]
    assert committed(cluster, "workers") == {TP("busy", 0): 5, TP("busy", 1): 3}


def test_delete_then_list_no_longer_shows_it(cluster: LocalCluster) -> None:
    make_topic(cluster, "gone", [2])
    commit(cluster, "doomed", {TP("gone", 0): 1})
    commit(cluster, "kept", {TP("gone", 0): 2})
    assert {"doomed", "kept"} <= set(run_cli(cluster, "groups", "list").stdout.split())
    out = run_cli(cluster, "groups", "delete", "--group", "doomed")
    assert out.stdout.strip() == "Deletion of requested consumer groups ('doomed') was successful."
    names = run_cli(cluster, "groups", "list").stdout.split()
    assert "doomed" not in names and "kept" in names
    assert committed(cluster, "doomed") == {}
    again = run_cli(cluster, "groups", "delete", "doomed", "kept", check=False)
    assert again.returncode == 1
    assert "* Group 'doomed' could not be deleted due to: [GROUP_ID_NOT_FOUND]" in again.stderr
    assert "These consumer groups were deleted successfully: 'kept'" in again.stdout


def test_unknown_group_and_bad_input_error_clearly(cluster: LocalCluster) -> None:
    missing = run_cli(cluster, "groups", "describe", "no-such-group", check=False)
    assert missing.returncode == 1
    assert "Error: Consumer group 'no-such-group' does not exist." in missing.stderr
    assert missing.stdout == ""
    no_topic = run_cli(cluster, "groups", "reset-offsets", "g", "--topic", "nope",
                       "--to-earliest", check=False)  # fmt: skip
    assert no_topic.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in no_topic.stderr
    bad_time = run_cli(cluster, "groups", "reset-offsets", "g", "--topic", "nope",
                       "--to-datetime", "yesterday", check=False)  # fmt: skip
    assert bad_time.returncode == 1 and "--to-datetime expects ISO 8601" in bad_time.stderr
    bad_state = run_cli(cluster, "groups", "list", "--state", "Sleepy", check=False)
    assert bad_state.returncode == 1 and "Invalid state list 'Sleepy'" in bad_state.stderr


def test_a_real_consumer_shows_up_with_its_lag(cluster: LocalCluster) -> None:
    make_topic(cluster, "live", [6, 4])
    consumer = Consumer(
        "live",
        bootstrap_servers=cluster.bootstrap,
        group_id="app",
        client_id="app-1",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=3_000,
        heartbeat_interval_ms=200,
        fetch_max_wait_ms=50,
    )
    try:
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 10 and time.monotonic() < deadline:
            seen += sum(len(rs) for rs in consumer.poll(timeout_ms=500).values())
        assert seen == 10
        consumer.commit({TP("live", 0): OffsetAndMetadata(2), TP("live", 1): OffsetAndMetadata(4)})
        rows = table(run_cli(cluster, "groups", "describe", "app").stdout)[1:]
        assert [r[:6] for r in rows] == [
            ["app", "live", "0", "2", "6", "4"],
            ["app", "live", "1", "4", "4", "0"],
        ]
        assert all(r[6].startswith("app-1-") and r[8] == "app-1" for r in rows)
        state = table(run_cli(cluster, "groups", "describe", "app", "--state").stdout)
        assert state[1][-2:] == ["Stable", "1"]
    finally:
        consumer.close()
    after = run_cli(cluster, "groups", "describe", "app")
    assert "Consumer group 'app' has no active members." in after.stderr
    assert table(after.stdout)[1:] == [
        ["app", "live", "0", "2", "6", "4", "-", "-", "-"],
        ["app", "live", "1", "4", "4", "0", "-", "-", "-"],
    ]
