"""The topic and leader tools: ``minibroker topics`` (kafka-topics.sh) and ``minibroker
leaders elect`` (kafka-leader-election.sh), with Kafka's output formats.

``client.cli`` registers the subcommands and passes the bootstrap servers in; a failure a
user can cause is raised as a ``MinibrokerError`` (``broker.cli.main`` prints one line).
"""

from __future__ import annotations

import argparse

import trio

from client import Admin, NewTopic, TopicPartition
from client.admin import AsyncAdmin
from client.types import PartitionDescription, TopicDescription
from proto.errors import (
    BrokerResponseError,
    ElectionNotNeededError,
    InvalidConfigurationError,
    for_code,
)
from proto.messages import PREFERRED_ELECTION


def parse_configs(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidConfigurationError(f"--config expects name=value, got {pair!r}")
        out[name] = value
    return out


# --- topics -----------------------------------------------------------------------------


def run_topics(args: argparse.Namespace, bootstrap: str) -> int:
    with Admin(bootstrap_servers=bootstrap) as admin:
        if args.action == "create":
            admin.create_topics(
                [
                    NewTopic(
                        args.name,
                        args.partitions,
                        args.replication_factor,
                        topic_configs=parse_configs(args.config),
                    )
                ]
            )
            print(f"Created topic {args.name}.")
        elif args.action == "list":
            for name in sorted(admin.list_topics()):
                print(name)
        elif args.action == "delete":
            admin.delete_topics([args.name])
            print(f"Deleted topic {args.name}.")
        else:
            names = [args.name] if args.name else None
            describe_topics(admin, names, args.under_replicated, args.unavailable)
    return 0


def _partition_line(topic: str, p: PartitionDescription) -> str:
    """One partition as kafka-topics.sh --describe prints it (tab-led)."""
    leader = str(p.leader) if p.leader >= 0 else "none"
    return (
        f"\tTopic: {topic}\tPartition: {p.partition}\tLeader: {leader}\t"
        f"Replicas: {','.join(map(str, p.replicas))}\tIsr: {','.join(map(str, p.isr))}"
    )


def describe_topics(
    admin: Admin, names: list[str] | None, under_replicated: bool, unavailable: bool
) -> None:
    """kafka-topics.sh --describe: a line per topic, then one per partition. With
    ``--under-replicated`` (ISR smaller than the replicas) or ``--unavailable`` (no live
    leader) only the matching partition lines, as Kafka prints them."""
    descriptions: list[TopicDescription] = admin.describe_topics(names)
    if under_replicated or unavailable:
        for d in descriptions:
            for p in d.partitions:
                if (under_replicated and len(p.isr) < len(p.replicas)) or (
                    unavailable and p.leader < 0
                ):
                    print(_partition_line(d.name, p))
        return
    topics = [d.name for d in descriptions]
    configs = admin.describe_configs(topics, overrides_only=True) if topics else {}
    for d in descriptions:
        overrides = ",".join(f"{k}={v}" for k, v in sorted(configs.get(d.name, {}).items()))
        rf = len(d.partitions[0].replicas) if d.partitions else 0
        print(
            f"Topic: {d.name}\tPartitionCount: {len(d.partitions)}\t"
            f"ReplicationFactor: {rf}\tConfigs: {overrides}"
        )
        for p in d.partitions:
            print(_partition_line(d.name, p))


# --- leaders ----------------------------------------------------------------------------


async def _elect_preferred(
    bootstrap: str, topic: str | None, partition: int | None
) -> dict[TopicPartition, BrokerResponseError | None]:
    async with AsyncAdmin(bootstrap_servers=bootstrap) as admin:
        wanted: list[TopicPartition] | None = None
        if topic is not None and partition is not None:
            wanted = [TopicPartition(topic, partition)]
        elif topic is not None:
            [desc] = await admin.describe_topics([topic])
            wanted = [TopicPartition(topic, p.partition) for p in desc.partitions]
        return await admin.elect_leaders(PREFERRED_ELECTION, wanted)


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(tps))


def run_leaders(args: argparse.Namespace, bootstrap: str) -> int:
    """kafka-leader-election.sh --election-type PREFERRED: the same three kinds of line."""
    if args.partition is not None and args.topic is None:
        raise InvalidConfigurationError("--partition needs --topic")
    results = trio.run(_elect_preferred, bootstrap, args.topic, args.partition)
    elected = [tp for tp, err in results.items() if err is None]
    noop = [tp for tp, err in results.items() if isinstance(err, ElectionNotNeededError)]
    failed = {
        tp: err
        for tp, err in results.items()
        if err is not None and not isinstance(err, ElectionNotNeededError)
    }
    if elected:
        print(
            f"Successfully completed leader election (PREFERRED) for partitions {_names(elected)}"
        )
    if noop:
        print(f"Valid replica already elected for partitions {_names(noop)}")
    if not results:
        print("No partitions to elect leaders for")
    for tp, err in sorted(failed.items()):
        print(
            f"Error completing leader election (PREFERRED) for partition: "
            f"{tp.topic}-{tp.partition}: {err}"
        )
    if failed:
        first = failed[min(failed)]
        raise for_code(first.code)(f"{len(failed)} replica(s) could not be elected")
    return 0
