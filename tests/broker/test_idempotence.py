"""The idempotent producer at the broker, over the wire: InitProducerId and its blocks of
ids in the coordinator, retried duplicates answered with their original offsets, gaps and
stale epochs refused, and the producer state carried through failover (followers rebuild
it from the batches they copy), restarts and follower truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from broker import zk_layout as zl
from broker.log import LogManager
from broker.log.config import LogConfig
from broker.log.manager import CLEAN_SHUTDOWN_FILE
from broker.producer_ids import ProducerIdBlock, ProducerIdManager
from coordinator.client import open_coordinator
from coordinator.config import CoordinatorConfig
from coordinator.server import serve as serve_coordinator
from proto import messages as m
from proto.batch import BatchBuilder, records_of
from proto.errors import (
    InvalidProducerEpochError,
    InvalidRequestError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumberError,
    UnknownServerError,
)
from tests.broker.test_broker_component import Wire, batch, running_broker
from tests.broker.test_replication_component import (
    TOPIC,
    cluster3,
    create_topic,
    fetched,
    log_batches,
    produce,
    produced,
    wait_for_isr,
    wait_for_state,
)


def ibatch(producer_id: int, epoch: int, sequence: int, *values: bytes) -> bytes:
    b = BatchBuilder(producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence)
    for v in values:
        b.append(v)
    return b.build()


async def init_producer_id(wire: Wire, transactional_id: str | None = None) -> tuple[int, int]:
    resp = await wire.call(m.InitProducerIdRequest(transactional_id))
    assert isinstance(resp, m.InitProducerIdResponse)
    assert resp.error_code == 0, resp
    return resp.producer_id, resp.producer_epoch


async def values(wire: Wire, topic: str = TOPIC) -> list[bytes | None]:
    req = m.FetchRequest(0, 1, 1 << 20, [m.FetchTopic(topic, [m.FetchPartition(0, 0, 1 << 20)])])
    f = fetched(await wire.call(req))
    assert f.error_code == 0
    return [r.value for r in records_of(f.records)]  # type: ignore[arg-type]


async def produce_until_led(wire: Wire, records: bytes, acks: int) -> m.ProducePartitionResponse:
    """Produce to a broker that learns of its election through a watch: retry
    NOT_LEADER_OR_FOLLOWER as a client would (trio time, autojump clock)."""
    with trio.fail_after(60):
        while True:
            r = produced(await wire.call(produce(records, acks=acks)))
            if r.error_code != NotLeaderForPartitionError.code:
                return r
            await trio.sleep(0.05)


def producer_batches(data_dir: Path, producer_id: int) -> list[tuple[int, int, int, int]]:
    """(first seq, last seq, first offset, last offset) of a stopped broker's TOPIC-0 state."""
    logs = LogManager(data_dir, LogConfig())
    logs.startup()
    try:
        plog = logs.get_log(TOPIC, 0)
        assert plog is not None
        entry = plog.producer_state.last_entry(producer_id)
        assert entry is not None
        return [(b.first_seq, b.last_seq, b.first_offset, b.last_offset) for b in entry.batches]
    finally:
        logs.shutdown()


# --- InitProducerId ----------------------------------------------------------------------


def test_producer_id_block_json_is_kafkas() -> None:
    block = ProducerIdBlock.first_block(3)
    assert json.loads(block.encode()) == {
        "version": 1,
        "broker": 3,
        "block_start": "0",
        "block_end": "999",
    }
    assert ProducerIdBlock.decode(block.encode()) == block
    assert block.next_block(1) == ProducerIdBlock(1, 1000, 1999)
    assert ProducerIdBlock.decode(b"") is None  # Kafka creates the znode empty
    # Numbers instead of strings are read too.
    raw = b'{"version":1,"broker":2,"block_start":5,"block_end":9}'
    assert ProducerIdBlock.decode(raw) == ProducerIdBlock(2, 5, 9)
    for bad in (b"{", b'{"version":1}', b'{"broker":1,"block_start":"9","block_end":"5"}'):
        with pytest.raises(InvalidRequestError):
            ProducerIdBlock.decode(bad)
    with pytest.raises(UnknownServerError, match="exhausted"):
        ProducerIdBlock(1, 0, 2**63 - 10).next_block(1)


