"""The controller: one broker, elected through the coordinator, that moves partition leaders
when brokers die or return.

Every broker runs a ``Controller`` on its coordinator session (REFERENCE.md section 4):

- election: create the ephemeral ``/controller`` (broker id, timestamp) and bump
  ``/controller_epoch`` in one multi conditioned on the epoch znode's version (the epoch
  znode is created with 0 when absent). Losing either op means another broker won: watch
  ``/controller`` and try again when it disappears.
- as controller: on every view the metadata cache publishes (it reloads on
  ``/brokers/ids`` and the state znodes), run ``election.on_brokers_changed`` and write each
  ``StateChange`` as a multi of ``CheckOp("/controller_epoch", our version)`` +
  ``SetDataOp(state path, new state, expected version)``. The check fences a deposed
  controller; a lost state CAS means the view was stale: reload and decide again (the
  decision is a pure function of the view, so a new controller loses nothing).

Requests the controller serves (each under one lock, so decisions never interleave, each
write by the same fenced CAS; a lost CAS reloads the view and decides that partition again):

- ``controlled_shutdown(broker_id, broker_epoch)``: mark the broker as shutting down (it is
  never elected again while it stays registered), move its leaderships to other ISR
  members, drop it from ISRs, and answer the replicated partitions it still leads.
- ``elect_preferred(partitions)``: ElectLeaders, preferred type, per-partition outcome.
- every ``leader.imbalance.check.interval.seconds`` with ``auto.leader.rebalance.enable``:
  preferred elections for the brokers whose share of not-led preferred partitions is over
  ``leader.imbalance.per.broker.percentage``.
- ``resign()``: a controller shutting down deletes its ``/controller`` once its own
  leaderships moved, so another broker takes over at once.

The controller's tasks live in the session's nursery: a lost session ends them, and the
next session runs a new candidate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import structlog
import trio

from broker import zk_layout as zl
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView, MetadataCache, PartitionInfo
from broker.replication.election import (
    PreferredOutcome,
    StateChange,
    controlled_shutdown,
    imbalance_ratio,
    imbalanced_brokers,
    on_brokers_changed,
    preferred_leader_election,
    preferred_leader_elections,
)
from coordinator.client import CheckOp, CoordinatorClient, CreateOp, SetDataOp, Stat
from proto.errors import (
    BadVersionError,
    BrokerNotAvailableError,
    BrokerRequestTimedOutError,
    BrokerResponseError,
    ConnectionLossError,
    ElectionNotNeededError,
    NodeExistsError,
    NoNodeError,
    NotControllerError,
    OperationTimeoutError,
    PreferredLeaderNotAvailableError,
    SessionExpiredError,
    SessionMovedError,
    StaleBrokerEpochError,
    UnknownTopicOrPartitionError,
)

log = structlog.get_logger("broker.controller")

_TRANSIENT = (ConnectionLossError, OperationTimeoutError, SessionMovedError)
_CAS_ATTEMPTS = 5  # per partition and request; each lost CAS reloads the view first

Key = tuple[str, int]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LeaderBalance:
    """Kafka's automatic preferred-leader rebalance settings."""

    enable: bool = True
    check_interval_s: float = 300.0  # leader.imbalance.check.interval.seconds
    per_broker_percentage: int = 10  # leader.imbalance.per.broker.percentage


class ControllerMovedError(NotControllerError):
    """Our ``/controller_epoch`` version is no longer current: another controller rules
    (a request being served answers NOT_CONTROLLER)."""


async def write_state_change(
    zk: CoordinatorClient, epoch_version: int, change: StateChange
) -> Stat:
    """One controller write: the state znode by CAS, fenced by ``/controller_epoch``'s
    version. BadVersionError when either is stale."""
    path = zl.partition_state_path(change.topic, change.partition)
    results = await zk.multi(
        [
            CheckOp(zl.CONTROLLER_EPOCH, epoch_version),
            SetDataOp(path, change.state.encode(), change.expected_version),
        ]
    )
    stat = results[1]
    assert isinstance(stat, Stat)
    return stat


