"""CLI tools built on the client: topics, leaders, groups (``client.groups_cli``), produce,
consume and perf (Kafka's tool flags and output formats).

Every command takes ``--bootstrap-server`` (default ``$MINIBROKER_BOOTSTRAP``, else
127.0.0.1:9092). A failure a user can cause prints one line and exits non-zero
(``broker.cli.main`` turns a ``MinibrokerError`` into that line).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client import Consumer, Producer, TopicPartition
from client.admin_cli import run_leaders, run_topics
from client.groups_cli import register_groups, run_groups
from proto.errors import InvalidConfigurationError

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def _bootstrap(args: argparse.Namespace) -> str:
    return str(args.bootstrap_server or os.environ.get("MINIBROKER_BOOTSTRAP") or DEFAULT_BOOTSTRAP)


# --- topics and leaders (client.admin_cli) ----------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    return run_topics(args, _bootstrap(args))


def cmd_leaders(args: argparse.Namespace) -> int:
    return run_leaders(args, _bootstrap(args))


def cmd_groups(args: argparse.Namespace) -> int:
    return run_groups(args, _bootstrap(args))


# --- produce / consume ----------------------------------------------------------------


def cmd_produce(args: argparse.Namespace) -> int:
    sep: str | None = args.key_separator
    sent = 0
    with Producer(
        bootstrap_servers=_bootstrap(args), acks=args.acks, linger_ms=args.linger_ms
    ) as p:
        futures = []
        for line in sys.stdin:
            line = line.rstrip("\n")
            key: bytes | None = None
            value = line
            if sep is not None:
                if sep not in line:
                    raise InvalidConfigurationError(
                        f"line {sent + 1} has no key separator {sep!r}: {line!r}"
                    )
                k, value = line.split(sep, 1)
                key = k.encode()
            futures.append(p.send(args.topic, value=value.encode(), key=key))
            sent += 1
        p.flush()
        for fut in futures:
            fut.get()
    print(f"Produced {sent} record(s) to {args.topic}.", file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    timeout_ms = args.timeout_ms if args.timeout_ms is not None else float("inf")
    if args.group is not None and args.partition is not None:
        raise InvalidConfigurationError("--group and --partition are exclusive: a group member "
                                        "gets its partitions from the group")  # fmt: skip
    consumer = Consumer(
        bootstrap_servers=_bootstrap(args),
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        consumer_timeout_ms=timeout_ms,
        group_id=args.group,
    )
    count = 0
    try:
        partitions = consumer.partitions_for_topic(args.topic)
        if partitions is None:
            from proto.errors import UnknownTopicOrPartitionError

            raise UnknownTopicOrPartitionError(f"topic {args.topic!r} does not exist")
        if args.group is not None:
            # kafka-console-consumer --group: a member of the group, starting from the
            # group's committed offsets (--from-beginning only where it has none), committing
            # what it printed.
            consumer.subscribe([args.topic])
        else:
            chosen = [args.partition] if args.partition is not None else sorted(partitions)
            tps = [TopicPartition(args.topic, p) for p in chosen]
            consumer.assign(tps)
            if args.from_beginning:
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
        out = sys.stdout
        for rec in consumer:
            value = rec.value.decode(errors="replace") if rec.value is not None else "null"
            if args.print_key:
                key = rec.key.decode(errors="replace") if rec.key is not None else "null"
                out.write(f"{key}\t{value}\n")
            else:
                out.write(value + "\n")
            count += 1
            if args.max_messages is not None and count >= args.max_messages:
                break
        out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"Processed a total of {count} messages", file=sys.stderr)
    return 0


# --- perf -------------------------------------------------------------------------------


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        yield (progress, progress.add_task(label, total=total))


# CPython runs its cyclic collector every 700 container allocations by default; a client
# moving a million records a second allocates a tuple per record, so the collector ends up
# costing more than the decoding. High-rate applications raise the threshold; so do the
# perf tools (``--default-gc`` measures without).
TUNED_GC_THRESHOLD = (100_000, 50, 100)


@contextmanager
def gc_threshold(tuned: bool) -> Iterator[None]:
    old = gc.get_threshold()
    if tuned:
        gc.set_threshold(*TUNED_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[idx]


def perf_produce(
    bootstrap: str,
    topic: str,
    num_records: int,
    record_size: int,
    *,
    acks: int | str = 1,
    compression: str | None = None,
    batch_size: int | None = None,
    linger_ms: int = 5,
    bulk: int = 0,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Kafka's ProducerPerformance: send records, sample latencies, summarise.

    ``bulk`` > 0 sends through ``Producer.send_many`` that many records at a time instead
    of one ``send()`` per record."""
    if num_records < 1 or record_size < 1:
        raise InvalidConfigurationError("--num-records and --record-size must be positive")
    payload = os.urandom(record_size)
    # Kafka samples at most 500,000 latencies: every `sampling`-th record gets a callback.
    sampling = max(1, num_records // 500_000)
    latencies: list[float] = []
    kwargs: dict[str, Any] = {"acks": acks, "linger_ms": linger_ms, "compression_type": compression}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    with Producer(bootstrap_servers=bootstrap, **kwargs) as producer:
        producer.partitions_for(topic)  # fail fast on an unknown topic, warm metadata
        send = producer.send
        perf_counter = time.perf_counter
        # Latency is measured without callbacks: each batch records when it was answered.
        samples: list[tuple[Any, float]] = []
        with _progress(num_records, "producing", show_progress) as bar:
            step = max(1, num_records // 200)
            start = perf_counter()
            if bulk:
                chunk = [payload] * bulk
                sent = 0
                while sent < num_records:
                    n = min(bulk, num_records - sent)
                    sent_at = perf_counter()
                    futures = producer.send_many(topic, chunk if n == bulk else chunk[:n])
                    samples.extend((f, sent_at) for f in futures[::sampling])
                    sent += n
                    if bar is not None:
                        bar[0].update(bar[1], completed=sent)
            else:
                for i in range(num_records):
                    fut = send(topic, payload)
                    if i % sampling == 0:
                        samples.append((fut, perf_counter()))
                    if bar is not None and i % step == 0:
                        bar[0].update(bar[1], completed=i)
            producer.flush()
            elapsed = perf_counter() - start
    for fut, sent_at in samples:
        fut.get()  # raises the send's error, if any
        latencies.append((fut.completed_at - sent_at) * 1000)
    latencies.sort()
    rps = num_records / elapsed
    return {
        "records": num_records,
        "record_size": record_size,
        "elapsed_s": round(elapsed, 3),
        "api": f"send_many({bulk})" if bulk else "send",
        "records_per_sec": round(rps, 1),
        "mb_per_sec": round(rps * record_size / (1024 * 1024), 2),
        "latency_ms_avg": round(sum(latencies) / len(latencies), 2) if latencies else 0.0,
        "latency_ms_max": round(latencies[-1], 2) if latencies else 0.0,
        "latency_ms_p50": round(_percentile(latencies, 0.50), 2),
        "latency_ms_p95": round(_percentile(latencies, 0.95), 2),
        "latency_ms_p99": round(_percentile(latencies, 0.99), 2),
        "latency_ms_p999": round(_percentile(latencies, 0.999), 2),
    }


def perf_consume(
    bootstrap: str,
    topic: str,
    messages: int,
    *,
    show_progress: bool = False,
    timeout_ms: int = 30_000,
) -> dict[str, Any]:
    """Kafka's ConsumerPerformance: read ``messages`` records from the beginning."""
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            from proto.errors import UnknownTopicOrPartitionError

            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count = 0
        nbytes = 0
        with _progress(messages, "consuming", show_progress) as bar:
            start = time.perf_counter()
            last_data = start
            while count < messages:
                batch = consumer.poll(timeout_ms=500, max_records=100_000)
                now = time.perf_counter()
                if not batch:
                    if (now - last_data) * 1000 > timeout_ms:
                        break
                    continue
                last_data = now
                for records in batch.values():
                    count += len(records)
                    for r in records:
                        nbytes += len(r.value) if r.value is not None else 0
                if bar is not None:
                    bar[0].update(bar[1], completed=min(count, messages))
            elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    rps = count / elapsed if elapsed > 0 else 0.0
    return {
        "records": count,
        "elapsed_s": round(elapsed, 3),
        "records_per_sec": round(rps, 1),
        "mb_per_sec": round(nbytes / elapsed / (1024 * 1024), 2) if elapsed > 0 else 0.0,
        "bytes": nbytes,
    }


def cmd_perf(args: argparse.Namespace) -> int:
    with gc_threshold(not args.default_gc):
        return _cmd_perf(args)


def _cmd_perf(args: argparse.Namespace) -> int:
    show = not args.json and sys.stderr.isatty()
    if args.perf_action == "produce":
        acks: int | str = "all" if args.acks in ("all", "-1") else int(args.acks)
        r = perf_produce(
            _bootstrap(args),
            args.topic,
            args.num_records,
            args.record_size,
            acks=acks,
            compression=args.compression,
            batch_size=args.batch_size,
            linger_ms=args.linger_ms,
            bulk=args.bulk,
            show_progress=show,
        )
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"{r['records']} records sent, {r['records_per_sec']:.1f} records/sec "
                f"({r['mb_per_sec']:.2f} MB/sec), {r['latency_ms_avg']:.2f} ms avg latency, "
                f"{r['latency_ms_max']:.2f} ms max latency, {r['latency_ms_p50']:.0f} ms 50th, "
                f"{r['latency_ms_p95']:.0f} ms 95th, {r['latency_ms_p99']:.0f} ms 99th, "
                f"{r['latency_ms_p999']:.0f} ms 99.9th."
            )
        return 0
    r = perf_consume(_bootstrap(args), args.topic, args.messages, show_progress=show)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['records']} records consumed, {r['records_per_sec']:.1f} records/sec "
            f"({r['mb_per_sec']:.2f} MB/sec) in {r['elapsed_s']:.2f} s."
        )
    return 0 if r["records"] >= args.messages else 1


