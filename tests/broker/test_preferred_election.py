"""Preferred-leader election with a coordinator and three brokers in one trio run: the
ElectLeaders request's per-partition answers, and the controller's automatic rebalance
(``auto.leader.rebalance.enable``, ``leader.imbalance.check.interval.seconds``)."""

from __future__ import annotations

from pathlib import Path

import trio

from coordinator.client import CoordinatorClient
from proto import messages as m
from proto.errors import (
    ElectionNotNeededError,
    InvalidRequestError,
    NotControllerError,
    PreferredLeaderNotAvailableError,
    UnknownTopicOrPartitionError,
)
from tests.broker.test_controller import controller_of
from tests.broker.test_replication_component import (
    TOPIC,
    Cluster,
    cluster3,
    create_topic,
    wait_for_state,
)


def elect(
    partitions: list[int] | None, election_type: int = m.PREFERRED_ELECTION
) -> m.ElectLeadersRequest:
    topics = None if partitions is None else [m.ElectLeadersTopic(TOPIC, partitions)]
    return m.ElectLeadersRequest(election_type, topics)


async def answers(
    cluster: Cluster, broker_id: int, req: m.ElectLeadersRequest
) -> tuple[int, dict[int, int]]:
    resp = await (await cluster.wire(broker_id)).call(req)
    assert isinstance(resp, m.ElectLeadersResponse)
    per_partition = {p.partition: p.error_code for r in resp.results for p in r.partitions}
    return resp.error_code, per_partition


async def move_leadership_away(cluster: Cluster, zk: CoordinatorClient, preferred: int) -> int:
    """Stop the preferred leader, start it again, wait until it is back in the ISR; the
    broker leading meanwhile."""
    await cluster.stop(preferred)
    moved = await wait_for_state(zk, lambda st: st.leader != preferred)
    await cluster.start(preferred)
    await wait_for_state(zk, lambda st: preferred in st.isr)
    return moved.leader


async def test_elect_leaders_answers_per_partition(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    settings = {"auto.leader.rebalance.enable": "false"}
    async with cluster3(tmp_path, settings) as (cluster, zk):
        preferred, replicas = await create_topic(await cluster.wire(1))
        assert preferred == replicas[0]
        controller, _ = await controller_of(zk)
        assert await answers(cluster, controller, elect([0])) == (
            0,
            {0: ElectionNotNeededError.code},
        )

        await cluster.stop(preferred)
        interim = (await wait_for_state(zk, lambda st: st.leader != preferred)).leader
        controller, _ = await controller_of(zk, not_in={preferred})
        assert await answers(cluster, controller, elect([0])) == (
            0,
            {0: PreferredLeaderNotAvailableError.code},
        )
        await cluster.start(preferred)
        before = await wait_for_state(zk, lambda st: preferred in st.isr)
        assert before.leader == interim  # nothing moves it back on its own here

        controller, _ = await controller_of(zk)
        other = next(b for b in (1, 2, 3) if b != controller)
        assert await answers(cluster, other, elect([0])) == (NotControllerError.code, {})
        assert await answers(cluster, controller, elect([0], election_type=1)) == (
            InvalidRequestError.code,
            {},
        )
        assert await answers(cluster, controller, elect([0, 7])) == (
            0,
            {0: 0, 7: UnknownTopicOrPartitionError.code},
        )
        after = await wait_for_state(zk, lambda st: st.leader == preferred)
        assert after.leader_epoch == before.leader_epoch + 1
        assert sorted(after.isr) == sorted(before.isr)
        # Every partition (None): nothing left to do.
        assert await answers(cluster, controller, elect(None)) == (
            0,
            {0: ElectionNotNeededError.code},
        )


async def test_the_controller_rebalances_leadership_by_itself(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    settings = {"leader.imbalance.check.interval.seconds": "1"}
    async with cluster3(tmp_path, settings) as (cluster, zk):
        preferred, _replicas = await create_topic(await cluster.wire(1))
        interim = await move_leadership_away(cluster, zk, preferred)
        assert interim != preferred
        back = await wait_for_state(zk, lambda st: st.leader == preferred)
        assert preferred in back.isr


async def test_no_rebalance_when_disabled(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    settings = {
        "leader.imbalance.check.interval.seconds": "1",
        "auto.leader.rebalance.enable": "false",
    }
    async with cluster3(tmp_path, settings) as (cluster, zk):
        preferred, _replicas = await create_topic(await cluster.wire(1))
        interim = await move_leadership_away(cluster, zk, preferred)
        await trio.sleep(30)  # trio time: thirty checks' worth
        still = await wait_for_state(zk, lambda _st: True)
        assert still.leader == interim
