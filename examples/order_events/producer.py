"""Emit the order events: for each of ``--orders`` orders, created, paid and shipped, in that
order, keyed by the order id; orders interleave (a few are open at any time, as in a
shop), so one partition carries the events of many orders mixed together.

The producer is idempotent (``acks=all``): a send retried after a leader failover is
written once, which is what lets the workers deduplicate by offset. ``--rate`` spreads
the events over time so that there is a run to watch (and a worker to kill in the middle
of it); ``--rate 0`` sends as fast as it can.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator

from orders import (
    DEFAULT_PARTITIONS,
    STEPS,
    OrderEvent,
    add_common_args,
    ensure_topic,
    order_id,
    positive_int,
)

from client import FutureRecordMetadata, Producer
from client.errors import MinibrokerError

OPEN_ORDERS = 20  # orders in progress at once: their events interleave


def interleaved_events(orders: int, rng: random.Random) -> Iterator[OrderEvent]:
    """Every order's events in their order, orders interleaved at random."""
    waiting = iter(range(orders))
    open_orders: dict[str, int] = {}  # order id -> seq of its next event
    while True:
        while len(open_orders) < OPEN_ORDERS and (n := next(waiting, None)) is not None:
            open_orders[order_id(n)] = 0
        if not open_orders:
            return
        oid = rng.choice(sorted(open_orders))
        seq = open_orders[oid]
        yield OrderEvent(oid, seq, STEPS[seq])
        if seq + 1 == len(STEPS):
            del open_orders[oid]
        else:
            open_orders[oid] = seq + 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Emit keyed order events.")
    add_common_args(parser, db=False)
    parser.add_argument(
        "--orders", type=positive_int, default=600, help="orders to emit (default 600)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="events per second (default 100; 0: as fast as possible)",
    )
    parser.add_argument("--seed", type=int, default=1, help="interleaving seed (default 1)")
    parser.add_argument(
        "--partitions",
        type=positive_int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions if this creates the topic (default {DEFAULT_PARTITIONS})",
    )
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f"--rate must be >= 0, not {args.rate}")
    return args


def produce(args: argparse.Namespace) -> Counter[int]:
    """Send everything, wait for every acknowledgement; events per partition."""
    rng = random.Random(args.seed)
    futures: list[FutureRecordMetadata] = []
    total = args.orders * len(STEPS)
    with Producer(
        bootstrap_servers=args.bootstrap_servers, acks="all", client_id="order-producer"
    ) as producer:
        start = next_report = time.monotonic()
        for i, event in enumerate(interleaved_events(args.orders, rng)):
            if args.rate:
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            futures.append(
                producer.send(args.topic, key=event.order_id.encode(), value=event.encode())
            )
            if time.monotonic() >= next_report:
                next_report += 5
                print(f"producer: sent {i + 1}/{total} events", flush=True)
        producer.flush()
        # get() raises the send's error: an event that was not acknowledged is reported,
        # never silently counted as produced.
        return Counter(f.get(timeout=30).partition for f in futures)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        partitions = ensure_topic(args.bootstrap_servers, args.topic, args.partitions)
        print(f"producer: topic {args.topic} has {partitions} partitions", flush=True)
        per_partition = produce(args)
    except MinibrokerError as exc:
        print(f"producer: failed: {exc!r}", file=sys.stderr)
        return 1
    spread = " ".join(f"p{p}={n}" for p, n in sorted(per_partition.items()))
    print(
        f"producer: {sum(per_partition.values())} events for {args.orders} orders "
        f"acknowledged ({spread})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