async def try_become_controller(zk: CoordinatorClient, broker_id: int) -> tuple[int, int] | None:
    """One election attempt: (controller epoch, epoch znode version) if we won, else None."""
    while True:
        try:
            data, stat = await zk.get(zl.CONTROLLER_EPOCH)
            break
        except NoNodeError:
            # Another candidate may create it first: then read theirs.
            with contextlib.suppress(NodeExistsError):
                await zk.create(zl.CONTROLLER_EPOCH, b"0")
    epoch = zl.decode_controller_epoch(data) + 1
    me = zl.ControllerZnode(broker_id, int(time.time() * 1000))
    try:
        results = await zk.multi(
            [
                CreateOp(zl.CONTROLLER, me.encode(), ephemeral=True),
                SetDataOp(zl.CONTROLLER_EPOCH, str(epoch).encode(), stat.version),
            ]
        )
    except (NodeExistsError, BadVersionError):
        return None
    new_stat = results[1]
    assert isinstance(new_stat, Stat)
    return epoch, new_stat.version


class Controller:
    """A controller candidate for one coordinator session."""

    def __init__(
        self,
        broker_id: int,
        zk: CoordinatorClient,
        cache: MetadataCache,
        log_config: Callable[[dict[str, str]], LogConfig],
        balance: LeaderBalance | None = None,
    ) -> None:
        self.broker_id = broker_id
        self._zk = zk
        self._cache = cache
        self._log_config = log_config
        self._balance = balance or LeaderBalance(enable=False)
        self._changed = trio.Event()
        self._lock = trio.Lock()  # one decision-and-write at a time (Kafka's event queue)
        # Brokers in controlled shutdown -> the czxid of the registration that asked: a
        # broker that re-registers (a new czxid) is no longer shutting down.
        self.shutting_down: dict[int, int] = {}
        self.epoch: int | None = None  # our controller epoch while we are the controller
        self.epoch_version = -1
        self.log = log.bind(broker_id=broker_id)

    @property
    def is_controller(self) -> bool:
        return self.epoch is not None

    def view_changed(self) -> None:
        """The metadata cache published a new view (brokers or states moved)."""
        self._changed.set()

    async def run(self) -> None:
        """Stand for election until the session ends; rule while elected. Coordinator
        errors (the session moving between members) are retried with backoff; a lost
        session cancels this with the rest of the session's tasks."""
        delay = 0.05
        try:
            while True:
                try:
                    await self._stand()
                except SessionExpiredError:
                    self.epoch = None
                    await trio.sleep_forever()  # the session's tasks are being cancelled
                except _TRANSIENT as exc:
                    self.log.warning("controller_coordinator_error", error=str(exc), retry_s=delay)
                    self.epoch = None
                    await trio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        finally:
            self.epoch = None  # cancelled (shutdown, lost session): no longer ruling

    async def _stand(self) -> None:
        while True:
            won = await self._ours() or await try_become_controller(self._zk, self.broker_id)
            if won is None:
                await self._wait_controller_gone()
                continue
            self.epoch, self.epoch_version = won
            self.log.info("controller_elected", controller_epoch=self.epoch)
            try:
                await self._rule()
            except ControllerMovedError:
                self.log.warning("controller_deposed", controller_epoch=self.epoch)
                self.epoch = None
                await self._wait_controller_gone()

    async def _ours(self) -> tuple[int, int] | None:
        """If ``/controller`` is our session's (an election whose reply was lost, or a
        retry after a coordinator error): our epoch and its znode version."""
        stat = await self._zk.exists(zl.CONTROLLER)
        if stat is None or stat.ephemeral_owner != self._zk.session_id:
            return None
        data, epoch_stat = await self._zk.get(zl.CONTROLLER_EPOCH)
        return zl.decode_controller_epoch(data), epoch_stat.version

    async def _wait_controller_gone(self) -> None:
        gone = trio.Event()
        if await self._zk.exists(zl.CONTROLLER, watch=lambda _e: gone.set()) is None:
            return
        await gone.wait()

    async def _rule(self) -> None:
        view = await self._cache.refresh_now()
        interval = self._balance.check_interval_s
        next_balance = trio.current_time() + interval
        while True:
            self._changed = trio.Event()
            await self._forget_gone_brokers()
            async with self._lock:
                written = await self._decide_and_write(view)
            if not written:
                view = await self._cache.refresh_now()  # a lost CAS: the view was stale
                continue
            with trio.move_on_at(next_balance if self._balance.enable else float("inf")):
                await self._changed.wait()
            if self._balance.enable and trio.current_time() >= next_balance:
                await self.rebalance_leaders()
                next_balance = trio.current_time() + interval
            view = self._cache.view

    async def _decide_and_write(self, view: ClusterView) -> bool:
        """Write the changes the view calls for; False if a CAS was lost (decide again)."""
        assert self.epoch is not None
        partitions: list[PartitionInfo] = [
            info for t in view.topics.values() for info in t.partitions.values()
        ]
        versions = {(p.topic, p.partition): p.version for p in partitions}

        def unclean(topic: str) -> bool:
            t = view.topics.get(topic)
            return t is not None and self._log_config(t.config).unclean_leader_election_enable

        changes = on_brokers_changed(
            partitions,
            set(view.brokers),
            self.epoch,
            unclean,
            versions=versions,
            shutting_down=set(self.shutting_down),
        )
        for change in changes:
            try:
                await write_state_change(self._zk, self.epoch_version, change)
            except BadVersionError:
                await self._check_still_controller()
                self.log.info("state_write_lost", topic=change.topic, partition=change.partition)
                return False
            self._logged(change)
        return True

    def _logged(self, change: StateChange) -> None:
        self.log.info(
            "partition_state_changed",
            topic=change.topic,
            partition=change.partition,
            reason=change.reason.value,
            leader=change.state.leader,
            leader_epoch=change.state.leader_epoch,
            isr=change.state.isr,
        )

    async def _check_still_controller(self) -> None:
        _data, stat = await self._zk.get(zl.CONTROLLER_EPOCH)
        if stat.version != self.epoch_version:
            raise ControllerMovedError(f"/controller_epoch moved to version {stat.version}")

    # --- requests the controller serves -----------------------------------------------

    def _require_controller(self) -> int:
        if self.epoch is None:
            raise NotControllerError(f"broker {self.broker_id} is not the controller")
        return self.epoch

    async def _write_decided(
        self, key: Key, decide: Callable[[ClusterView, PartitionInfo], tuple[T, StateChange | None]]
    ) -> T:
        """Decide for one partition on the current view and write the change; after a lost
        CAS reload the view and decide again. Raises UnknownTopicOrPartitionError, or
        BrokerRequestTimedOutError if the CAS keeps losing."""
        view = self._cache.view
        for _attempt in range(_CAS_ATTEMPTS):
            info = view.partition(*key)
            if info is None:
                raise UnknownTopicOrPartitionError(f"{key[0]}-{key[1]} does not exist")
            result, change = decide(view, info)
            if change is None:
                return result
            try:
                await write_state_change(self._zk, self.epoch_version, change)
            except BadVersionError:
                await self._check_still_controller()
                view = await self._cache.refresh_now()
                continue
            self._logged(change)
            return result
        raise BrokerRequestTimedOutError(f"{key[0]}-{key[1]}: its state kept changing")

    async def _registration_epoch(self, broker_id: int) -> int | None:
        """The czxid of the broker's registration (its broker epoch), None if absent."""
        stat = await self._zk.exists(zl.broker_path(broker_id))
        return None if stat is None else stat.czxid

    async def _forget_gone_brokers(self) -> None:
        # By czxid, not by the view: a quick restart may never be absent from a view.
        for broker_id, epoch in list(self.shutting_down.items()):
            if await self._registration_epoch(broker_id) != epoch:
                del self.shutting_down[broker_id]

    async def controlled_shutdown(self, broker_id: int, broker_epoch: int) -> list[Key]:
        """Move leadership away from ``broker_id`` and drop it from the ISRs; the replicated
        partitions it still leads (a lagging follower may catch up: the broker retries)."""
        self._require_controller()
        current = await self._registration_epoch(broker_id)
        if current is None:
            raise BrokerNotAvailableError(f"broker {broker_id} is not registered")
        if broker_epoch not in (-1, current):
            raise StaleBrokerEpochError(
                f"broker {broker_id}: epoch {broker_epoch} is not the registered {current}"
            )
        self.shutting_down[broker_id] = current
        remaining: list[Key] = []
        async with self._lock:
            epoch = self._require_controller()
            view = await self._cache.refresh_now()

            def decide(
                view: ClusterView, info: PartitionInfo
            ) -> tuple[list[Key], StateChange | None]:
                plan = controlled_shutdown(
                    [info],
                    broker_id,
                    set(view.brokers) | {broker_id},
                    set(self.shutting_down),
                    controller_epoch=epoch,
                    versions={(info.topic, info.partition): info.version},
                )
                return plan.remaining, plan.changes[0] if plan.changes else None

            for t in view.topics.values():
                for p in sorted(t.partitions):
                    try:
                        remaining += await self._write_decided((t.name, p), decide)
                    except UnknownTopicOrPartitionError:
                        continue  # deleted meanwhile
                    except BrokerRequestTimedOutError:
                        remaining.append((t.name, p))
        self.log.info(
            "controlled_shutdown_handled",
            shutting_down_broker=broker_id,
            remaining=[f"{t}-{p}" for t, p in remaining],
        )
        return remaining

    async def elect_preferred(
        self, keys: Iterable[Key] | None, timeout_s: float = 30.0
    ) -> dict[Key, BrokerResponseError | None]:
        """ElectLeaders (preferred): per partition None (elected), ELECTION_NOT_NEEDED,
        PREFERRED_LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION or REQUEST_TIMED_OUT.
        ``keys`` None: every partition."""
        self._require_controller()
        results: dict[Key, BrokerResponseError | None] = {}
        async with self._lock:
            epoch = self._require_controller()
            view = await self._cache.refresh_now()
            wanted = (
                [(t.name, p) for t in view.topics.values() for p in sorted(t.partitions)]
                if keys is None
                else list(dict.fromkeys(keys))
            )

            def decide(
                view: ClusterView, info: PartitionInfo
            ) -> tuple[BrokerResponseError | None, StateChange | None]:
                live = set(view.brokers) - set(self.shutting_down)
                outcome, change = preferred_leader_election(
                    info,
                    live,
                    controller_epoch=epoch,
                    versions={(info.topic, info.partition): info.version},
                )
                return _election_error(info, outcome), change

            with trio.move_on_after(timeout_s):
                for key in wanted:
                    try:
                        results[key] = await self._write_decided(key, decide)
                    except (BrokerRequestTimedOutError, UnknownTopicOrPartitionError) as exc:
                        results[key] = exc
        for key in wanted:
            if key not in results:
                results[key] = BrokerRequestTimedOutError(f"no election within {timeout_s} s")
        return results

    async def rebalance_leaders(self) -> None:
        """Kafka's checkAndTriggerAutoLeaderRebalance: preferred elections for the brokers
        whose share of not-led preferred partitions is over the threshold."""
        async with self._lock:
            if self.epoch is None:
                return
            view = self._cache.view
            partitions = [info for t in view.topics.values() for info in t.partitions.values()]
            ratios = imbalance_ratio(partitions)
            brokers = imbalanced_brokers(ratios, self._balance.per_broker_percentage)
            if not brokers:
                return
            live = set(view.brokers) - set(self.shutting_down)
            changes = preferred_leader_elections(
                partitions,
                live,
                controller_epoch=self.epoch,
                versions={(p.topic, p.partition): p.version for p in partitions},
                brokers=brokers,
            )
            self.log.info("leader_imbalance", brokers=brokers, elections=len(changes))
            for change in changes:
                try:
                    await write_state_change(self._zk, self.epoch_version, change)
                except BadVersionError:
                    await self._check_still_controller()
                    continue  # changed meanwhile: the next check looks again
                self._logged(change)

    async def resign(self) -> None:
        """Give up ``/controller`` if our session holds it (call once ``run`` has ended), so
        another broker is elected now rather than when our session closes."""
        self.epoch = None
        stat = await self._zk.exists(zl.CONTROLLER)
        if stat is not None and stat.ephemeral_owner == self._zk.session_id:
            with contextlib.suppress(NoNodeError, BadVersionError):
                await self._zk.delete(zl.CONTROLLER, stat.version)
            self.log.info("controller_resigned")


def _election_error(info: PartitionInfo, outcome: PreferredOutcome) -> BrokerResponseError | None:
    """ElectLeaders' per-partition answer for a preferred election's outcome."""
    name = f"{info.topic}-{info.partition}"
    if outcome is PreferredOutcome.NOT_NEEDED:
        return ElectionNotNeededError(f"{name}: the preferred replica already leads")
    if outcome is PreferredOutcome.NOT_AVAILABLE:
        preferred = info.replicas[0] if info.replicas else None
        return PreferredLeaderNotAvailableError(
            f"{name}: preferred replica {preferred} is not live or not in the ISR"
        )
    return None
