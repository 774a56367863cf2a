"""Replication with a coordinator and three brokers in one trio run (port 0, ``tmp_path``).

Waiting is event-driven: acks=all produces and long-polling fetches wait in the brokers,
ISR changes are awaited through a coordinator watch on the partition state znode.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.log import LogManager
from broker.log.config import LogConfig
from broker.replica_manager import HW_CHECKPOINT_FILE
from broker.server import serve as serve_broker
from coordinator.client import CoordinatorClient, WatchedEvent, open_coordinator
from coordinator.config import CoordinatorConfig
from coordinator.server import serve as serve_coordinator
from proto import messages as m
from proto.batch import iter_batches, records_of
from proto.errors import (
    BrokerRequestTimedOutError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
)
from tests.broker.test_broker_component import Wire, batch

TOPIC = "r"


@dataclass
class Node:
    config: BrokerConfig
    shutdown: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)
    address: tuple[str, int] = ("", 0)


class Cluster:
    def __init__(
        self, nursery: trio.Nursery, tmp_path: Path, coordinator: str, controllers: bool = True
    ) -> None:
        self.nursery = nursery
        self.controllers = controllers
        self.tmp_path = tmp_path
        self.coordinator = coordinator
        self.nodes: dict[int, Node] = {}
        self.streams: list[trio.SocketStream] = []

    async def start(self, broker_id: int, settings: dict[str, str] | None = None) -> None:
        old = self.nodes.get(broker_id)
        config = (
            old.config
            if old is not None
            else BrokerConfig.from_settings(
                broker_id,
                {"replica.fetch.backoff.ms": "100", **(settings or {})},
                listen_port=0,
                coordinator=self.coordinator,
                data_dir=str(self.tmp_path / f"broker{broker_id}"),
                controller_enable=self.controllers,
            )
        )
        node = Node(config)

        async def run(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            try:
                await serve_broker(config, shutdown=node.shutdown, task_status=task_status)
            finally:
                node.stopped.set()

        node.address = await self.nursery.start(run)
        self.nodes[broker_id] = node

    async def stop(self, broker_id: int) -> None:
        node = self.nodes[broker_id]
        node.shutdown.set()
        await node.stopped.wait()

    async def wire(self, broker_id: int) -> Wire:
        stream = await trio.open_tcp_stream(*self.nodes[broker_id].address)
        self.streams.append(stream)
        return Wire(stream)

    def data_dir(self, broker_id: int) -> Path:
        return Path(self.nodes[broker_id].config.data_dir)


@asynccontextmanager
async def cluster3(
    tmp_path: Path, settings: dict[str, str] | None = None, *, controllers: bool = True
) -> AsyncIterator[tuple[Cluster, CoordinatorClient]]:
    """A coordinator and brokers 1-3; ``controllers=False``: no broker stands for
    controller, so leadership and the ISR move only by the leader's own rules."""
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            serve_coordinator,
            CoordinatorConfig(port=0, data_dir=tmp_path / "coord", force_sync=False),
        )
        cluster = Cluster(nursery, tmp_path, f"{host}:{port}", controllers)
        for b in (1, 2, 3):
            await cluster.start(b, settings)
        async with open_coordinator(cluster.coordinator) as zk:
            yield cluster, zk
        for stream in cluster.streams:
            await stream.aclose()
        for b, node in cluster.nodes.items():
            if not node.stopped.is_set():
                await cluster.stop(b)
        nursery.cancel_scope.cancel()


async def create_topic(
    wire: Wire, rf: int = 3, configs: dict[str, str] | None = None
) -> tuple[int, list[int]]:
    """Create TOPIC (one partition); returns its leader and replicas."""
    resp = await wire.call(m.CreateTopicsRequest([m.CreatableTopic(TOPIC, 1, rf, configs or {})]))
    assert isinstance(resp, m.CreateTopicsResponse) and resp.topics[0].error_code == 0
    meta = await wire.call(m.MetadataRequest([TOPIC]))
    assert isinstance(meta, m.MetadataResponse)
    part = meta.topics[0].partitions[0]
    assert part.isr == part.replicas  # every replica starts in sync
    return part.leader, part.replicas


def produce(records: bytes, acks: int, timeout_ms: int = 10_000) -> m.ProduceRequest:
    return m.ProduceRequest(
        acks, timeout_ms, [m.ProduceTopicData(TOPIC, [m.ProducePartitionData(0, records)])]
    )


def fetch(offset: int, max_wait_ms: int = 0, replica_id: int = -1) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms,
        1,
        1 << 20,
        [m.FetchTopic(TOPIC, [m.FetchPartition(0, offset, 1 << 20)])],
        replica_id=replica_id,
    )


