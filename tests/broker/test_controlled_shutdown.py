"""Controlled shutdown: the broker's retry loop under the autojump clock, then a coordinator
and three brokers in one trio run, where a stopping leader hands its partitions over while
it is still registered, and the controller's request checks (not the controller, unknown
broker, stale broker epoch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.controlled_shutdown import shut_down_controlled
from coordinator.client import CoordinatorClient, WatchedEvent
from proto import messages as m
from proto.errors import (
    BrokerNotAvailableError,
    InvalidConfigurationError,
    NotControllerError,
    NotLeaderForPartitionError,
    StaleBrokerEpochError,
)
from tests.broker.test_broker_component import batch
from tests.broker.test_controller import controller_of
from tests.broker.test_replication_component import (
    TOPIC,
    Cluster,
    cluster3,
    create_topic,
    produce,
    produced,
    wait_for_state,
)

# --- settings ------------------------------------------------------------------------------


def test_settings_have_kafkas_names_and_defaults() -> None:
    default = BrokerConfig.from_settings(1, {})
    assert default.controlled_shutdown_enable and default.auto_leader_rebalance_enable
    assert default.controlled_shutdown_max_retries == 3
    assert default.controlled_shutdown_retry_backoff_ms == 5_000
    assert default.leader_imbalance_check_interval_seconds == 300
    assert default.leader_imbalance_per_broker_percentage == 10
    set_ = BrokerConfig.from_settings(
        1,
        {
            "controlled.shutdown.enable": "false",
            "controlled.shutdown.max.retries": "0",
            "controlled.shutdown.retry.backoff.ms": "250",
            "controller.socket.timeout.ms": "1000",
            "auto.leader.rebalance.enable": "false",
            "leader.imbalance.check.interval.seconds": "5",
            "leader.imbalance.per.broker.percentage": "25",
        },
    )
    assert not set_.controlled_shutdown_enable and not set_.auto_leader_rebalance_enable
    assert set_.controlled_shutdown_max_retries == 0
    assert set_.controlled_shutdown_retry_backoff_ms == 250
    assert set_.controller_socket_timeout_ms == 1000
    assert set_.leader_imbalance_check_interval_seconds == 5
    assert set_.leader_imbalance_per_broker_percentage == 25
    for bad in (
        {"controlled.shutdown.enable": "maybe"},
        {"leader.imbalance.per.broker.percentage": "101"},
        {"leader.imbalance.check.interval.seconds": "0"},
    ):
        with pytest.raises(InvalidConfigurationError, match=next(iter(bad))):
            BrokerConfig.from_settings(1, bad)


# --- the broker's retry loop ----------------------------------------------------------------


async def test_retries_while_partitions_remain_then_succeeds(
    autojump_clock: trio.abc.Clock,
) -> None:
    answers = [[("t", 0), ("t", 1)], [("t", 1)], []]
    calls: list[float] = []

    async def attempt() -> list[tuple[str, int]]:
        calls.append(trio.current_time())
        return answers[len(calls) - 1]

    start = trio.current_time()
    assert await shut_down_controlled(attempt, 3, 5.0, broker_id=1)
    assert [round(t - start, 6) for t in calls] == [0.0, 5.0, 10.0]


async def test_gives_up_after_max_retries_attempts(autojump_clock: trio.abc.Clock) -> None:
    calls: list[float] = []

    async def attempt() -> list[tuple[str, int]]:
        calls.append(trio.current_time())
        if len(calls) % 2:
            raise NotControllerError("moving")
        return [("t", 0)]

    start = trio.current_time()
    assert not await shut_down_controlled(attempt, 4, 2.5, broker_id=1)
    assert [round(t - start, 6) for t in calls] == [0.0, 2.5, 5.0, 7.5]
    # No sleep after the last attempt: the shutdown goes on at once.
    assert trio.current_time() - start == pytest.approx(7.5)


async def test_zero_retries_means_no_attempt(autojump_clock: trio.abc.Clock) -> None:
    async def attempt() -> list[tuple[str, int]]:
        raise AssertionError("must not be called")

    assert not await shut_down_controlled(attempt, 0, 5.0, broker_id=1)


# --- with brokers -----------------------------------------------------------------------------


class Order:
    """The order in which one-shot coordinator watches fire (zxid order on one session)."""

    def __init__(self) -> None:
        self.fired: list[str] = []
        self.done = trio.Event()

    def watcher(self, name: str, want: int) -> Callable[[WatchedEvent], None]:
        def fire(_event: WatchedEvent) -> None:
            self.fired.append(name)
            if len(self.fired) >= want:
                self.done.set()

        return fire


async def registration_and_state_order(
    zk: CoordinatorClient, cluster: Cluster, broker_id: int, topic: str, partition: int
) -> list[str]:
    """Stop ``broker_id``; which changed first: the partition's state or its registration."""
    order = Order()
    await zk.exists(zl.broker_path(broker_id), watch=order.watcher("registration_gone", 2))
    await zk.get(zl.partition_state_path(topic, partition), watch=order.watcher("state", 2))
    await cluster.stop(broker_id)
    with trio.fail_after(120):
        await order.done.wait()
    return order.fired


