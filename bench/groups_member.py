"""One process of `make bench-groups` (bench/groups_bench.py): a group member, or the
producer that keeps records flowing while members rebalance.

Members run as separate OS processes, one blocking ``Consumer`` each, as N instances of an
application would: in one process they would share one GIL, and each member's trio loop
thread and listener thread would wait for the others', which adds to every rebalance
step what a real deployment does not have. Everything the member does is one JSON line
in its ``--out`` file, flushed as it happens; times are ``time.monotonic()``, one clock
for every process of the machine (CLOCK_MONOTONIC), so the orchestrator compares them.

Three modes:

- ``flow`` (rebalance time): subscribe at once, poll until SIGTERM, then ``close()``
  (LeaveGroup). Lines: ``first_poll``; the listener's ``assigned`` / ``revoked`` /
  ``lost`` with their partitions; ``records`` for every poll that returned records, per
  partition ``[first offset, last offset, count]``; ``close_begin``; ``closed``.
- ``drain`` (consume throughput): connect, print ``ready``, wait for ``go`` on stdin,
  subscribe, and read until SIGTERM. Lines: ``go``; ``first_records``; ``done`` when a
  partition reaches the end offset given in ``--ends``; ``closed`` with the number of
  records read.
- ``produce``: ``--rate`` records/s round robin over ``--partitions`` until SIGTERM.
  Lines: ``late`` for a tick of its schedule more than 50 ms late, ``closed`` with the
  number of records sent.

Members use the client's default settings except the assignor (``--strategy``), an
optional ``--heartbeat-interval-ms``, and, for ``drain``, ``auto_offset_reset="earliest"``
(the records were produced before).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, Any

from client import Consumer, ConsumerRebalanceListener, Producer, TopicPartition

Sink = Callable[[dict[str, Any]], None]

POLL_TIMEOUT_MS = 100
TICK_S = 0.01
PARENT = os.getppid()  # the bench that started this process
LATE_S = 0.05  # a producer tick this late is logged: a stall of the writer, not the group


def file_sink(out: IO[str]) -> Sink:
    lock = threading.Lock()  # the blocking Consumer runs callbacks in a worker thread

    def write(entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with lock:
            out.write(line)
            out.flush()

    return write


class Recorder(ConsumerRebalanceListener):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def _note(self, kind: str, parts: set[TopicPartition]) -> None:
        at = time.monotonic()
        self._sink({"e": kind, "at": at, "partitions": sorted(tp.partition for tp in parts)})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._note("assigned", assigned)

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._note("revoked", revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._note("lost", lost)


def _usage() -> dict[str, float]:
    """CPU time and peak RSS of this process. The peak is VmHWM, not ru_maxrss: Linux
    carries ru_maxrss over fork and exec, so it would show the orchestrator's."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    peak_kib = 0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak_kib = int(line.split()[1])
    return {"cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "max_rss_mib": peak_kib / 1024}


def flow(consumer: Consumer, topic: str, sink: Sink, stop: threading.Event) -> None:
    consumer.subscribe([topic], listener=Recorder(sink))
    sink({"e": "first_poll", "at": time.monotonic()})
    while not stop.is_set() and not orphaned():
        batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        if batch:
            at = time.monotonic()
            parts = {
                str(tp.partition): [recs[0].offset, recs[-1].offset, len(recs)]
                for tp, recs in batch.items()
                if recs
            }
            sink({"e": "records", "at": at, "p": parts})


def drain(
    consumer: Consumer, topic: str, ends: dict[int, int], sink: Sink, stop: threading.Event
) -> int:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 0
    sink({"e": "go", "at": time.monotonic()})
    consumer.subscribe([topic], listener=Recorder(sink))
    count = 0
    done: set[int] = set()
    while not stop.is_set() and not orphaned():
        batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        if batch and not count:
            sink({"e": "first_records", "at": time.monotonic()})
        for tp, recs in batch.items():
            count += len(recs)
            p = tp.partition
            if recs and p not in done and recs[-1].offset + 1 >= ends[p]:
                done.add(p)
                sink({"e": "done", "at": time.monotonic(), "partition": p})
    return count


def produce(producer: Producer, args: argparse.Namespace, sink: Sink, stop: threading.Event) -> int:
    """``rate`` records/s round robin over the partitions, in ticks of 10 ms on an absolute
    schedule (a late tick sends its share at once, and says how late it was)."""
    payload = b"x" * args.record_size
    sent = 0
    start = time.monotonic()
    tick = 0
    while not stop.is_set() and not orphaned():
        tick += 1
        due_at = start + tick * TICK_S
        late = time.monotonic() - due_at
        if late > LATE_S:
            sink({"e": "late", "at": time.monotonic(), "s": round(late, 3)})
        while sent < int(args.rate * tick * TICK_S):
            producer.send(args.topic, payload, partition=sent % args.partitions)
            sent += 1
        stop.wait(max(0.0, start + (tick + 1) * TICK_S - time.monotonic()))
    producer.flush(30)
    return sent


def orphaned() -> bool:
    """The bench died without stopping us (kill -9): stop on our own."""
    return os.getppid() != PARENT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["flow", "drain", "produce"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default=None)
    ap.add_argument("--strategy", default=None, help="one assignor (default: the client's)")
    ap.add_argument("--heartbeat-interval-ms", type=int, default=None)
    ap.add_argument("--ends", default="{}", help='drain: {"partition": end offset} as JSON')
    ap.add_argument("--rate", type=int, default=1000, help="produce: records/s")
    ap.add_argument("--partitions", type=int, default=1, help="produce: round robin over")
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with open(args.out, "w", encoding="utf-8") as out:
        sink = file_sink(out)
        if args.mode == "produce":
            with Producer(bootstrap_servers=args.bootstrap) as producer:
                sink({"e": "started", "at": time.monotonic()})
                sent = produce(producer, args, sink, stop)
            sink({"e": "closed", "at": time.monotonic(), "records": sent, **_usage()})
            return
        config: dict[str, Any] = {"bootstrap_servers": args.bootstrap, "group_id": args.group}
        if args.strategy:
            config["partition_assignment_strategy"] = (args.strategy,)
        if args.heartbeat_interval_ms:
            config["heartbeat_interval_ms"] = args.heartbeat_interval_ms
        if args.mode == "drain":
            config["auto_offset_reset"] = "earliest"
        consumer = Consumer(**config)
        count = 0
        try:
            if args.mode == "flow":
                flow(consumer, args.topic, sink, stop)
            else:
                ends = {int(p): int(o) for p, o in json.loads(args.ends).items()}
                count = drain(consumer, args.topic, ends, sink, stop)
        finally:
            sink({"e": "close_begin", "at": time.monotonic()})
            consumer.close()
            sink({"e": "closed", "at": time.monotonic(), "records": count, **_usage()})


if __name__ == "__main__":
    main()
