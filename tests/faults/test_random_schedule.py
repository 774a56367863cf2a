"""A seeded random schedule of faults against 3 brokers and a 3-member coordinator ensemble,
under an acks=all producer and a polling consumer, checked at the end (Jepsen's nemesis).

Faults: kill -9 of a broker then a restart; SIGSTOP then SIGCONT of a broker; a broker cut
off by its proxies (links reset, or stalled and delivered late) then healed; kill -9 of the
coordinator leader then a restart. Each lasts a random time (some shorter than the 2 s
broker session, most longer), is always healed before the next, and the next waits until
every partition has a full ISR again (the cluster must recover by itself: a partition that
never does fails the test). At the end everything is read back from offset 0 and checked.

Replay: ``MINIBROKER_FAULT_SEED=<n>`` (printed at the start and in every failure) gives the
same schedule: the same faults on the same brokers with the same durations and gaps. What
it cannot fix is the interleaving with the processes' own timing.
``MINIBROKER_FAULT_DURATION_S`` changes the length of the schedule (default 90 s) and
``MINIBROKER_FAULT_KINDS`` (comma-separated) limits the kinds of fault.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.checkers.queue import QueueHistory
from tests.faults.known_bugs import fail_on_known_bugs, wait_isr_full
from tests.faults.workload import (
    PollerWorker,
    ProducerWorker,
    assert_replicas_identical,
    check_history,
    create_topic,
    final_read,
)
from tests.integration.cluster import LocalCluster

TOPIC = "nemesis"
PARTITIONS = 3
DEFAULT_SEED = 20_241_125
SEED = int(os.environ.get("MINIBROKER_FAULT_SEED", DEFAULT_SEED))
DURATION_S = float(os.environ.get("MINIBROKER_FAULT_DURATION_S", "90"))
KINDS = ("kill-restart", "pause", "isolate-reset", "isolate-stall", "kill-coordinator-leader")
# A subset, comma-separated, e.g. to keep a known bug's trigger out of a run.
ENV_KINDS = tuple(k for k in os.environ.get("MINIBROKER_FAULT_KINDS", "").split(",") if k)


@dataclass(frozen=True)
class Fault:
    gap_s: float  # quiet time before it
    kind: str
    broker: int  # the target (unused for the coordinator leader)
    hold_s: float  # how long it lasts before it is healed

    def __str__(self) -> str:
        target = "" if self.kind == "kill-coordinator-leader" else f" broker {self.broker}"
        return f"+{self.gap_s:.1f}s {self.kind}{target} for {self.hold_s:.1f}s"


def schedule(
    seed: int, duration_s: float, brokers: list[int], kinds: tuple[str, ...] = KINDS
) -> list[Fault]:
    """Faults whose gaps and holds add up to about ``duration_s`` (recovery waits come on
    top, so the run stops adding faults once the wall clock passes it)."""
    rng = random.Random(seed)
    out: list[Fault] = []
    total = 0.0
    while total < duration_s:
        short = rng.random() < 1 / 3  # within the 2 s session: no failover should follow
        fault = Fault(
            gap_s=rng.uniform(0.5, 3.0),
            kind=rng.choice(kinds),
            broker=rng.choice(brokers),
            hold_s=rng.uniform(0.5, 1.5) if short else rng.uniform(2.5, 6.0),
        )
        out.append(fault)
        total += fault.gap_s + fault.hold_s + 3.0  # a typical recovery
    return out


def inject(cluster: LocalCluster, fault: Fault) -> Callable[[], object]:
    """Start ``fault``; returns what heals it."""
    b = fault.broker
    if fault.kind == "kill-restart":
        cluster.kill_broker(b)
        return lambda: cluster.start_broker(b)
    if fault.kind == "pause":
        cluster.pause_broker(b)
        return lambda: cluster.resume_broker(b)
    if fault.kind in ("isolate-reset", "isolate-stall"):
        cluster.isolate_broker(b, stall=fault.kind == "isolate-stall")
        return lambda: cluster.heal_broker(b)
    member = cluster.coordinator_leader()
    cluster.kill_coordinator(member)
    return lambda: cluster.start_coordinator(member)


@contextmanager
def seed_in_failures() -> Iterator[None]:
    """Every failure names the seed that replays it."""
    try:
        yield
    except (AssertionError, TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"MINIBROKER_FAULT_SEED={SEED} replays this: {exc}") from exc


def test_random_fault_schedule(proxied_cluster: LocalCluster) -> None:
    with seed_in_failures():
        run_schedule(proxied_cluster)


def run_schedule(cluster: LocalCluster) -> None:
    unknown = set(ENV_KINDS) - set(KINDS)
    assert not unknown, f"MINIBROKER_FAULT_KINDS: unknown {sorted(unknown)}; known: {KINDS}"
    faults = schedule(SEED, DURATION_S, sorted(cluster.brokers), ENV_KINDS or KINDS)
    print(f"MINIBROKER_FAULT_SEED={SEED} ({len(faults)} faults planned):")
    for fault in faults:
        print(f"  {fault}")
    create_topic(cluster, TOPIC, PARTITIONS)
    history = QueueHistory(time.monotonic)
    producer = ProducerWorker(history, cluster.bootstrap, TOPIC, process=0).start()
    poller = PollerWorker(history, cluster.bootstrap, TOPIC, PARTITIONS, process=1).start()
    done: list[tuple[Fault, float]] = []  # each fault and its longest time without an ack
    deadline = time.monotonic() + DURATION_S
    try:
        producer.wait_acked(200)
        for fault in faults:
            if time.monotonic() + fault.gap_s + fault.hold_s > deadline:
                break
            time.sleep(fault.gap_s)  # the schedule's gap, not a wait for a condition
            started = time.monotonic()
            heal = inject(cluster, fault)
            time.sleep(fault.hold_s)  # the fault's length
            heal()
            for p in range(PARTITIONS):
                wait_isr_full(cluster, TOPIC, p, context=f"MINIBROKER_FAULT_SEED={SEED}: ")
            done.append((fault, producer.longest_gap(started, time.monotonic())))
        producer.wait_acked(200)
    finally:
        producer.stop()
        poller.stop()
        print(f"MINIBROKER_FAULT_SEED={SEED}: {len(done)} faults run; longest ack gap each:")
        for fault, gap in done:
            print(f"  {fault}: {gap:.2f} s")
    final_read(cluster, history, TOPIC, PARTITIONS, process=2)
    fail_on_known_bugs(cluster, f"MINIBROKER_FAULT_SEED={SEED}: ")
    report = check_history(history)
    print(f"MINIBROKER_FAULT_SEED={SEED}: {report.summary()}")
    assert len(done) >= 5, f"only {len(done)} faults ran"
    cluster.stop()
    assert_replicas_identical(cluster, TOPIC, PARTITIONS)
