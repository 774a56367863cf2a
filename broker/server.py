"""The broker process: storage, coordinator session, metadata cache and the TCP server.

``serve(config)`` follows hypercorn's trio shape: it binds (port 0 in tests), reports the
bound address through ``task_status.started``, serves until ``shutdown`` is set (or it is
cancelled), then (with ``controlled.shutdown.enable``) asks the controller to move its
leaderships away while it still serves (``broker.controlled_shutdown``), gives up the
controller role if it holds it, stops accepting, closes its coordinator session (its
ephemeral registration vanishes at once) and shuts the logs down cleanly (the
clean-shutdown marker).

Per connection: one loop reads bytes into the sans-IO ``ServerConnection`` and handles the
requests one after another, as Kafka does, so produce requests pipelined on one connection
are appended in the order they were sent. Fetch responses go out as msgpack prefixes plus
``os.sendfile`` from the segment files: record bytes never pass through Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import itertools
import os
import socket
import time
import uuid
from pathlib import Path

import structlog
import trio

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.controlled_shutdown import ask_controller, shut_down_controlled
from broker.controller import Controller, LeaderBalance
from broker.group_coordinator import GroupCoordinator
from broker.group_coordinator.context import CLIENT_HOST, CLIENT_ID
from broker.handlers import RequestHandler, close_file_records, topic_log_config
from broker.listeners import CURRENT_LISTENER, Endpoint
from broker.log import LogManager
from broker.metadata_cache import ClusterView, MetadataCache
from broker.partition_logs import reconcile_logs
from broker.purgatory import FetchPurgatory
from broker.replica_manager import ReplicaManager
from coordinator.client import CoordinatorClient, SessionState, open_coordinator
from coordinator.recipes import register_ephemeral
from proto import messages as m
from proto.codec import FileRecords
from proto.connection import ServerConnection
from proto.errors import (
    BrokerResponseError,
    ConnectionFailedError,
    CorruptRecordError,
    KafkaStorageError,
    MinibrokerError,
    NodeExistsError,
    RemoteProtocolError,
    UnknownServerError,
    UnsupportedVersionError,
)
from proto.messages import UnsupportedRequest

RECEIVE_SIZE = 256 * 1024
LOG_CLEANER_BACKOFF_MS = 15_000  # Kafka's log.cleaner.backoff.ms
_conn_ids = itertools.count(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """True if ``exc`` (or every leaf of an exception group) is one of ``kinds``."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(e, kinds) for e in exc.exceptions)
    return isinstance(exc, kinds)


class BrokerIdInUseError(MinibrokerError):
    """Another live broker holds this broker id."""


async def _sendfile(sock: trio.socket.SocketType, fr: FileRecords) -> None:
    offset, remaining = fr.position, fr.size
    while remaining:
        try:
            sent = os.sendfile(sock.fileno(), fr.fd, offset, remaining)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise trio.BrokenResourceError("peer closed during sendfile") from exc
            raise
        if sent == 0:
            # The frame length is already on the wire; a short file cannot be papered over.
            raise trio.BrokenResourceError("segment file shorter than promised")
        offset += sent
        remaining -= sent
    await trio.lowlevel.checkpoint()


