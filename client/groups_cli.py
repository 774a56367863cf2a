"""``minibroker groups``: kafka-consumer-groups.sh's list, describe, reset-offsets and delete,
with Kafka's flags, column layouts and messages.

Tables and listings go to stdout; per-group problems (a group that does not exist, a reset
refused because the group is active, a failed delete) go to stderr and make the exit code
1 after the other groups were handled. A failure of the whole command is raised as a
``MinibrokerError`` (``broker.cli.main`` prints it as one line). The planning of a reset
is ``client.offset_reset``; this module only gathers its inputs and prints its output.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import trio

from client.admin import AsyncAdmin
from client.log_offsets import list_log_offsets
from client.offset_reset import (
    PartitionOffsets,
    ResetPlan,
    ResetScenario,
    ResetSpec,
    plan_reset,
)
from client.types import ConsumerGroupDescription, OffsetAndMetadata, TopicPartition
from proto.errors import InvalidConfigurationError, UnknownTopicOrPartitionError
from proto.messages import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

__all__ = ["register_groups", "run_groups"]

MISSING = "-"  # Kafka's MISSING_COLUMN_VALUE
STATES = ("PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty")
REBALANCING = ("PreparingRebalance", "CompletingRebalance")
INACTIVE = ("Empty", "Dead")


def _row(widths: Sequence[int], values: Sequence[object]) -> str:
    """Java's ``%-Ns`` per column (pad right, never cut) and ``%s`` where width is 0."""
    return " ".join(f"{v!s:<{w}}" if w else str(v) for w, v in zip(widths, values, strict=True))


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _opt(value: object) -> object:
    return MISSING if value is None else value


# --- list ---------------------------------------------------------------------------------


def _parse_states(text: str) -> list[str] | None:
    """``--state`` of ``list``: none given -> every state; else Kafka's names, any case."""
    if not text.strip():
        return None
    by_lower = {s.lower(): s for s in STATES}
    names = [s.strip() for s in text.split(",")]
    bad = [n for n in names if n.lower() not in by_lower]
    if bad:
        raise InvalidConfigurationError(
            f"Invalid state list '{text}'. Valid states are: {', '.join(STATES)}"
        )
    return [by_lower[n.lower()] for n in names]


async def _list(admin: AsyncAdmin, args: argparse.Namespace) -> int:
    if args.state is None:
        for g in await admin.list_consumer_groups():
            print(g.group_id)
        return 0
    groups = await admin.list_consumer_groups(_parse_states(args.state))
    width = max([15, *(len(g.group_id) for g in groups)])
    print(_row((width, 0), ("GROUP", "STATE")))
    for g in groups:
        print(_row((width, 0), (g.group_id, g.state)))
    return 0


# --- describe -----------------------------------------------------------------------------


def _should_print(desc: ConsumerGroupDescription, rows: int) -> bool:
    """Kafka's shouldPrintMemberState: the notes about the state, and whether a table
    follows. False (and an error) for a group that does not exist."""
    g = desc.group_id
    if desc.state == "Dead":
        _err(f"\nError: Consumer group '{g}' does not exist.")
        return False
    if desc.state == "Empty":
        _err(f"\nConsumer group '{g}' has no active members.")
    elif desc.state in REBALANCING:
        _err(f"\nWarning: Consumer group '{g}' is rebalancing.")
    return rows > 0