# --- registration -----------------------------------------------------------------------


def _add_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap-server",
        default=None,
        metavar="HOST:PORT[,HOST:PORT]",
        help=f"default: $MINIBROKER_BOOTSTRAP or {DEFAULT_BOOTSTRAP}",
    )


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="create, list, describe and delete topics")
    tsub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument(
        "--partitions", type=int, default=-1, help="default: the broker's num.partitions"
    )
    create.add_argument("--replication-factor", type=int, default=-1)
    create.add_argument("--config", action="append", metavar="NAME=VALUE")
    listing = tsub.add_parser("list", help="list topic names")
    describe = tsub.add_parser("describe", help="partitions, leaders, replicas, ISR")
    describe.add_argument("name", nargs="?")
    describe.add_argument(
        "--under-replicated",
        "--under-replicated-partitions",
        action="store_true",
        help="only partitions whose ISR is smaller than their replica set",
    )
    describe.add_argument(
        "--unavailable",
        "--unavailable-partitions",
        action="store_true",
        help="only partitions without a live leader",
    )
    delete = tsub.add_parser("delete", help="delete a topic")
    delete.add_argument("name")
    for p in (create, listing, describe, delete):
        _add_bootstrap(p)
        p.set_defaults(func=cmd_topics)

    leaders = sub.add_parser("leaders", help="leader elections (kafka-leader-election)")
    lsub = leaders.add_subparsers(dest="leaders_action", required=True, metavar="ACTION")
    elect = lsub.add_parser("elect", help="move leadership to the preferred replicas")
    elect.add_argument(
        "--preferred",
        action="store_true",
        required=True,
        help="preferred-leader election: the first replica of each assignment leads",
    )
    elect.add_argument("--topic", default=None, help="default: every partition of every topic")
    elect.add_argument("--partition", type=int, default=None, help="needs --topic")
    _add_bootstrap(elect)
    elect.set_defaults(func=cmd_leaders)

    register_groups(sub, _add_bootstrap, cmd_groups)

    produce = sub.add_parser("produce", help="send stdin lines as records")
    produce.add_argument("topic")
    produce.add_argument("--key-separator", default=None, metavar="SEP")
    produce.add_argument("--acks", default="1", choices=["0", "1", "all", "-1"])
    produce.add_argument("--linger-ms", type=int, default=5)
    _add_bootstrap(produce)
    produce.set_defaults(func=cmd_produce)

    consume = sub.add_parser("consume", help="print records")
    consume.add_argument("topic")
    consume.add_argument("--partition", type=int, default=None)
    consume.add_argument(
        "--group", default=None, help="consume as a member of this consumer group (commits)"
    )
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=int, default=None)
    consume.add_argument(
        "--timeout-ms", type=int, default=None, help="stop after this long without records"
    )
    consume.add_argument("--print-key", action="store_true")
    _add_bootstrap(consume)
    consume.set_defaults(func=cmd_consume)

    perf = sub.add_parser("perf", help="producer and consumer performance tests")
    psub = perf.add_subparsers(dest="perf_action", required=True, metavar="ACTION")
    pp = psub.add_parser("produce", help="like kafka-producer-perf-test")
    pp.add_argument("--topic", required=True)
    pp.add_argument("--num-records", type=int, required=True)
    pp.add_argument("--record-size", type=int, required=True)
    pp.add_argument("--acks", default="1", choices=["0", "1", "all", "-1"])
    pp.add_argument("--compression", default=None, choices=["zstd"])
    pp.add_argument("--batch-size", type=int, default=None)
    pp.add_argument("--linger-ms", type=int, default=5)
    pp.add_argument(
        "--bulk",
        type=int,
        default=0,
        metavar="N",
        help="send N records per Producer.send_many call instead of one send() each",
    )
    pp.add_argument("--json", action="store_true")
    pc = psub.add_parser("consume", help="like kafka-consumer-perf-test")
    pc.add_argument("--topic", required=True)
    pc.add_argument("--messages", type=int, required=True)
    pc.add_argument("--json", action="store_true")
    for p in (pp, pc):
        p.add_argument(
            "--default-gc",
            action="store_true",
            help="keep CPython's default GC threshold (the tools raise it, see docs/cli.md)",
        )
        _add_bootstrap(p)
        p.set_defaults(func=cmd_perf)
