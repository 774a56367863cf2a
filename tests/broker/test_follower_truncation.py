"""Follower truncation at become-follower time (OffsetForLeaderEpoch, KIP-101/KIP-279).

Leadership moves through the controller: with every replica down but the old leader, the
old leader takes an uncommitted tail (acks=1), then dies; the topic allows unclean leader
election, so the first replica back leads in epoch 1 whatever the ISR said, and the old
leader returns as its follower.
"""

from __future__ import annotations

from pathlib import Path

import trio

from proto import messages as m
from proto.batch import records_of
from proto.errors import NotLeaderForPartitionError
from tests.broker.test_broker_component import batch
from tests.broker.test_replication_component import (
    TOPIC,
    cluster3,
    create_topic,
    fetch,
    fetched,
    log_batches,
    produce,
    produced,
    wait_for_isr,
    wait_for_state,
)


async def test_a_returning_leader_truncates_its_uncommitted_tail(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"unclean.leader.election.enable": "true"}
        )
        new, other = [b for b in replicas if b != old]
        wire = await cluster.wire(old)
        assert produced(await wire.call(produce(batch(b"committed"), acks=-1))).error_code == 0
        await cluster.stop(new)
        await cluster.stop(other)
        # Appended on the old leader only, never committed: must not survive.
        tail = produced(await wire.call(produce(batch(b"lost1", b"lost2"), acks=1)))
        assert (tail.error_code, tail.base_offset) == (0, 1)
        await cluster.stop(old)

        # The controller elects ``new`` in epoch 1 while ``old`` is down.
        await cluster.start(new)
        state = await wait_for_state(zk, lambda st: st.leader == new)
        assert state.leader_epoch == 1
        await cluster.start(other)
        wire = await cluster.wire(new)
        # The new leader learns of its election through a watch: retry as a client would.
        for _attempt in range(1000):
            r = produced(await wire.call(produce(batch(b"epoch1"), acks=-1)))
            if r.error_code != NotLeaderForPartitionError.code:
                break
        assert (r.error_code, r.base_offset) == (0, 1)

        # The old leader returns as a follower: it asks where epoch 0 ends (offset 1 on
        # the new leader), cuts its two-record tail, and fetches the new leader's data.
        await cluster.start(old)
        await wait_for_isr(zk, lambda isr: old in isr)
        f = fetched(await wire.call(fetch(0)))
        assert [x.value for x in records_of(f.records)] == [b"committed", b"epoch1"]  # type: ignore[arg-type]

        reply = await (await cluster.wire(new)).call(
            m.OffsetForLeaderEpochRequest(
                [m.OffsetForLeaderTopic(TOPIC, [m.OffsetForLeaderPartition(0, 1, 0)])]
            )
        )
        assert isinstance(reply, m.OffsetForLeaderEpochResponse)
        answer = reply.topics[0].partitions[0]
        assert (answer.error_code, answer.leader_epoch, answer.end_offset) == (0, 0, 1)

        for b in (1, 2, 3):
            await cluster.stop(b)
        leader_log = log_batches(cluster.data_dir(new))
        assert len(leader_log) == 2
        assert log_batches(cluster.data_dir(old)) == leader_log
        assert log_batches(cluster.data_dir(other)) == leader_log
