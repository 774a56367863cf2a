"""The consumer-group half of the queue check: records a group skipped.

A group reads a partition as a relay: each member starts where the last acknowledged commit
(or the reset policy) puts it, polls, commits, and hands the partition on at a rebalance.
A record the group skipped is one below where the group got to in that partition (its
highest acknowledged commit, or a member's highest polled offset + 1) that no member ever
polled: typically a commit of an offset past what the committer had read, or a new owner
starting past the last commit. Duplicated reads across members are at-least-once and
allowed; only gaps are anomalies. Pure, like ``chaos.checker``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chaos.checker_report import GroupSkip
from chaos.history import TP, Commit, Event, Poll, Rebalance

__all__ = ["group_members", "group_skips"]


def group_members(events: Sequence[Event]) -> dict[str, set[int]]:
    """group -> the processes that recorded a rebalance marker or a commit in it."""
    members: dict[str, set[int]] = {}
    for event in events:
        if isinstance(event, Commit | Rebalance) and event.group is not None:
            members.setdefault(event.group, set()).add(event.process)
    return members


def group_skips(events: Sequence[Event], existing: Mapping[TP, Sequence[int]]) -> list[GroupSkip]:
    """Every run of existing offsets (``existing``: sorted, per partition) that a group
    jumped over; one ``GroupSkip`` per consecutive run, in group and partition order."""
    out: list[GroupSkip] = []
    for group, members in sorted(group_members(events).items()):
        seen: dict[TP, set[int]] = {}
        reached: dict[TP, int] = {}
        for event in events:
            if isinstance(event, Poll) and event.process in members:
                for tp, recs in event.records.items():
                    offsets = seen.setdefault(tp, set())
                    for offset, _ in recs:
                        offsets.add(offset)
                        reached[tp] = max(reached.get(tp, 0), offset + 1)
            elif isinstance(event, Commit) and event.group == group:
                for tp, offset in event.offsets.items():
                    reached[tp] = max(reached.get(tp, 0), offset)
        for tp in sorted(reached):
            polled = seen.get(tp, set())
            run: list[int] = []
            for offset in existing.get(tp, ()):
                if offset >= reached[tp]:
                    break
                if offset in polled:
                    if run:
                        out.append(_skip(group, tp, run, reached[tp]))
                        run = []
                else:
                    run.append(offset)
            if run:
                out.append(_skip(group, tp, run, reached[tp]))
    return out


def _skip(group: str, tp: TP, run: list[int], reached: int) -> GroupSkip:
    return GroupSkip(group, tp[0], tp[1], run[0], run[-1], len(run), reached)
