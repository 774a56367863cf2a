"""The broker's replication wiring: applies ``broker.replication``'s decisions to logs,
the coordinator and the replica fetchers.

Roles come from the metadata cache: each new ``ClusterView`` says, per partition, who leads
in which epoch and with which ISR. For a partition this broker leads it keeps a
``LeaderState`` (a new one per leader epoch); for one it follows, a ``FollowerState`` and
the high watermark the leader last sent; and one ``ReplicaFetcher`` task per leader it
follows. ISR changes the leader decides are written to the partition state znode by
compare-and-set on the version the cache saw (or our last write returned).

High watermarks are checkpointed in ``replication-offset-checkpoint`` (Kafka's format) in
the data dir, periodically and at shutdown, and read back at start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.log import Log, LogManager
from broker.log.checkpoint import read_checkpoint, write_checkpoint
from broker.log.config import LogConfig
from broker.metadata_cache import ClusterView
from broker.purgatory import FetchPurgatory
from broker.replica_fetcher import ReplicaFetcher
from broker.replication import AcksAllStatus, FollowerState, LeaderState
from coordinator.client import CoordinatorClient
from proto.errors import (
    BadVersionError,
    BrokerRequestTimedOutError,
    BrokerResponseError,
    MinibrokerError,
    NotEnoughReplicasAfterAppendError,
    NotLeaderForPartitionError,
)

log = structlog.get_logger("broker.replicas")

HW_CHECKPOINT_FILE = "replication-offset-checkpoint"
Key = tuple[str, int]


def now_ms() -> int:
    """Replication time: trio's clock (the autojump clock in tests)."""
    return int(trio.current_time() * 1000)


@dataclass(slots=True)
class Following:
    state: FollowerState
    high_watermark: int
    # Set at become-follower: ask the leader where our latest epoch ends and truncate
    # there (OffsetForLeaderEpoch) before fetching.
    needs_truncation: bool = True


