"""Producer (and optionally consumer) throughput of the Python client against a broker.

    python bench/client_bench.py --bootstrap 127.0.0.1:9092 --topic bench \\
        --num-records 1000000 --record-size 100 --acks 1 [--async] [--consume]

Produces N records of ``--record-size`` random bytes (keyless, so the sticky
partitioner fills whole batches), flushes, and prints one JSON line with records/s and
MB/s. ``--create`` creates the topic first (ignoring "already exists"). With
``--consume`` it then reads the same number of records back from the beginning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Admin, Consumer, NewTopic, Producer, TopicPartition
from client.aio import AsyncProducer
from client.errors import TopicAlreadyExistsError


def produce_blocking(args: argparse.Namespace, config: dict[str, Any]) -> float:
    payload = os.urandom(args.record_size)
    with Producer(bootstrap_servers=args.bootstrap, **config) as producer:
        producer.partitions_for(args.topic)  # warm metadata, fail fast on a missing topic
        send = producer.send
        topic = args.topic
        start = time.perf_counter()
        for _ in range(args.num_records):
            send(topic, payload)
        producer.flush()
        return time.perf_counter() - start


def produce_async(args: argparse.Namespace, config: dict[str, Any]) -> float:
    payload = os.urandom(args.record_size)

    async def main() -> float:
        async with AsyncProducer(args.bootstrap, **config) as producer:
            await producer.partitions_for(args.topic)
            send = producer.send
            topic = args.topic
            start = time.perf_counter()
            for _ in range(args.num_records):
                await send(topic, payload)
            await producer.flush()
            return time.perf_counter() - start

    return trio.run(main)


def consume(args: argparse.Namespace) -> tuple[int, float]:
    consumer = Consumer(bootstrap_servers=args.bootstrap, auto_offset_reset="earliest")
    try:
        parts = consumer.partitions_for_topic(args.topic) or set()
        tps = [TopicPartition(args.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count = 0
        start = time.perf_counter()
        last = start
        while count < args.num_records and time.perf_counter() - last < 10:
            batch = consumer.poll(timeout_ms=500, max_records=100_000)
            if batch:
                last = time.perf_counter()
                count += sum(len(v) for v in batch.values())
        return count, time.perf_counter() - start
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--bootstrap", required=True, help="host:port[,host:port]")
    ap.add_argument("--topic", default="client-bench")
    ap.add_argument("--num-records", type=int, default=1_000_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--acks", default="1")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--compression", choices=["zstd"], default=None)
    ap.add_argument("--partitions", type=int, default=1, help="for --create")
    ap.add_argument("--create", action="store_true", help="create the topic first")
    ap.add_argument("--async", dest="use_async", action="store_true", help="AsyncProducer")
    ap.add_argument("--consume", action="store_true", help="then read the records back")
    args = ap.parse_args(argv)
    # Keep stdout to the one JSON line: only warnings and errors from the client.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    if args.create:
        with (
            Admin(bootstrap_servers=args.bootstrap) as admin,
            contextlib.suppress(TopicAlreadyExistsError),  # an earlier run made it
        ):
            admin.create_topics([NewTopic(args.topic, args.partitions, 1)])
    config: dict[str, Any] = {
        "acks": int(args.acks) if args.acks.lstrip("-").isdigit() else args.acks,
        "linger_ms": args.linger_ms,
        "compression_type": args.compression,
    }
    if args.batch_size is not None:
        config["batch_size"] = args.batch_size
    run = produce_async if args.use_async else produce_blocking
    elapsed = run(args, config)
    rps = args.num_records / elapsed
    result: dict[str, Any] = {
        "client": "async" if args.use_async else "blocking",
        "records": args.num_records,
        "record_size": args.record_size,
        "acks": args.acks,
        "batch_size": args.batch_size,
        "compression": args.compression,
        "produce_elapsed_s": round(elapsed, 3),
        "produce_records_per_sec": round(rps),
        "produce_mb_per_sec": round(rps * args.record_size / 1e6, 1),
    }
    if args.consume:
        count, c_elapsed = consume(args)
        result["consume_records"] = count
        result["consume_records_per_sec"] = round(count / c_elapsed) if c_elapsed else 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