def produced(resp: m.Response) -> m.ProducePartitionResponse:
    assert isinstance(resp, m.ProduceResponse)
    return resp.topics[0].partitions[0]


def fetched(resp: m.Response) -> m.FetchPartitionResponse:
    assert isinstance(resp, m.FetchResponse)
    return resp.topics[0].partitions[0]


async def latest(wire: Wire, replica_id: int = -1) -> int:
    resp = await wire.call(
        m.ListOffsetsRequest(
            [m.ListOffsetsTopic(TOPIC, [m.ListOffsetsPartition(0, m.LATEST_TIMESTAMP)])],
            replica_id=replica_id,
        )
    )
    assert isinstance(resp, m.ListOffsetsResponse)
    return resp.topics[0].partitions[0].offset


async def wait_for_isr(zk: CoordinatorClient, predicate: Callable[[list[int]], bool]) -> list[int]:
    """Block on watches of the state znode until its ISR satisfies ``predicate`` (fails
    after 120 s of trio time: the autojump clock makes that quick when it never happens)."""
    state = await wait_for_state(zk, lambda st: predicate(st.isr))
    return state.isr


async def wait_for_state(
    zk: CoordinatorClient, predicate: Callable[[zl.PartitionState], bool]
) -> zl.PartitionState:
    """Block on watches of the state znode until it satisfies ``predicate`` (fails after
    120 s of trio time)."""
    path = zl.partition_state_path(TOPIC, 0)
    with trio.fail_after(120):
        while True:
            changed = trio.Event()

            def on_change(_event: WatchedEvent, changed: trio.Event = changed) -> None:
                changed.set()

            data, _stat = await zk.get(path, watch=on_change)
            state = zl.PartitionState.decode(path, data)
            if predicate(state):
                return state
            await changed.wait()


def log_batches(data_dir: Path) -> list[bytes]:
    """Every batch of TOPIC-0 in a stopped broker's data dir, as raw bytes."""
    logs = LogManager(data_dir, LogConfig())
    logs.startup()
    try:
        plog = logs.get_log(TOPIC, 0)
        assert plog is not None
        out: list[bytes] = []
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            result = plog.read(offset, 1 << 20)
            assert result.records is not None
            fr = result.records
            raw = os.pread(fr.fd, fr.size, fr.position)
            for pos, header in iter_batches(raw):
                out.append(raw[pos : pos + header.size])
                offset = header.next_offset
        return out
    finally:
        logs.shutdown()


# --- tests -------------------------------------------------------------------------------


async def test_followers_logs_equal_the_leaders(tmp_path: Path) -> None:
    async with cluster3(tmp_path) as (cluster, _zk):
        leader, replicas = await create_topic(await cluster.wire(1))
        wire = await cluster.wire(leader)
        for i in range(30):
            r = produced(await wire.call(produce(batch(b"a%d" % i, b"b%d" % i), acks=-1)))
            assert (r.error_code, r.base_offset) == (0, 2 * i)
        f = fetched(await wire.call(fetch(0)))
        assert f.high_watermark == 60
        assert [r.value for r in records_of(f.records)][:2] == [b"a0", b"b0"]  # type: ignore[arg-type]
        follower = next(b for b in replicas if b != leader)
        refused = fetched(await (await cluster.wire(follower)).call(fetch(0)))
        assert refused.error_code == NotLeaderForPartitionError.code
        for b in (1, 2, 3):
            await cluster.stop(b)
        leader_log = log_batches(cluster.data_dir(leader))
        assert len(leader_log) == 30
        for b in replicas:
            assert log_batches(cluster.data_dir(b)) == leader_log
        # The HW was checkpointed at shutdown, in Kafka's format.
        text = (cluster.data_dir(leader) / HW_CHECKPOINT_FILE).read_text().splitlines()
        assert text[:2] == ["0", "1"] and text[2] == f"{TOPIC} 0 60"


