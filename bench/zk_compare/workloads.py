"""The same workload on both systems: minibroker through trio, ZooKeeper through kazoo."""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import trio

from bench.zk_compare.cluster import Ensemble
from bench.zk_compare.results import PHASES, CpuMeter, FailoverResult, PhaseResult, phase_result
from coordinator.client import CoordinatorClient, open_coordinator
from proto.errors import BrokerResponseError, ConnectionLossError

# --- minibroker's workload (trio) -----------------------------------------------------


async def _mb_phase(
    zk: CoordinatorClient, name: str, paths: list[str], concurrency: int, payload: bytes
) -> PhaseResult:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    indexes = iter(range(len(paths)))  # shared: each task takes the next znode

    async def worker() -> None:
        for i in indexes:
            t0 = time.perf_counter()
            try:
                if name == "create":
                    await zk.create(paths[i], payload)
                elif name == "set":
                    await zk.set(paths[i], payload)
                else:
                    await zk.get(paths[i])
            except BrokerResponseError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return phase_result(name, latencies, errors, time.perf_counter() - start)


async def _mb_failover(
    cluster: Ensemble, zk: CoordinatorClient, leader: int, paths: list[str], concurrency: int
) -> FailoverResult:
    killed_at = float("inf")
    first_ack = trio.Event()
    ack_at = 0.0

    async def writer(k: int) -> None:
        nonlocal ack_at
        for i in itertools.count(k, concurrency):
            sent = time.perf_counter()
            try:
                await zk.set(paths[i % len(paths)], b"f" * 100)
            except ConnectionLossError:
                continue  # not acknowledged; the client moves on to a survivor
            if sent > killed_at and not first_ack.is_set():
                ack_at = time.perf_counter()
                first_ack.set()

    new_leader, leader_ms = None, None
    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(writer, k)
        await trio.sleep(0.5)
        cluster.kill(leader)
        killed_at = time.perf_counter()
        with trio.move_on_after(30):
            # mntr is a blocking round trip: off the event loop, so the writers keep going
            find = functools.partial(cluster.leader, leader, synced=False)
            while (new_leader := await trio.to_thread.run_sync(find)) is None:
                await trio.sleep(0.005)
            leader_ms = (time.perf_counter() - killed_at) * 1000
            await first_ack.wait()
        nursery.cancel_scope.cancel()
    ack_ms = (ack_at - killed_at) * 1000 if first_ack.is_set() else None
    return FailoverResult(leader, new_leader, _ms(leader_ms), _ms(ack_ms))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run_minibroker(
    cluster: Ensemble, leader: int, args: argparse.Namespace, meter: CpuMeter
) -> tuple[list[PhaseResult], FailoverResult | None]:
    payload = os.urandom(args.size)
    async with open_coordinator(cluster.hosts(leader)) as zk:
        for prefix, n in (("/warmup", args.warmup), ("/bench", args.n)):
            await zk.ensure_path(prefix)
            paths = [f"{prefix}/n{i:07d}" for i in range(n)]
            phases = []
            for name in PHASES:
                before = meter.sample()
                phase = await _mb_phase(zk, name, paths, args.concurrency, payload)
                phases.append(meter.annotate(phase, before))
        failover = None
        if len(cluster.members) > 1 and not args.no_failover:
            failover = await _mb_failover(cluster, zk, leader, paths, args.concurrency)
    return phases, failover


# --- ZooKeeper's workload (kazoo: its own threads, callbacks) -------------------------


class KazooLoad:
    """Keeps ``concurrency`` kazoo async requests outstanding: ``issue`` blocks for a
    slot; the completion callback (on kazoo's thread) records and frees it."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.slots = threading.BoundedSemaphore(concurrency)
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged)
        self.errors: dict[str, int] = {}

    def issue(self, call: Callable[[], Any]) -> None:
        self.slots.acquire()
        sent = time.perf_counter()

        def done(result: Any) -> None:
            now = time.perf_counter()
            with self.lock:
                if result.exception is None:
                    self.latencies.append(now - sent)
                    self.acks.append((sent, now))
                else:
                    kind = type(result.exception).__name__
                    self.errors[kind] = self.errors.get(kind, 0) + 1
            self.slots.release()

        call().rawlink(done)

    def drain(self) -> None:
        for _ in range(self.concurrency):
            self.slots.acquire()
        for _ in range(self.concurrency):
            self.slots.release()


def _kazoo_phase(
    zk: Any, name: str, paths: list[str], concurrency: int, payload: bytes
) -> PhaseResult:
    load = KazooLoad(concurrency)
    start = time.perf_counter()
    for path in paths:
        if name == "create":
            load.issue(functools.partial(zk.create_async, path, payload))
        elif name == "set":
            load.issue(functools.partial(zk.set_async, path, payload))
        else:
            load.issue(functools.partial(zk.get_async, path))
    load.drain()
    return phase_result(name, load.latencies, load.errors, time.perf_counter() - start)


def _kazoo_failover(
    cluster: Ensemble, zk: Any, leader: int, paths: list[str], concurrency: int
) -> FailoverResult:
    load = KazooLoad(concurrency)
    stop = threading.Event()

    def writer() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            load.issue(functools.partial(zk.set_async, paths[i % len(paths)], b"f" * 100))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    new_leader, leader_ms, ack_ms = None, None, None
    try:
        time.sleep(0.5)
        cluster.kill(leader)
        killed_at = time.perf_counter()
        while time.perf_counter() < killed_at + 30 and (leader_ms is None or ack_ms is None):
            if leader_ms is None and (new_leader := cluster.leader(leader, synced=False)):
                leader_ms = (time.perf_counter() - killed_at) * 1000
            with load.lock:
                acked = [ack for sent, ack in load.acks if sent > killed_at]
            if ack_ms is None and acked:
                ack_ms = (min(acked) - killed_at) * 1000
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(timeout=15)
    return FailoverResult(leader, new_leader, _ms(leader_ms), _ms(ack_ms))


def run_zookeeper(
    cluster: Ensemble, leader: int, args: argparse.Namespace, meter: CpuMeter
) -> tuple[list[PhaseResult], FailoverResult | None]:
    payload = os.urandom(args.size)
    kazoo_client = importlib.import_module("kazoo.client")
    retry = importlib.import_module("kazoo.retry").KazooRetry(
        max_tries=-1,
        delay=0.05,
        backoff=2,
        max_delay=1.0,  # as minibroker's client
    )
    zk = kazoo_client.KazooClient(
        hosts=cluster.hosts(leader), randomize_hosts=False, timeout=10.0, connection_retry=retry
    )
    zk.start(timeout=30)
    try:
        for prefix, n in (("/warmup", args.warmup), ("/bench", args.n)):
            zk.ensure_path(prefix)
            paths = [f"{prefix}/n{i:07d}" for i in range(n)]
            phases = []
            for name in PHASES:
                before = meter.sample()
                phase = _kazoo_phase(zk, name, paths, args.concurrency, payload)
                phases.append(meter.annotate(phase, before))
        failover = None
        if len(cluster.members) > 1 and not args.no_failover:
            failover = _kazoo_failover(cluster, zk, leader, paths, args.concurrency)
    finally:
        zk.stop()
        zk.close()
    return phases, failover
