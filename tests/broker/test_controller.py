"""The controller with a coordinator and three brokers in one trio run: election, failover,
leader election on a broker's death, the dead broker's return, fencing by the epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from broker import zk_layout as zl
from broker.controller import write_state_change
from broker.replication.election import ChangeReason, StateChange
from coordinator.client import CoordinatorClient, WatchedEvent
from proto import messages as m
from proto.batch import records_of
from proto.errors import BadVersionError, NotLeaderForPartitionError
from tests.broker.test_broker_component import Wire, batch
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


async def controller_of(zk: CoordinatorClient, not_in: set[int] | None = None) -> tuple[int, int]:
    """Wait for a controller (not one of ``not_in``): its broker id and controller epoch."""
    with trio.fail_after(120):
        while True:
            changed = trio.Event()

            def on_change(_e: WatchedEvent, changed: trio.Event = changed) -> None:
                changed.set()

            stat = await zk.exists(zl.CONTROLLER, watch=on_change)
            if stat is not None:
                data, _stat = await zk.get(zl.CONTROLLER)
                broker_id = zl.ControllerZnode.decode(data).broker_id
                if not not_in or broker_id not in not_in:
                    raw, _ = await zk.get(zl.CONTROLLER_EPOCH)
                    return broker_id, zl.decode_controller_epoch(raw)
            await changed.wait()


async def metadata_controller(wire: Wire) -> int:
    meta = await wire.call(m.MetadataRequest([]))
    assert isinstance(meta, m.MetadataResponse)
    return meta.controller_id


async def test_exactly_one_controller_and_failover(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        first, epoch = await controller_of(zk)
        assert first in (1, 2, 3) and epoch >= 1
        # Every broker names the same controller in metadata (once its view has it).
        for b in (1, 2, 3):
            wire = await cluster.wire(b)
            with trio.fail_after(60):
                while await metadata_controller(wire) != first:
                    await trio.sleep(0.01)  # trio time (autojump clock)
        await cluster.stop(first)
        second, epoch2 = await controller_of(zk, not_in={first})
        assert second != first and epoch2 == epoch + 1
        # The old controller comes back as a candidate only: the controller stays.
        await cluster.start(first)
        assert await controller_of(zk) == (second, epoch2)


async def test_leader_death_elects_an_isr_member_and_the_dead_returns_as_follower(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path, {"controlled.shutdown.enable": "false"}) as (cluster, zk):
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"min.insync.replicas": "2"}
        )
        wire = await cluster.wire(old)
        for i in range(5):
            r = produced(await wire.call(produce(batch(f"a{i}".encode()), acks=-1)))
            assert (r.error_code, r.base_offset) == (0, i)
        await cluster.stop(old)

        state = await wait_for_state(zk, lambda st: st.leader != old)
        assert state.leader in replicas and state.leader != old
        assert state.leader_epoch == 1
        assert old not in state.isr and sorted(state.isr) == sorted(b for b in replicas if b != old)
        _controller, controller_epoch = await controller_of(zk)
        assert state.controller_epoch == controller_epoch

        new = state.leader
        wire = await cluster.wire(new)
        with trio.fail_after(60):
            while True:  # the new leader learns of its election through a watch
                r = produced(await wire.call(produce(batch(b"b"), acks=-1)))
                if r.error_code != NotLeaderForPartitionError.code:
                    break
        assert (r.error_code, r.base_offset) == (0, 5)

        # The old leader returns as a follower: it refuses produce, truncates (nothing to
        # cut here) and catches up until the new leader takes it back into the ISR.
        await cluster.start(old)
        await wait_for_isr(zk, lambda isr: old in isr)
        back = await cluster.wire(old)
        refused = produced(await back.call(produce(batch(b"no"), acks=1)))
        assert refused.error_code == NotLeaderForPartitionError.code
        after = await wait_for_state(zk, lambda st: old in st.isr)
        assert (after.leader, after.leader_epoch) == (new, 1)
        f = fetched(await wire.call(fetch(0)))
        values = [x.value for x in records_of(f.records)]  # type: ignore[arg-type]
        assert values == [f"a{i}".encode() for i in range(5)] + [b"b"]

        for b in (1, 2, 3):
            await cluster.stop(b)
        assert log_batches(cluster.data_dir(old)) == log_batches(cluster.data_dir(new))


async def test_a_deposed_controllers_write_is_rejected(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        leader, replicas = await create_topic(await cluster.wire(1))
        first, _epoch = await controller_of(zk)
        _data, old_epoch_stat = await zk.get(zl.CONTROLLER_EPOCH)
        await cluster.stop(first)
        await controller_of(zk, not_in={first})  # a new controller bumped the epoch

        path = zl.partition_state_path(TOPIC, 0)
        data, stat = await zk.get(path)
        current = zl.PartitionState.decode(path, data)
        other = next(b for b in replicas if b != current.leader and b in current.isr)
        rogue = StateChange(
            TOPIC,
            0,
            zl.PartitionState(other, current.leader_epoch + 1, current.isr, _epoch),
            stat.version,
            ChangeReason.LEADER_ELECTED,
        )
        with pytest.raises(BadVersionError):
            await write_state_change(zk, old_epoch_stat.version, rogue)
        data2, stat2 = await zk.get(path)
        assert (data2, stat2.version) == (data, stat.version)  # untouched
        # With the current epoch's version the same write goes through.
        _d, epoch_stat = await zk.get(zl.CONTROLLER_EPOCH)
        new_stat = await write_state_change(zk, epoch_stat.version, rogue)
        assert new_stat.version == stat.version + 1
        assert leader in replicas