class ReplicaManager:
    def __init__(
        self,
        config: BrokerConfig,
        logs: LogManager,
        purgatory: FetchPurgatory,
        zk: Callable[[], CoordinatorClient],
        log_config: Callable[[dict[str, str]], LogConfig],
    ) -> None:
        self.broker_id = config.broker_id
        self.config = config
        self.logs = logs
        self.purgatory = purgatory
        self._zk = zk
        self._log_config = log_config
        self.view = ClusterView()
        self.leaders: dict[Key, LeaderState] = {}
        self.following: dict[Key, Following] = {}
        self._versions: dict[Key, int] = {}
        self._writing: set[Key] = set()
        self._fetchers: dict[int, ReplicaFetcher] = {}
        self._nursery: trio.Nursery | None = None
        self._checkpoint_path = Path(config.data_dir) / HW_CHECKPOINT_FILE
        self._hw_seed: dict[Key, int] = read_checkpoint(self._checkpoint_path)
        self._checkpointed: dict[Key, int] | None = None

    # --- reading ----------------------------------------------------------------------

    def high_watermark(self, key: Key, plog: Log) -> int:
        leader = self.leaders.get(key)
        if leader is not None:
            return leader.high_watermark
        following = self.following.get(key)
        if following is not None:
            return following.high_watermark
        return min(self._hw_seed.get(key, 0), plog.log_end_offset)

    # --- running ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the fetchers and ISR writes; check ISR lag and checkpoint HWs periodically."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.on_view(self.view)
            nursery.start_soon(self._isr_shrink_loop)
            task_status.started()
            try:
                interval = self.config.replica_high_watermark_checkpoint_interval_ms / 1000
                while True:
                    await trio.sleep(interval)
                    self.checkpoint_high_watermarks()
            finally:
                self._nursery = None
                for fetcher in self._fetchers.values():
                    fetcher.cancel_scope.cancel()

    async def _isr_shrink_loop(self) -> None:
        # Kafka checks every replica.lag.time.max.ms / 2.
        interval = max(self.config.replica_lag_time_max_ms / 2000, 0.01)
        while True:
            await trio.sleep(interval)
            now = now_ms()
            for key, leader in list(self.leaders.items()):
                if key in self._writing:
                    continue
                shrunk = leader.maybe_shrink_isr(now)
                if shrunk is not None:
                    log.info("isr_shrink", topic=key[0], partition=key[1], isr=shrunk)
                    self._propose(key, leader, shrunk)

    def checkpoint_high_watermarks(self) -> None:
        hws: dict[Key, int] = {}
        for plog in self.logs.all_logs():
            key = (plog.topic, plog.partition)
            hws[key] = self.high_watermark(key, plog)
        if hws != self._checkpointed:  # an fsync only when something moved
            write_checkpoint(self._checkpoint_path, hws)
            self._checkpointed = hws

    # --- roles from the view ----------------------------------------------------------

    def on_view(self, view: ClusterView) -> None:
        """Apply a new view: become leader or follower where it says so, drop the rest,
        and give each leader's fetcher its partitions."""
        self.view = view
        if self._nursery is None:
            return  # applied when ``run`` starts
        wanted: dict[int, dict[Key, int]] = {}
        seen: set[Key] = set()
        led: set[Key] = set()
        for topic in view.topics.values():
            for p, info in topic.partitions.items():
                key = (topic.name, p)
                state = info.state
                plog = self.logs.get_log(topic.name, p)
                if state is None or self.broker_id not in info.replicas or plog is None:
                    continue
                seen.add(key)
                if state.leader == self.broker_id:
                    if self._lead(key, plog, info.replicas, state, info.version, topic.config):
                        led.add(key)
                elif state.leader >= 0:
                    self._follow(key, plog, state)
                    wanted.setdefault(state.leader, {})[key] = state.leader_epoch
        for key in [k for k in self.leaders if k not in led]:
            self._hw_seed[key] = self.leaders.pop(key).high_watermark
        followed = {k for parts in wanted.values() for k in parts}
        for key in [k for k in self.following if k not in followed]:
            self._hw_seed[key] = self.following.pop(key).high_watermark
        for key in [k for k in self._versions if k not in seen]:
            del self._versions[key]
        self._update_fetchers(wanted)

    def _lead(
        self,
        key: Key,
        plog: Log,
        replicas: list[int],
        state: zl.PartitionState,
        version: int,
        topic_config: dict[str, str],
    ) -> bool:
        """Lead ``key`` in the view's epoch; False when the view's ISR lacks us."""
        min_isr = self._log_config(topic_config).min_insync_replicas
        leader = self.leaders.get(key)
        if leader is None or leader.leader_epoch != state.leader_epoch:
            if self.broker_id not in state.isr:
                log.warning("leader_not_in_isr", topic=key[0], partition=key[1], isr=state.isr)
                return False
            following = self.following.pop(key, None)
            if following is not None:
                hw = following.high_watermark
            else:
                hw = leader.high_watermark if leader else self._hw_seed.get(key, 0)
            plog.leader_epoch_cache.assign(state.leader_epoch, plog.log_end_offset)
            self.leaders[key] = LeaderState(
                self.broker_id,
                state.leader_epoch,
                replicas,
                [r for r in state.isr if r in replicas],
                plog.log_end_offset,
                hw,
                now_ms(),
                self.config.replica_lag_time_max_ms,
                min_isr,
            )
            self._versions[key] = version
            log.info(
                "became_leader",
                topic=key[0],
                partition=key[1],
                epoch=state.leader_epoch,
                isr=state.isr,
                log_end_offset=plog.log_end_offset,
            )
            self.purgatory.notify(key)
            return True
        leader.min_insync_replicas = min_isr
        if version > self._versions.get(key, -1):
            self._versions[key] = version
            isr = [r for r in state.isr if r in replicas]
            if self.broker_id in isr and leader.isr_observed(isr):
                self.purgatory.notify(key)
        return True

    def _follow(self, key: Key, plog: Log, state: zl.PartitionState) -> None:
        current = self.following.get(key)
        if (
            current is not None
            and current.state.leader_id == state.leader
            and current.state.leader_epoch == state.leader_epoch
        ):
            return
        if current is not None:
            hw = current.high_watermark
        else:
            leader = self.leaders.pop(key, None)
            hw = leader.high_watermark if leader else self._hw_seed.get(key, 0)
        self.following[key] = Following(
            FollowerState(self.broker_id, state.leader, state.leader_epoch),
            min(hw, plog.log_end_offset),
        )
        log.info(
            "became_follower",
            topic=key[0],
            partition=key[1],
            leader=state.leader,
            epoch=state.leader_epoch,
        )

    def _update_fetchers(self, wanted: dict[int, dict[Key, int]]) -> None:
        assert self._nursery is not None
        for leader_id in list(self._fetchers):
            if leader_id not in wanted:
                self._fetchers.pop(leader_id).cancel_scope.cancel()
        for leader_id, parts in wanted.items():
            fetcher = self._fetchers.get(leader_id)
            if fetcher is None:
                fetcher = ReplicaFetcher(self, leader_id)
                self._fetchers[leader_id] = fetcher
                self._nursery.start_soon(fetcher.run)
            fetcher.set_partitions(parts)

    # --- acks=all ----------------------------------------------------------------------

    async def wait_acks_all(
        self, waiting: dict[Key, tuple[LeaderState, int]], timeout_ms: int
    ) -> dict[Key, BrokerResponseError]:
        """Wait (in the purgatory) until the HW passes each partition's last appended
        offset; returns the partitions that failed and why (timeout, lost leadership, ISR
        below min.insync.replicas after the append)."""
        deadline = trio.current_time() + max(timeout_ms, 0) / 1000
        pending = dict(waiting)
        failed: dict[Key, BrokerResponseError] = {}
        while True:
            for key, (leader, last_offset) in list(pending.items()):
                if self.leaders.get(key) is not leader:
                    failed[key] = NotLeaderForPartitionError(f"{key[0]}-{key[1]}: leader moved")
                    del pending[key]
                    continue
                status = leader.acks_all_status(last_offset)
                if status is AcksAllStatus.WAITING:
                    continue
                del pending[key]
                if status is AcksAllStatus.NOT_ENOUGH_REPLICAS_AFTER_APPEND:
                    failed[key] = NotEnoughReplicasAfterAppendError(
                        f"{key[0]}-{key[1]}: ISR {leader.isr} shrank below "
                        f"min.insync.replicas {leader.min_insync_replicas}"
                    )
            remaining = deadline - trio.current_time()
            if not pending:
                return failed
            if remaining <= 0:
                for key in pending:
                    failed[key] = BrokerRequestTimedOutError(
                        f"{key[0]}-{key[1]}: the ISR did not replicate within {timeout_ms} ms"
                    )
                return failed
            await self.purgatory.wait_any(pending, remaining)

    # --- leader events ----------------------------------------------------------------

    def on_append(self, key: Key, log_end_offset: int) -> None:
        leader = self.leaders.get(key)
        if leader is not None and leader.on_append(log_end_offset):
            self.purgatory.notify(key)

    def on_follower_fetch(
        self, key: Key, leader: LeaderState, replica_id: int, offset: int
    ) -> None:
        """A follower fetched ``key`` at ``offset`` (its LEO): may move the HW (wake
        acks=all produces and consumers) and start an ISR expansion."""
        update = leader.on_follower_fetch(replica_id, offset, now_ms())
        if update.hw_changed:
            self.purgatory.notify(key)
        if update.expand_isr_to is not None:
            log.info("isr_expand", topic=key[0], partition=key[1], isr=update.expand_isr_to)
            self._propose(key, leader, update.expand_isr_to)

    def _propose(self, key: Key, leader: LeaderState, isr: list[int]) -> None:
        if self._nursery is None:
            leader.isr_update_failed()
            return
        self._writing.add(key)
        self._nursery.start_soon(self._write_isr, key, leader, isr)

    async def _write_isr(self, key: Key, leader: LeaderState, isr: list[int]) -> None:
        """Write one ISR proposal by CAS; exactly one ``isr_updated``/``isr_update_failed``."""
        topic, partition = key
        path = zl.partition_state_path(topic, partition)
        info = self.view.partition(topic, partition)
        controller_epoch = info.state.controller_epoch if info and info.state else 0
        state = zl.PartitionState(self.broker_id, leader.leader_epoch, isr, controller_epoch)
        version = self._versions.get(key, -1)
        if version < 0:  # -1 would write unconditionally: never without a known version
            leader.isr_update_failed()
            self._writing.discard(key)
            return
        resolved = False
        try:
            try:
                stat = await self._zk().set(path, state.encode(), version)
            except MinibrokerError as exc:  # lost CAS, coordinator away, session gone
                resolved = True
                moved = leader.isr_update_failed()
                log.info("isr_write_failed", topic=topic, partition=partition, error=str(exc))
                if isinstance(exc, BadVersionError):
                    moved = await self._reread(key, leader, path) or moved
            else:
                resolved = True
                moved = leader.isr_updated(isr)
                if self.leaders.get(key) is leader:
                    self._versions[key] = max(self._versions.get(key, -1), stat.version)
            if moved:
                self.purgatory.notify(key)
        finally:
            if not resolved:
                leader.isr_update_failed()
            self._writing.discard(key)

    async def _reread(self, key: Key, leader: LeaderState, path: str) -> bool:
        """After a lost CAS: same epoch, observe the ISR; else we were deposed (the view
        will follow)."""
        try:
            data, stat = await self._zk().get(path)
        except MinibrokerError as exc:
            log.info("isr_reread_failed", topic=key[0], partition=key[1], error=str(exc))
            return False
        state = zl.PartitionState.decode(path, data)
        if self.leaders.get(key) is not leader or stat.version <= self._versions.get(key, -1):
            return False
        isr = [r for r in state.isr if r in leader.replicas]
        if (
            state.leader == self.broker_id
            and state.leader_epoch == leader.leader_epoch
            and self.broker_id in isr
        ):
            self._versions[key] = stat.version
            return leader.isr_observed(isr)
        # Deposed: keep the old version, so no later ISR write of ours can win the CAS
        # against the new leader's state (the epoch must never go backwards).
        log.info("deposed_as_leader", topic=key[0], partition=key[1], leader=state.leader)
        return False