class Broker:
    """One broker. Outlives coordinator sessions: when its session expires (a long pause,
    a partition from the ensemble) it opens a new one and registers again, as Kafka does,
    while the connections it serves stay open."""

    def __init__(
        self,
        config: BrokerConfig,
        logs: LogManager,
        advertised: tuple[str, int],
        endpoints: tuple[Endpoint, ...] = (),
    ) -> None:
        self.config = config
        self.logs = logs
        self.advertised = advertised  # the inter-broker listener's address
        self.endpoints = endpoints  # every advertised listener (empty: PLAINTEXT only)
        self.log = structlog.get_logger("broker").bind(broker_id=config.broker_id)
        self.purgatory = FetchPurgatory()
        self.replicas = ReplicaManager(
            config,
            logs,
            self.purgatory,
            lambda: self.zk,
            lambda overrides: topic_log_config(config.log, overrides),
        )
        # Groups outlive coordinator sessions: one coordinator for the broker's life.
        self.group_coordinator = GroupCoordinator(
            config,
            self.replicas,
            self.purgatory,
            cache=lambda: self.cache,
            topic_admin=lambda: self.handler.topic_admin,
        )
        self._zk: CoordinatorClient | None = None
        self._cache: MetadataCache | None = None
        self._handler: RequestHandler | None = None
        self.controller: Controller | None = None
        self.broker_epoch = -1  # czxid of our registration in the current session
        self.leaving = False  # in controlled shutdown: lead until moved, follow nothing
        self.sessions_done = trio.Event()
        self._served = False  # a first session came up
        self._last_view: ClusterView | None = None
        self._strays: set[tuple[str, int]] = set()

    @property
    def zk(self) -> CoordinatorClient:
        assert self._zk is not None, "no coordinator session yet"
        return self._zk

    @property
    def cache(self) -> MetadataCache:
        assert self._cache is not None, "no coordinator session yet"
        return self._cache

    @property
    def handler(self) -> RequestHandler:
        assert self._handler is not None, "no coordinator session yet"
        return self._handler

    def _attach(self, zk: CoordinatorClient) -> None:
        """Use a new session: a fresh metadata cache (and its watches) on top of it."""
        self._zk = zk
        old_view = self._cache.view if self._cache is not None else None
        self._cache = MetadataCache(zk, self.reconcile)
        if old_view is not None:
            self._cache.view = old_view  # keep serving the last view until the reload
        self._handler = RequestHandler(
            self.config,
            self.logs,
            self._cache,
            zk,
            self.purgatory,
            self.replicas,
            groups=self.group_coordinator,
        )

    async def run_sessions(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold a registered coordinator session until ``stop``; replace it when it expires.

        The first session must come up (or this raises); later ones are retried with
        backoff while the ensemble is unreachable.
        """
        started = False
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    await self._one_session(stop, task_status if not started else None)
                    started = True
                    backoff = 0.5
                except BaseException as exc:
                    started = started or self._served
                    if not started or not _only(exc, (ConnectionFailedError, BrokerResponseError)):
                        raise
                    self.log.warning("coordinator_session_failed", error=str(exc), retry_s=backoff)
                    with trio.move_on_after(backoff):
                        await stop.wait()
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.sessions_done.set()

    async def _one_session(
        self, stop: trio.Event, task_status: trio.TaskStatus[None] | None
    ) -> None:
        lost = trio.Event()

        def on_state(state: SessionState) -> None:
            self.log.info("coordinator_session", state=state.value)
            if state is SessionState.LOST:
                lost.set()
            elif state is SessionState.CONNECTED and self._cache is not None:
                self._cache.mark_dirty()  # watches may have been missed while away

        async with open_coordinator(
            self.config.coordinator,
            session_timeout_ms=self.config.zookeeper_session_timeout_ms,
            connect_timeout_ms=self.config.zookeeper_connection_timeout_ms,
        ) as zk:
            self._attach(zk)
            zk.add_listener(on_state)
            await self.ensure_layout()
            await self.register()
            self.controller = Controller(
                self.config.broker_id,
                zk,
                self.cache,
                lambda overrides: topic_log_config(self.config.log, overrides),
                LeaderBalance(
                    self.config.auto_leader_rebalance_enable,
                    self.config.leader_imbalance_check_interval_seconds,
                    self.config.leader_imbalance_per_broker_percentage,
                ),
            )
            self.handler.controller = self.controller
            candidacy = trio.CancelScope()
            candidacy_done = trio.Event()
            async with trio.open_nursery() as nursery:
                # The first load sees our own registration, so we serve with it in view.
                await nursery.start(self.cache.run)
                if self.config.controller_enable:
                    nursery.start_soon(self._stand_for_controller, candidacy, candidacy_done)
                else:
                    candidacy_done.set()
                if task_status is not None:
                    task_status.started()
                self._served = True  # from now on a lost session is replaced, not fatal
                async with trio.open_nursery() as waiters:

                    async def wait_and_cancel(event: trio.Event) -> None:
                        await event.wait()
                        waiters.cancel_scope.cancel()

                    waiters.start_soon(wait_and_cancel, stop)
                    waiters.start_soon(wait_and_cancel, lost)
                if stop.is_set() and not lost.is_set():
                    await self._leave_cluster(candidacy, candidacy_done)
                nursery.cancel_scope.cancel()
        if lost.is_set() and not stop.is_set():
            self.log.warning("coordinator_session_expired_registering_again")

    async def _stand_for_controller(self, candidacy: trio.CancelScope, done: trio.Event) -> None:
        assert self.controller is not None
        try:
            with candidacy:
                await self.controller.run()
        finally:
            done.set()

    async def _leave_cluster(self, candidacy: trio.CancelScope, candidacy_done: trio.Event) -> None:
        """A clean stop, session still up: move our leaderships away (connections are
        still served meanwhile), then give up the controller role if we hold it."""
        controller = self.controller
        assert controller is not None
        timeout_s = self.config.controller_socket_timeout_ms / 1000
        if self.config.controlled_shutdown_enable:
            # Stop following first, as Kafka's StopReplica does: a follower that kept
            # fetching would be taken back into the ISR the controller drops it from.
            self.leaving = True
            self.replicas.on_view(self._roles_view(self.cache.view))

            async def attempt() -> list[tuple[str, int]]:
                return await ask_controller(
                    self.config.broker_id, self.broker_epoch, self.cache, controller, timeout_s
                )

            moved = await shut_down_controlled(
                attempt,
                self.config.controlled_shutdown_max_retries,
                self.config.controlled_shutdown_retry_backoff_ms / 1000,
                self.config.broker_id,
            )
            if moved:
                # See the moves now: deposed roles end and acks=all waiters answer
                # NOT_LEADER_OR_FOLLOWER before the connections close.
                with contextlib.suppress(MinibrokerError), trio.move_on_after(timeout_s):
                    await self.cache.refresh_now()
        candidacy.cancel()
        await candidacy_done.wait()  # no longer standing: nobody re-creates /controller
        try:
            with trio.move_on_after(timeout_s):
                await controller.resign()
        except MinibrokerError as exc:
            self.log.warning("controller_resign_failed", error=str(exc))

    # --- coordinator ------------------------------------------------------------------

    async def ensure_layout(self) -> None:
        for path in zl.BASE_PATHS:
            await self.zk.ensure_path(path)
        with contextlib.suppress(NodeExistsError):
            await self.zk.create(zl.CLUSTER_ID, uuid.uuid4().hex.encode())

    async def register(self) -> None:
        host, port = self.advertised
        reg = zl.BrokerRegistration(
            self.config.broker_id, host, port, self.config.rack, _now_ms(), self.endpoints
        )
        path = zl.broker_path(self.config.broker_id)
        # A broker killed a moment ago leaves its ephemeral until its session expires: wait
        # for that (one session timeout) instead of failing, and fail clearly after it.
        patience = self.config.zookeeper_session_timeout_ms * 1.5 / 1000
        with trio.move_on_after(patience):
            while True:
                try:
                    await register_ephemeral(self.zk, path, reg.encode())
                    stat = await self.zk.exists(path)
                    self.broker_epoch = stat.czxid if stat is not None else -1
                    self.log.info(
                        "broker_registered", host=host, port=port, broker_epoch=self.broker_epoch
                    )
                    return
                except NodeExistsError:
                    gone = trio.Event()
                    watch = lambda _e, gone=gone: gone.set()  # noqa: E731
                    if await self.zk.exists(path, watch=watch) is not None:
                        self.log.warning("broker_id_registered_waiting", path=path)
                        await gone.wait()
        raise BrokerIdInUseError(
            f"broker id {self.config.broker_id} is registered by another live broker ({path})"
        )

    def reconcile(self, view: ClusterView) -> None:
        """Make local logs match the assignment (see ``broker.partition_logs``), then take
        the leader and follower roles the view gives this broker."""
        configs = {
            name: topic_log_config(self.config.log, t.config) for name, t in view.topics.items()
        }
        reconcile_logs(
            self.logs, self.config.broker_id, self._last_view, view, configs, self._strays
        )
        self._last_view = view
        leading = dict(self.replicas.leaders)
        self.replicas.on_view(self._roles_view(view))
        self.group_coordinator.roles_changed()  # load/unload __consumer_offsets partitions
        for key, state in leading.items():
            if self.replicas.leaders.get(key) is not state:
                self.purgatory.notify(key)  # acks=all waiters answer NOT_LEADER_OR_FOLLOWER
        if self.controller is not None:
            self.controller.view_changed()

    def _roles_view(self, view: ClusterView) -> ClusterView:
        """The view the replica manager takes roles from: while leaving, partitions this
        broker does not lead are shown without it, so it follows (fetches) none of them."""
        if not self.leaving:
            return view
        me = self.config.broker_id
        topics = {}
        for name, t in view.topics.items():
            parts = {
                p: info
                if info.state is not None and info.state.leader == me
                else dataclasses.replace(info, replicas=[r for r in info.replicas if r != me])
                for p, info in t.partitions.items()
            }
            topics[name] = dataclasses.replace(t, partitions=parts)
        return dataclasses.replace(view, topics=topics)

    # --- housekeeping -----------------------------------------------------------------

    async def housekeeping(self) -> None:
        interval = self.config.log_flush_scheduler_interval_ms / 1000
        while True:
            await trio.sleep(interval)
            self.logs.tick(_now_ms())

    async def log_cleaner(self) -> None:
        """Kafka's log cleaner: compact the logs with ``cleanup.policy`` compact, below
        each one's high watermark. Planning and the swap run on the loop; the two passes
        over the segments (seconds for a big log) in a worker thread."""
        cleaner = self.logs.cleaner
        while True:
            await trio.sleep(LOG_CLEANER_BACKOFF_MS / 1000)
            self.logs.checkpoint_recovery_points()  # cleaning stops at the recovery point
            for plog in self.logs.all_logs():
                key = (plog.topic, plog.partition)
                hw = self.replicas.high_watermark(key, plog)
                try:
                    plan = cleaner.plan(plog, _now_ms(), upper_bound=hw)
                    if plan is None:
                        continue
                    built = await trio.to_thread.run_sync(cleaner.build, plan)
                    stats = cleaner.install(built)
                except (KafkaStorageError, CorruptRecordError, OSError) as exc:
                    cleaner.uncleanable.add(key)  # left alone until restart, as Kafka
                    self.log.error("log_cleaning_failed", topic=key[0], partition=key[1],
                                   error=str(exc))  # fmt: skip
                    continue
                if stats is not None:
                    self.log.info("log_cleaned", topic=key[0], partition=key[1],
                                  dirty=[stats.first_dirty_offset, stats.end_offset])  # fmt: skip

    # --- connections ------------------------------------------------------------------

    async def handle_connection(self, stream: trio.SocketStream, listener: str = "") -> None:
        # Metadata answers with the addresses of the listener the request came in on.
        CURRENT_LISTENER.set(listener or self.config.listener_plan.inter_broker)
        CLIENT_HOST.set(_peer_host(stream))  # JoinGroup records it (Kafka's client host)
        conn_log = self.log.bind(conn_id=next(_conn_ids))
        conn = ServerConnection(self.config.socket_request_max_bytes)
        try:
            while True:
                try:
                    item = conn.next_request()
                except UnsupportedRequest as exc:
                    conn_log.warning("unsupported_request", error=str(exc))
                    await stream.send_all(conn.send_error(exc.header.correlation_id, exc.code))
                    return
                if item is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                header, request = item
                CLIENT_ID.set(header.client_id)
                if not self.handler.handles(request):  # on the wire, not served (yet)
                    await stream.send_all(
                        conn.send_error(header.correlation_id, UnsupportedVersionError.code)
                    )
                    continue
                try:
                    response = await self.handler.handle(request)
                except Exception:
                    conn_log.exception("request_failed", api_key=header.api_key)
                    await stream.send_all(
                        conn.send_error(header.correlation_id, UnknownServerError.code)
                    )
                    continue
                if response is not None:
                    await self._send(stream, conn, header, response)
        except RemoteProtocolError as exc:
            conn_log.warning("protocol_error", error=str(exc))
        except trio.BrokenResourceError:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _send(
        self,
        stream: trio.SocketStream,
        conn: ServerConnection,
        header: m.RequestHeader,
        response: m.Response,
    ) -> None:
        if not isinstance(response, m.FetchResponse):
            await stream.send_all(conn.send_response(header, response))
            return
        try:
            segments = conn.send_response_segments(header, response)
            pending = bytearray()
            for seg in segments:
                if isinstance(seg, FileRecords):
                    if pending:
                        await stream.send_all(pending)
                        pending = bytearray()
                    await _sendfile(stream.socket, seg)
                else:
                    pending += seg
            if pending:
                await stream.send_all(pending)
        finally:
            close_file_records(response)


def _peer_host(stream: trio.SocketStream) -> str:
    try:
        return "/" + str(stream.socket.getpeername()[0])
    except OSError:
        return ""


async def _bind(endpoints: tuple[Endpoint, ...]) -> dict[str, list[trio.SocketListener]]:
    """Bind every listener (an empty host: every interface), or none of them."""
    out: dict[str, list[trio.SocketListener]] = {}
    try:
        for e in endpoints:
            out[e.name] = await trio.open_tcp_listeners(e.port, host=e.host or None)
    except BaseException:
        for socks in out.values():
            for sock in socks:
                sock.socket.close()
        raise
    return out


async def serve(
    config: BrokerConfig,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one broker until ``shutdown`` is set (or it is cancelled)."""
    log = structlog.get_logger("broker").bind(broker_id=config.broker_id)
    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = LogManager(data_dir, config.log)
    logs.startup()
    replicas: ReplicaManager | None = None
    try:
        plan = config.listener_plan
        listeners = await _bind(plan.bind)
        bound = {name: socks[0].socket.getsockname()[:2] for name, socks in listeners.items()}
        bound_host, bound_port = bound[plan.inter_broker]
        endpoints = plan.advertise(bound, socket.gethostname())
        inter = plan.inter_broker_endpoint(endpoints)
        broker = Broker(config, logs, (inter.host, inter.port), endpoints)
        replicas = broker.replicas
        stop = shutdown if shutdown is not None else trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.replicas.run)
            await nursery.start(broker.group_coordinator.run)
            await nursery.start(broker.run_sessions, stop)
            nursery.start_soon(broker.housekeeping)
            nursery.start_soon(broker.log_cleaner)
            for name, socks in listeners.items():
                handler = functools.partial(broker.handle_connection, listener=name)
                await nursery.start(trio.serve_listeners, handler, socks)
            log.info(
                "broker_started",
                listen=f"{bound_host}:{bound_port}",
                listeners={name: f"{h}:{p}" for name, (h, p) in bound.items()},
                advertised=[str(e) for e in endpoints],
                data_dir=str(data_dir),
            )
            task_status.started((bound_host, bound_port))
            # On stop the session loop closes its session cleanly (our registration vanishes
            # at once); only then are the connections and housekeeping cancelled.
            await broker.sessions_done.wait()
            nursery.cancel_scope.cancel()
    finally:
        if replicas is not None:
            replicas.checkpoint_high_watermarks()
        logs.shutdown()
        log.info("broker_stopped")