async def test_consumers_never_read_above_the_high_watermark(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, _zk):
        leader, replicas = await create_topic(await cluster.wire(1))
        wire = await cluster.wire(leader)
        assert produced(await wire.call(produce(batch(b"committed"), acks=-1))).error_code == 0
        followers = [b for b in replicas if b != leader]
        for b in followers:
            await cluster.stop(b)
        r = produced(await wire.call(produce(batch(b"not yet"), acks=1)))
        assert (r.error_code, r.base_offset) == (0, 1)
        f = fetched(await wire.call(fetch(0)))
        assert f.high_watermark == 1
        assert [x.value for x in records_of(f.records)] == [b"committed"]  # type: ignore[arg-type]
        beyond = fetched(await wire.call(fetch(1)))
        assert (beyond.error_code, beyond.records) == (0, b"")
        assert await latest(wire) == 1  # consumers: the HW
        assert await latest(wire, replica_id=followers[0]) == 2  # replicas: the log end
        # A consumer long-polling at the HW wakes when the followers return and commit.
        result: list[m.Response] = []
        async with trio.open_nursery() as n:

            async def long_poll() -> None:
                result.append(await wire.call(fetch(1, max_wait_ms=60_000)))

            n.start_soon(long_poll)
            for b in followers:
                await cluster.start(b)
        woke = fetched(result[0])
        assert woke.high_watermark == 2
        assert [x.value for x in records_of(woke.records)] == [b"not yet"]  # type: ignore[arg-type]


async def test_acks_all_waits_for_every_isr_member(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, _zk):
        leader, replicas = await create_topic(await cluster.wire(1))
        wire = await cluster.wire(leader)
        follower = next(b for b in replicas if b != leader)
        await cluster.stop(follower)
        # Still in the ISR (lag time not over): acks=all cannot complete without it.
        start = trio.current_time()
        r = produced(await wire.call(produce(batch(b"x"), acks=-1, timeout_ms=2_000)))
        assert r.error_code == BrokerRequestTimedOutError.code
        assert trio.current_time() - start >= 2
        ok1 = produced(await wire.call(produce(batch(b"y"), acks=1)))
        assert (ok1.error_code, ok1.base_offset) == (0, 1)
        await cluster.start(follower)
        r = produced(await wire.call(produce(batch(b"z"), acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 2)
        f = fetched(await wire.call(fetch(0)))
        assert [x.value for x in records_of(f.records)] == [b"x", b"y", b"z"]  # type: ignore[arg-type]


async def test_min_insync_replicas_refuses_before_appending(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, zk):
        leader, replicas = await create_topic(
            await cluster.wire(1), rf=2, configs={"min.insync.replicas": "2"}
        )
        wire = await cluster.wire(leader)
        assert produced(await wire.call(produce(batch(b"a"), acks=-1))).error_code == 0
        [follower] = [b for b in replicas if b != leader]
        await cluster.stop(follower)
        assert produced(await wire.call(produce(batch(b"lag"), acks=1))).base_offset == 1
        await wait_for_isr(zk, lambda isr: isr == [leader])
        r = produced(await wire.call(produce(batch(b"refused"), acks=-1)))
        assert r.error_code == NotEnoughReplicasError.code
        # Nothing was written: the next append takes the offset the refused one would have.
        ok = produced(await wire.call(produce(batch(b"b"), acks=1)))
        assert (ok.error_code, ok.base_offset) == (0, 2)


async def test_isr_shrinks_after_lag_time_and_expands_on_return(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, zk):
        leader, replicas = await create_topic(await cluster.wire(1))
        wire = await cluster.wire(leader)
        follower = next(b for b in replicas if b != leader)
        await cluster.stop(follower)
        stopped_at = trio.current_time()
        assert produced(await wire.call(produce(batch(b"a"), acks=1))).error_code == 0
        isr = await wait_for_isr(zk, lambda isr: follower not in isr)
        assert sorted(isr) == sorted(b for b in replicas if b != follower)
        assert trio.current_time() - stopped_at >= 30  # replica.lag.time.max.ms
        # The shrunk ISR commits without the lagging follower.
        r = produced(await wire.call(produce(batch(b"b"), acks=-1)))
        assert (r.error_code, r.base_offset) == (0, 1)
        await cluster.start(follower)
        isr = await wait_for_isr(zk, lambda isr: follower in isr)
        assert sorted(isr) == sorted(replicas)
        meta = await wire.call(m.MetadataRequest([TOPIC]))
        assert isinstance(meta, m.MetadataResponse)


async def test_high_watermark_survives_a_restart(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, controllers=False) as (cluster, _zk):
        leader, _replicas = await create_topic(await cluster.wire(1))
        wire = await cluster.wire(leader)
        assert produced(await wire.call(produce(batch(b"a", b"b", b"c"), acks=-1))).error_code == 0
        for b in (1, 2, 3):
            await cluster.stop(b)
        # The leader comes back alone: its followers have not fetched, so only the
        # checkpointed HW lets consumers read what was committed before.
        await cluster.start(leader)
        wire = await cluster.wire(leader)
        f = fetched(await wire.call(fetch(0)))
        assert f.high_watermark == 3
        assert [x.value for x in records_of(f.records)] == [b"a", b"b", b"c"]  # type: ignore[arg-type]
        assert await latest(wire) == 3
