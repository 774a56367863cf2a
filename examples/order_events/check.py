"""Check the outcome against the log: every order event applied exactly once, each order's
events in the order they were produced, and (with ``--orders N``) no order missing.

The log is the truth: the check reads the whole topic (no group, so it moves nobody's
offsets) and compares it with what the workers wrote to the database. It waits up to
``--wait-s`` for the workers to catch up, then reports, and exits 0 only when it found no
anomaly. The kinds it looks for:

- missing: a record in the log that no worker applied (a skipped record);
- duplicate: a record applied more than once (a redelivery that got through);
- out of order: an order whose events were applied in another order than the log's;
- phantom: an applied event that is not in the log;
- wrong state: an order whose final row disagrees with its last event in the log;
- incomplete: with ``--orders N``, an order of the N without all of its events.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from order_store import OrderStore, Snapshot
from orders import STEPS, BadEventError, OrderEvent, add_common_args, order_id, positive_int

from client import Consumer, TopicPartition
from client.errors import MinibrokerError

Position = tuple[int, int]  # (partition, offset)


class TopicMissingError(LookupError):
    """The topic to check does not exist (nothing was produced to it)."""


@dataclass(slots=True)
class LogContents:
    events: dict[Position, OrderEvent] = field(default_factory=dict)
    by_order: dict[str, list[Position]] = field(default_factory=lambda: defaultdict(list))
    not_events: set[Position] = field(default_factory=set)
    partitions: int = 0


def read_log(bootstrap_servers: str, topic: str) -> LogContents:
    """Every record of ``topic`` from its beginning to its end offsets as of now."""
    out = LogContents()
    consumer = Consumer(
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,  # checking a misspelt topic must not create it
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissingError(f"topic {topic!r} does not exist")
        out.partitions = len(partitions)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue  # produced after we started: not part of this check
                    pos = (r.partition, r.offset)
                    try:
                        event = OrderEvent.decode(r.key, r.value)
                    except BadEventError:
                        out.not_events.add(pos)
                        continue
                    out.events[pos] = event
                    out.by_order[event.order_id].append(pos)  # log order within a partition
    finally:
        consumer.close()
    return out


def caught_up(log: LogContents, snap: Snapshot) -> bool:
    done = {(a.partition, a.offset) for a in snap.applied}
    done.update((p, o) for _t, p, o in snap.rejected)
    return done >= log.events.keys() | log.not_events


def anomalies(log: LogContents, snap: Snapshot, expected_orders: int | None) -> list[str]:
    found: list[str] = []
    times = Counter((a.partition, a.offset) for a in snap.applied)
    for pos in sorted(log.events.keys() - times.keys()):
        found.append(f"missing: partition {pos[0]} offset {pos[1]} ({log.events[pos]}) not applied")
    for pos, n in sorted(times.items()):
        if n > 1:
            found.append(f"duplicate: partition {pos[0]} offset {pos[1]} applied {n} times")
        if pos not in log.events:
            found.append(f"phantom: partition {pos[0]} offset {pos[1]} applied, not in the log")
    rejected = Counter((p, o) for _t, p, o in snap.rejected)
    for pos in sorted(log.not_events - rejected.keys()):
        found.append(f"missing: partition {pos[0]} offset {pos[1]} (not an event) not rejected")
    applied_order: dict[str, list[Position]] = defaultdict(list)
    for a in snap.applied:
        applied_order[a.order_id].append((a.partition, a.offset))
    for oid, positions in sorted(log.by_order.items()):
        done = [p for p in dict.fromkeys(applied_order.get(oid, [])) if p in log.events]
        if done != positions[: len(done)]:
            found.append(f"out of order: {oid} applied as {done}, the log has {positions}")
        last = log.events[positions[-1]]
        if done == positions and snap.orders.get(oid) != (last.step, len(positions)):
            found.append(
                f"wrong state: {oid} is {snap.orders.get(oid)}, expected "
                f"{(last.step, len(positions))}"
            )
    if expected_orders is not None:
        for n in range(expected_orders):
            oid = order_id(n)
            steps = [log.events[p].step for p in log.by_order.get(oid, [])]
            if steps != list(STEPS):
                found.append(f"incomplete: {oid} has {steps or 'no events'} in the log")
    return found


def report(log: LogContents, snap: Snapshot) -> None:
    applied = Counter((a.partition, a.offset) for a in snap.applied)
    once = sum(1 for pos in log.events if applied[pos] == 1)
    print(
        f"log: {len(log.events)} events for {len(log.by_order)} orders in "
        f"{log.partitions} partitions"
        + (f", {len(log.not_events)} records that are not events" if log.not_events else "")
    )
    print(f"applied exactly once: {once}/{len(log.events)}")
    per_worker: dict[str, Counter[int]] = defaultdict(Counter)
    for a in snap.applied:
        per_worker[a.worker][a.partition] += 1
    for worker, parts in sorted(per_worker.items()):
        detail = " ".join(f"p{p}={n}" for p, n in sorted(parts.items()))
        skipped = snap.skipped.get(worker, 0)
        print(
            f"  {worker}: applied {sum(parts.values())} ({detail}), skipped {skipped} redelivered"
        )
    print(f"redeliveries skipped by the store: {sum(snap.skipped.values())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the order processor's outcome.")
    add_common_args(parser)
    parser.add_argument(
        "--orders",
        type=positive_int,
        help="how many orders the producer emitted (checks none is missing)",
    )
    parser.add_argument(
        "--wait-s",
        type=float,
        default=30.0,
        help="how long to wait for the workers to apply everything (default 30)",
    )
    args = parser.parse_args(argv)
    if not Path(args.db).exists():
        print(f"check: no database at {args.db}: have the workers run?", file=sys.stderr)
        return 2
    try:
        log = read_log(args.bootstrap_servers, args.topic)
    except (MinibrokerError, TopicMissingError) as exc:
        print(f"check: cannot read {args.topic}: {exc!r}", file=sys.stderr)
        return 2
    store = OrderStore(args.db)
    try:
        deadline = time.monotonic() + args.wait_s
        while not caught_up(log, snap := store.snapshot()) and time.monotonic() < deadline:
            time.sleep(0.2)  # the workers are separate processes: poll the database
    finally:
        store.close()
    report(log, snap)
    found = anomalies(log, snap, args.orders)
    for line in found[:50]:
        print(line)
    if len(found) > 50:
        print(f"... and {len(found) - 50} more")
    print("FAIL" if found else "OK")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