async def test_init_producer_id_reserves_blocks_in_the_coordinator(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, zk):
        w1, w2, w3 = [await cluster.wire(b) for b in (1, 2, 3)]
        versions = await w1.call(m.ApiVersionsRequest())
        assert isinstance(versions, m.ApiVersionsResponse)
        assert m.ApiKey.INIT_PRODUCER_ID in {r.api_key for r in versions.api_keys}
        assert await init_producer_id(w1) == (0, 0)
        assert await init_producer_id(w1) == (1, 0)
        assert await init_producer_id(w2) == (1000, 0)
        assert await init_producer_id(w3) == (2000, 0)
        assert await init_producer_id(w1) == (2, 0)  # still in broker 1's block
        data, _stat = await zk.get(zl.LATEST_PRODUCER_ID_BLOCK)
        assert json.loads(data) == {
            "version": 1,
            "broker": 3,
            "block_start": "2000",
            "block_end": "2999",
        }
        # A producer that asks again with its id (KIP-360) gets a new one, as in Kafka.
        again = await w2.call(m.InitProducerIdRequest(None, 60_000, 1000, 0))
        assert isinstance(again, m.InitProducerIdResponse)
        assert (again.error_code, again.producer_id, again.producer_epoch) == (0, 1001, 0)
        refused = await w1.call(m.InitProducerIdRequest("txn-1"))
        assert isinstance(refused, m.InitProducerIdResponse)
        assert (refused.error_code, refused.producer_id) == (InvalidRequestError.code, -1)
        # A broker that restarts abandons the rest of its block.
        await cluster.stop(1)
        await cluster.start(1)
        assert await init_producer_id(await cluster.wire(1)) == (3000, 0)


async def test_concurrent_reservations_never_hand_out_an_id_twice(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            serve_coordinator,
            CoordinatorConfig(port=0, data_dir=tmp_path / "coord", force_sync=False),
        )
        async with (
            open_coordinator(f"{host}:{port}") as zk1,
            open_coordinator(f"{host}:{port}") as zk2,
        ):
            await zk1.create(zl.LATEST_PRODUCER_ID_BLOCK)  # empty, as Kafka creates it
            managers = [ProducerIdManager(1, zk1, 3), ProducerIdManager(2, zk2, 3)]
            ids: list[int] = []

            async def take(manager: ProducerIdManager) -> None:
                for _ in range(15):
                    ids.append(await manager.generate())

            async with trio.open_nursery() as takers:
                for manager in managers:
                    for _ in range(2):  # two requests at a time per broker
                        takers.start_soon(take, manager)
            # 30 ids per broker in blocks of 3: twenty whole blocks, nothing skipped.
            assert sorted(ids) == list(range(60))
            await zk1.set(zl.LATEST_PRODUCER_ID_BLOCK, b"not json")
            with pytest.raises(InvalidRequestError, match="latest_producer_id_block"):
                await ProducerIdManager(3, zk1).generate()
        nursery.cancel_scope.cancel()


# --- sequence checks on one broker -------------------------------------------------------


