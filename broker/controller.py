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

The controller's tasks live in the session's nursery: a lost session ends them, and the
next session runs a new candidate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import structlog
import trio

from broker import zk_layout as zl
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView, MetadataCache, PartitionInfo
from broker.replication.election import StateChange, on_brokers_changed
from coordinator.client import CheckOp, CoordinatorClient, CreateOp, SetDataOp, Stat
from proto.errors import (
    BadVersionError,
    ConnectionLossError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
)

log = structlog.get_logger("broker.controller")

_TRANSIENT = (ConnectionLossError, OperationTimeoutError, SessionMovedError)


class ControllerMovedError(Exception):
    """Our ``/controller_epoch`` version is no longer current: another controller rules."""


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
    ) -> None:
        self.broker_id = broker_id
        self._zk = zk
        self._cache = cache
        self._log_config = log_config
        self._changed = trio.Event()
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
        while True:
            self._changed = trio.Event()
            if not await self._decide_and_write(view):
                view = await self._cache.refresh_now()  # a lost CAS: the view was stale
                continue
            await self._changed.wait()
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
            partitions, set(view.brokers), self.epoch, unclean, versions=versions
        )
        for change in changes:
            try:
                await write_state_change(self._zk, self.epoch_version, change)
            except BadVersionError:
                await self._check_still_controller()
                self.log.info("state_write_lost", topic=change.topic, partition=change.partition)
                return False
            self.log.info(
                "partition_state_changed",
                topic=change.topic,
                partition=change.partition,
                reason=change.reason.value,
                leader=change.state.leader,
                leader_epoch=change.state.leader_epoch,
                isr=change.state.isr,
            )
        return True

    async def _check_still_controller(self) -> None:
        _data, stat = await self._zk.get(zl.CONTROLLER_EPOCH)
        if stat.version != self.epoch_version:
            raise ControllerMovedError(f"/controller_epoch moved to version {stat.version}")