def _offset_rows(desc: ConsumerGroupDescription) -> list[tuple[object, ...]]:
    """One row per assigned partition (members with more partitions first), then the
    committed partitions no member owns, with "-" for what is unknown."""
    by_tp = {o.topic_partition: o for o in desc.offsets}
    rows: list[tuple[object, ...]] = []
    members = sorted((m for m in desc.members if m.assignment), key=lambda m: -len(m.assignment))
    for m in members:
        for tp in sorted(m.assignment):
            o = by_tp.get(tp)
            known = (
                (None, None, None) if o is None else (o.committed_offset, o.log_end_offset, o.lag)
            )
            rows.append((desc.group_id, tp.topic, tp.partition, *map(_opt, known),
                         m.member_id, m.host, m.client_id))  # fmt: skip
    assigned = {tp for m in desc.members for tp in m.assignment}
    for o in desc.offsets:
        tp = o.topic_partition
        if tp not in assigned and o.committed_offset is not None:
            known = (o.committed_offset, o.log_end_offset, o.lag)
            rows.append((desc.group_id, tp.topic, tp.partition, *map(_opt, known),
                         MISSING, MISSING, MISSING))  # fmt: skip
    return rows


def _width(least: int, values: Iterable[object]) -> int:
    return max([least, *(len(str(v)) for v in values)])


def _print_offsets(desc: ConsumerGroupDescription) -> None:
    rows = _offset_rows(desc)
    if not _should_print(desc, len(rows)):
        return
    w = [_width(15, (r[i] for r in rows)) for i in (0, 1, 6, 7)]
    widths = (w[0], w[1], 10, 15, 15, 15, w[2], w[3], 0)
    header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
              "CONSUMER-ID", "HOST", "CLIENT-ID")  # fmt: skip
    print("\n" + _row(widths, header))
    for r in rows:
        print(_row(widths, r))