@pytest.mark.parametrize("enabled", [True, False], ids=["controlled", "uncontrolled"])
async def test_a_stopping_leader_hands_over_before_its_registration_vanishes(
    tmp_path: Path, autojump_clock: trio.abc.Clock, enabled: bool
) -> None:
    settings = {"controlled.shutdown.enable": str(enabled).lower()}
    async with cluster3(tmp_path, settings) as (cluster, zk):
        controller, _epoch = await controller_of(zk)
        old, replicas = await create_topic(
            await cluster.wire(1), configs={"min.insync.replicas": "2"}
        )
        wire = await cluster.wire(old)
        for i in range(3):
            assert produced(await wire.call(produce(batch(b"%d" % i), acks=-1))).error_code == 0
        fired = await registration_and_state_order(zk, cluster, old, TOPIC, 0)
        state = await wait_for_state(zk, lambda st: st.leader != old and old not in st.isr)
        assert state.leader in replicas and state.leader_epoch == 1
        assert sorted(state.isr) == sorted(b for b in replicas if b != old)
        if enabled:
            # Moved while the broker was still registered, by the controller of that time.
            assert fired == ["state", "registration_gone"]
        else:
            assert fired == ["registration_gone", "state"]
        # The new leader takes acks=all writes with the rest of the ISR.
        new_wire = await cluster.wire(state.leader)
        with trio.fail_after(60):
            while True:
                r = produced(await new_wire.call(produce(batch(b"after"), acks=-1)))
                if r.error_code != NotLeaderForPartitionError.code:
                    break
        assert (r.error_code, r.base_offset) == (0, 3)
        assert controller in (1, 2, 3)


async def test_the_controller_moves_its_own_leaderships_then_resigns(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        controller, epoch = await controller_of(zk)
        resp = await (await cluster.wire(1)).call(
            m.CreateTopicsRequest([m.CreatableTopic(TOPIC, 3, 3)])
        )
        assert isinstance(resp, m.CreateTopicsResponse) and resp.topics[0].error_code == 0
        states = {}
        for p in range(3):
            data, _stat = await zk.get(zl.partition_state_path(TOPIC, p))
            states[p] = zl.PartitionState.decode("", data)
        led = [p for p, st in states.items() if st.leader == controller]
        assert led, "replica assignment rotates leaders over the three brokers"
        fired = await registration_and_state_order(zk, cluster, controller, TOPIC, led[0])
        assert fired == ["state", "registration_gone"]
        for p in led:
            data, _stat = await zk.get(zl.partition_state_path(TOPIC, p))
            moved = zl.PartitionState.decode("", data)
            assert moved.leader != controller and controller not in moved.isr
            assert moved.controller_epoch == epoch  # written by the leaving controller
        second, epoch2 = await controller_of(zk, not_in={controller})
        assert epoch2 == epoch + 1 and second != controller


async def test_controlled_shutdown_requests_are_checked(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        controller, _epoch = await controller_of(zk)
        other = next(b for b in (1, 2, 3) if b != controller)
        with trio.fail_after(60):
            while True:  # the other broker's view names the controller once it loads
                meta = await (await cluster.wire(other)).call(m.MetadataRequest([]))
                assert isinstance(meta, m.MetadataResponse)
                if meta.controller_id == controller:
                    break
                await trio.sleep(0.01)

        async def ask(broker_id: int, req: m.ControlledShutdownRequest) -> tuple[int, list[str]]:
            resp = await (await cluster.wire(broker_id)).call(req)
            assert isinstance(resp, m.ControlledShutdownResponse)
            return resp.error_code, [f"{r.topic}-{r.partition}" for r in resp.remaining_partitions]

        assert await ask(other, m.ControlledShutdownRequest(other, -1)) == (
            NotControllerError.code,
            [],
        )
        assert await ask(controller, m.ControlledShutdownRequest(9, -1)) == (
            BrokerNotAvailableError.code,
            [],
        )
        stat = await zk.exists(zl.broker_path(other))
        assert stat is not None
        stale = m.ControlledShutdownRequest(other, stat.czxid - 1)
        assert await ask(controller, stale) == (StaleBrokerEpochError.code, [])
        # With its real epoch the broker is accepted (no topics: nothing remains).
        assert await ask(controller, m.ControlledShutdownRequest(other, stat.czxid)) == (0, [])


async def test_an_rf1_leader_stops_without_retrying(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with cluster3(tmp_path) as (cluster, zk):
        leader, _replicas = await create_topic(await cluster.wire(1), rf=1)
        start = trio.current_time()
        await cluster.stop(leader)
        # No retry backoff (5 s) was slept: RF 1 partitions are not "remaining".
        assert trio.current_time() - start < 5.0
        state = await wait_for_state(zk, lambda st: st.leader == -1)
        assert state.isr == [leader]  # offline, waiting for its only replica