async def test_duplicates_gaps_and_stale_epochs(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with running_broker(tmp_path, nursery) as wire:
        created = await wire.call(m.CreateTopicsRequest([m.CreatableTopic(TOPIC, 1, 1)]))
        assert isinstance(created, m.CreateTopicsResponse)
        assert created.topics[0].error_code == 0
        pid, epoch = await init_producer_id(wire)

        async def send(records: bytes, acks: int = -1) -> tuple[int, int]:
            r = produced(await wire.call(produce(records, acks=acks)))
            return r.error_code, r.base_offset

        first = ibatch(pid, epoch, 0, b"a", b"b")
        assert await send(first) == (0, 0)
        assert await send(batch(b"plain")) == (0, 2)  # another writer in between
        # The retry is answered with the original offset, with either acks, and not written.
        assert await send(first) == (0, 0)
        assert await send(first, acks=1) == (0, 0)
        assert await send(ibatch(pid, epoch, 2, b"c")) == (0, 3)
        # A gap: sequence 4 when 3 is next. Nothing is written.
        assert await send(ibatch(pid, epoch, 4, b"gap")) == (
            OutOfOrderSequenceNumberError.code,
            -1,
        )
        # A duplicate of a sequence range that is not a remembered batch is a gap too.
        assert await send(ibatch(pid, epoch, 1, b"b")) == (OutOfOrderSequenceNumberError.code, -1)
        assert await send(ibatch(pid, epoch, 3, b"d")) == (0, 4)
        # Retries of each of the last 5 batches are recognised, older ones are not.
        for seq in range(4, 10):
            assert await send(ibatch(pid, epoch, seq, b"x%d" % seq)) == (0, seq + 1)
        assert await send(ibatch(pid, epoch, 5, b"x5")) == (0, 6)
        assert (await send(ibatch(pid, epoch, 4, b"x4")))[0] == OutOfOrderSequenceNumberError.code
        # A newer epoch starts at sequence 0; after it the old epoch is fenced.
        assert await send(ibatch(pid, epoch + 1, 3, b"no")) == (
            OutOfOrderSequenceNumberError.code,
            -1,
        )
        assert await send(ibatch(pid, epoch + 1, 0, b"e1")) == (0, 11)
        assert await send(ibatch(pid, epoch, 10, b"old")) == (InvalidProducerEpochError.code, -1)
        # Kafka 2.5+ (KIP-360): a producer the partition has no state for may start at any
        # sequence (no UNKNOWN_PRODUCER_ID).
        other, _ = await init_producer_id(wire)
        assert await send(ibatch(other, 0, 7, b"late")) == (0, 12)
        assert await values(wire) == [
            b"a",
            b"b",
            b"plain",
            b"c",
            b"d",
            *(b"x%d" % seq for seq in range(4, 10)),
            b"e1",
            b"late",
        ]


# --- failover, restart, truncation -------------------------------------------------------


async def test_a_new_leader_answers_a_retry_with_the_old_leaders_offset(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"min.insync.replicas": "2"}
        )
        wire = await cluster.wire(old)
        pid, epoch = await init_producer_id(wire)
        batches = [ibatch(pid, epoch, 2 * i, b"a%d" % i, b"b%d" % i) for i in range(4)]
        for i, records in enumerate(batches):
            r = produced(await wire.call(produce(records, acks=-1)))
            assert (r.error_code, r.base_offset) == (0, 2 * i)
        await cluster.stop(old)

        state = await wait_for_state(zk, lambda st: st.leader not in (-1, old))
        new = state.leader
        assert new in replicas
        wire = await cluster.wire(new)
        # The acknowledged batches were copied to the new leader, and with them its
        # producer state: a retry of any of them is answered, not appended again.
        r = await produce_until_led(wire, batches[3], acks=-1)
        assert (r.error_code, r.base_offset) == (0, 6)
        r = produced(await wire.call(produce(batches[1], acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 2)
        gap = produced(await wire.call(produce(ibatch(pid, epoch, 9, b"gap"), acks=-1)))
        assert gap.error_code == OutOfOrderSequenceNumberError.code
        r = produced(await wire.call(produce(ibatch(pid, epoch, 8, b"next"), acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 8)
        assert await values(wire) == [
            *(v for i in range(4) for v in (b"a%d" % i, b"b%d" % i)),
            b"next",
        ]


@pytest.mark.parametrize("snapshots", [True, False])
async def test_the_producer_state_survives_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock, snapshots: bool
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, _zk):
        leader, _replicas = await create_topic(await cluster.wire(1), rf=1)
        wire = await cluster.wire(leader)
        pid, epoch = await init_producer_id(wire)
        first = ibatch(pid, epoch, 0, b"a")
        second = ibatch(pid, epoch, 1, b"b", b"c")
        assert produced(await wire.call(produce(first, acks=-1))).base_offset == 0
        assert produced(await wire.call(produce(second, acks=-1))).base_offset == 1
        await cluster.stop(leader)
        data_dir = cluster.data_dir(leader)
        if not snapshots:
            # As after a crash: no snapshot, no clean marker; the state is rebuilt from
            # the batch headers during recovery.
            for snap in (data_dir / f"{TOPIC}-0").glob("*.snapshot"):
                snap.unlink()
            (data_dir / CLEAN_SHUTDOWN_FILE).unlink()
        await cluster.start(leader)
        wire = await cluster.wire(leader)
        r = await produce_until_led(wire, second, acks=-1)
        assert (r.error_code, r.base_offset) == (0, 1)
        r = produced(await wire.call(produce(first, acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 0)
        r = produced(await wire.call(produce(ibatch(pid, epoch, 3, b"d"), acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 3)
        assert await values(wire) == [b"a", b"b", b"c", b"d"]


async def test_follower_truncation_rebuilds_the_producer_state(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"unclean.leader.election.enable": "true"}
        )
        new, other = [b for b in replicas if b != old]
        wire = await cluster.wire(old)
        pid, epoch = await init_producer_id(wire)
        committed = ibatch(pid, epoch, 0, b"c0")
        tail = ibatch(pid, epoch, 1, b"t1")
        assert produced(await wire.call(produce(committed, acks=-1))).error_code == 0
        await cluster.stop(new)
        await cluster.stop(other)
        # Sequence 1 reaches the old leader only (acks=1), then the old leader dies.
        r = produced(await wire.call(produce(tail, acks=1)))
        assert (r.error_code, r.base_offset) == (0, 1)
        await cluster.stop(old)

        await cluster.start(new)
        await wait_for_state(zk, lambda st: st.leader == new)
        await cluster.start(other)
        wire = await cluster.wire(new)
        r = await produce_until_led(wire, batch(b"epoch1"), acks=-1)
        assert (r.error_code, r.base_offset) == (0, 1)
        # The producer's retry of sequence 1 is new to the new leader: appended at 2.
        r = produced(await wire.call(produce(tail, acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 2)

        # The old leader returns as follower: it cuts its own sequence 1 at offset 1 and
        # copies the new leader's log, so its producer state must say offset 2.
        await cluster.start(old)
        await wait_for_isr(zk, lambda isr: old in isr)
        r = produced(await wire.call(produce(tail, acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 2)
        for b in (1, 2, 3):
            await cluster.stop(b)
        expected = [(0, 0, 0, 0), (1, 1, 2, 2)]
        for b in replicas:
            assert producer_batches(cluster.data_dir(b), pid) == expected
        assert log_batches(cluster.data_dir(old)) == log_batches(cluster.data_dir(new))


async def test_a_returning_leader_dedups_with_the_state_it_copied(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """The rebuilt state is used, not only stored: after the truncation above, the old
    leader leads again and recognises a retry of the batch it once held at another offset."""
    async with cluster3(tmp_path) as (cluster, zk):
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"unclean.leader.election.enable": "true"}
        )
        new, other = [b for b in replicas if b != old]
        wire = await cluster.wire(old)
        pid, epoch = await init_producer_id(wire)
        assert (
            produced(await wire.call(produce(ibatch(pid, epoch, 0, b"c0"), acks=-1))).error_code
            == 0
        )
        await cluster.stop(new)
        await cluster.stop(other)
        tail = ibatch(pid, epoch, 1, b"t1")
        assert produced(await wire.call(produce(tail, acks=1))).base_offset == 1
        await cluster.stop(old)
        await cluster.start(new)
        await wait_for_state(zk, lambda st: st.leader == new)
        wire = await cluster.wire(new)
        assert (await produce_until_led(wire, batch(b"epoch1"), acks=1)).base_offset == 1
        assert produced(await wire.call(produce(tail, acks=1))).base_offset == 2
        # Only the old leader and the new one run; the old one truncates and catches up.
        await cluster.start(old)
        await wait_for_isr(zk, lambda isr: old in isr)
        await cluster.stop(new)
        await wait_for_state(zk, lambda st: st.leader == old)
        wire = await cluster.wire(old)
        r = await produce_until_led(wire, tail, acks=1)
        assert (r.error_code, r.base_offset) == (0, 2)
        assert await values(wire) == [b"c0", b"epoch1", b"t1"]