def _print_members(desc: ConsumerGroupDescription, verbose: bool) -> None:
    members = desc.members
    if not _should_print(desc, len(members)):
        return
    with_instance = any(m.group_instance_id for m in members)
    w = [
        _width(15, [desc.group_id]),
        _width(15, (m.member_id for m in members)),
        _width(17, (m.group_instance_id or "" for m in members)),
        _width(15, (m.host for m in members)),
        _width(15, (m.client_id for m in members)),
        15,
    ]
    if not with_instance:
        del w[2]
    header = ["GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
    if not with_instance:
        del header[2]
    # Kafka's format ends each column, the last too, with a space; ASSIGNMENT follows it.
    print("\n" + _row(w, header) + " " + ("ASSIGNMENT" if verbose else ""))
    for m in members:
        values: list[object] = [desc.group_id, m.member_id, m.group_instance_id or ""]
        values += [m.host, m.client_id, len(m.assignment)]
        if not with_instance:
            del values[2]
        line = _row(w, values) + " "
        if verbose:
            by_topic: dict[str, list[int]] = {}
            for tp in m.assignment:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            line += (
                ",".join(
                    f"{t}({','.join(map(str, sorted(ps)))})" for t, ps in sorted(by_topic.items())
                )
                or MISSING
            )
        print(line)


def _print_state(desc: ConsumerGroupDescription) -> None:
    if not _should_print(desc, 1):
        return
    c = desc.coordinator
    coordinator = f"{c.host}:{c.port} ({c.node_id})"
    # Kafka sizes the first column by the coordinator's text; kept as Kafka prints it.
    widths = (max(25, len(coordinator)), 25, 20, 15, 0)
    print("\n" + _row(widths, ("GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE",
                               "#MEMBERS")))  # fmt: skip
    print(_row(widths, (desc.group_id, coordinator, desc.protocol, desc.state,
                        len(desc.members))))  # fmt: skip


def _groups_of(args: argparse.Namespace) -> list[str]:
    groups = list(dict.fromkeys([*(args.groups or []), *(args.group or [])]))
    if not groups and not getattr(args, "all_groups", False):
        raise InvalidConfigurationError("name a group (GROUP or --group GROUP)")
    return groups


async def _describe(admin: AsyncAdmin, args: argparse.Namespace) -> int:
    groups = _groups_of(args)
    if args.all_groups:
        groups += [
            g.group_id for g in await admin.list_consumer_groups() if g.group_id not in groups
        ]
    status = 0
    for desc in await admin.describe_consumer_groups(groups):
        if desc.state == "Dead":
            status = 1
        if args.members:
            _print_members(desc, args.verbose)
        elif args.state:
            _print_state(desc)
        else:
            _print_offsets(desc)
    return status


# --- reset-offsets ------------------------------------------------------------------------


def _scenario(args: argparse.Namespace) -> ResetSpec:
    S = ResetScenario
    if args.to_earliest:
        return ResetSpec(S.TO_EARLIEST)
    if args.to_latest:
        return ResetSpec(S.TO_LATEST)
    if args.to_current:
        return ResetSpec(S.TO_CURRENT)
    if args.to_datetime is not None:
        return ResetSpec.to_datetime(args.to_datetime)
    if args.by_duration is not None:
        return ResetSpec.by_duration(args.by_duration, now_ms=int(time.time() * 1000))
    if args.shift_by is not None:
        return ResetSpec(S.SHIFT_BY, args.shift_by)
    return ResetSpec(S.TO_OFFSET, args.to_offset)


async def _topic_partitions(admin: AsyncAdmin, specs: list[str]) -> list[TopicPartition]:
    """``--topic T`` (every partition) or ``--topic T:0,2``; the topic must exist and the
    partitions with it."""
    md = await admin.cluster.fetch_metadata(None)
    counts = {t.name: len(t.partitions) for t in md.topics if t.error_code == 0}
    out: list[TopicPartition] = []
    for spec in specs:
        topic, sep, plist = spec.partition(":")
        try:
            wanted = [int(p) for p in plist.split(",")] if sep else None
        except ValueError:
            raise InvalidConfigurationError(
                f"--topic expects TOPIC or TOPIC:PARTITION[,PARTITION...], got {spec!r}"
            ) from None
        if topic not in counts:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        n = counts[topic]
        for p in wanted if wanted is not None else range(n):
            if not 0 <= p < n:
                raise UnknownTopicOrPartitionError(
                    f"partition {topic}-{p} does not exist ({topic} has {n} partitions)"
                )
            out.append(TopicPartition(topic, p))
    return sorted(set(out))


async def _plan_group(
    admin: AsyncAdmin, group: str, args: argparse.Namespace, spec: ResetSpec
) -> ResetPlan:
    committed = await admin.list_consumer_group_offsets(group)
    tps = sorted(committed) if args.all_topics else await _topic_partitions(admin, args.topic)
    cluster = admin.cluster
    earliest = await list_log_offsets(cluster, dict.fromkeys(tps, EARLIEST_TIMESTAMP), strict=True)
    latest = await list_log_offsets(cluster, dict.fromkeys(tps, LATEST_TIMESTAMP), strict=True)
    by_time: dict[TopicPartition, tuple[int, int]] = {}
    if spec.needs_timestamp_lookup:
        by_time = await list_log_offsets(cluster, dict.fromkeys(tps, spec.value), strict=True)
    inputs = {
        tp: PartitionOffsets(
            earliest[tp][0],
            latest[tp][0],
            committed[tp].offset if tp in committed else None,
            by_time[tp][0] if tp in by_time else None,
        )
        for tp in tps
    }
    return plan_reset(spec, inputs)


async def _reset(admin: AsyncAdmin, args: argparse.Namespace) -> int:
    groups = _groups_of(args)
    spec = _scenario(args)
    if not args.execute and not args.dry_run:
        _err("WARN: No action will be performed as the --execute option is missing.")
    status = 0
    plans: list[tuple[str, ResetPlan]] = []
    for desc in await admin.describe_consumer_groups(groups):
        if desc.state not in INACTIVE:
            _err(
                f"\nError: Assignments can only be reset if the group '{desc.group_id}' is "
                f"inactive, but the current state is {desc.state}."
            )
            status = 1
            continue
        plan = await _plan_group(admin, desc.group_id, args, spec)
        for c in plan.clamped:
            _err(f"WARN: {c.warning()}")
        if args.execute:
            await admin.alter_consumer_group_offsets(
                desc.group_id, {tp: OffsetAndMetadata(o) for tp, o in plan.rows()}
            )
        plans.append((desc.group_id, plan))
    rows = [(g, tp.topic, tp.partition, o) for g, plan in plans for tp, o in plan.rows()]
    if rows:
        widths = (30, 30, 10, 15)
        print("\n" + _row(widths, ("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET")))
        for r in rows:
            print(_row(widths, r))
    return status


# --- delete -------------------------------------------------------------------------------


async def _delete(admin: AsyncAdmin, args: argparse.Namespace) -> int:
    results = await admin.delete_consumer_groups(_groups_of(args))
    ok = [g for g, err in results.items() if err is None]
    failed = {g: err for g, err in results.items() if err is not None}
    names = ", ".join(f"'{g}'" for g in ok)
    if not failed:
        print(f"Deletion of requested consumer groups ({names}) was successful.")
        return 0
    _err("\nError: Deletion of some consumer groups failed:")
    for g, err in failed.items():
        _err(f"* Group '{g}' could not be deleted due to: {err}")
    if ok:
        print(f"\nThese consumer groups were deleted successfully: {names}")
    return 1


# --- entry point and registration ---------------------------------------------------------

_ACTIONS = {"list": _list, "describe": _describe, "reset-offsets": _reset, "delete": _delete}


def run_groups(args: argparse.Namespace, bootstrap: str) -> int:
    async def main() -> int:
        async with AsyncAdmin(bootstrap_servers=bootstrap) as admin:
            return await _ACTIONS[args.groups_action](admin, args)

    return trio.run(main)


def _add_group_args(p: argparse.ArgumentParser, *, all_groups: bool) -> None:
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument("--group", action="append", metavar="GROUP", help="repeatable (Kafka's form)")
    if all_groups:
        p.add_argument("--all-groups", action="store_true", help="every consumer group")


def register_groups(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    add_bootstrap: Callable[[argparse.ArgumentParser], None],
    func: Callable[[argparse.Namespace], int],
) -> None:
    groups = sub.add_parser("groups", help="consumer groups: list, describe (lag), reset, delete")
    gsub = groups.add_subparsers(dest="groups_action", required=True, metavar="ACTION")

    listing = gsub.add_parser("list", help="list consumer groups")
    listing.add_argument(
        "--state",
        nargs="?",
        const="",
        default=None,
        metavar="STATE[,STATE]",
        help="show each group's state; with states, only groups in them",
    )

    describe = gsub.add_parser("describe", help="offsets and lag, members, or state of groups")
    _add_group_args(describe, all_groups=True)
    view = describe.add_mutually_exclusive_group()
    view.add_argument("--offsets", action="store_true", help="per partition (the default)")
    view.add_argument("--members", action="store_true", help="one line per member")
    view.add_argument("--state", action="store_true", help="coordinator, assignor, state")
    describe.add_argument("--verbose", action="store_true", help="with --members: assignments")

    reset = gsub.add_parser("reset-offsets", help="move an inactive group's committed offsets")
    _add_group_args(reset, all_groups=False)
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--topic", action="append", metavar="TOPIC[:P,P...]")
    which.add_argument("--all-topics", action="store_true", help="every partition it committed")
    how = reset.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-current", action="store_true")
    how.add_argument("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss", help="ISO 8601")
    how.add_argument("--by-duration", metavar="PnDTnHnMnS", help="this long before now")
    how.add_argument("--shift-by", type=int, metavar="N", help="committed + N (N may be < 0)")
    how.add_argument("--to-offset", type=int, metavar="N")
    mode = reset.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan only (default)")
    mode.add_argument("--execute", action="store_true", help="commit the printed offsets")

    delete = gsub.add_parser("delete", help="delete inactive groups and their offsets")
    _add_group_args(delete, all_groups=False)

    for p in (listing, describe, reset, delete):
        add_bootstrap(p)
        p.set_defaults(func=func)
