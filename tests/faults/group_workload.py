"""The consumer-group workload of the fault tests: member processes, their logs turned
into a checkable history, and the group's own promises checked on it.

Members (``tests.faults.group_member``, processes or threads) log every poll and
commit; ``MemberLog`` reads such a log back (a kill -9 may cut its last line) and gives
the queue checker's events (``Poll``, ``Commit``, ``Rebalance`` markers for every
assignment change). On top of the checker (which finds lost writes, group skips,
nonmonotonic polls per member), three checks state what a group must do across a
handover:

- ``handovers``: a partition's new owner starts exactly at the last acknowledged commit
  (or at a commit whose outcome its member never learnt: killed inside ``commit()``, or
  a timeout), never before it without cause and never beyond it;
- ``unexplained_duplicates``: a record read twice was first read in a poll whose commit
  never succeeded (at-least-once: only uncommitted records come back), and no commit
  covering it had been acknowledged when its re-reader was assigned the partition;
- ``missed_by_group``: every acknowledged record was polled by some member.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from client import Admin
from tests.checkers.queue import Acked, Commit, Event, Poll, Rebalance, Send
from tests.integration.cluster import LocalCluster, Proc

T = TypeVar("T")

# Brokers of the group fault tests: members may ask for sessions of 3 s; a first join
# waits 1 s for more members instead of 3 s; 3 partitions of __consumer_offsets, so that
# creating it (RF 3) is quick.
GROUP_SETTINGS = {
    "group.min.session.timeout.ms": "1000",
    "group.initial.rebalance.delay.ms": "1000",
    "offsets.topic.num.partitions": "3",
}
SESSION_TIMEOUT_MS = 3_000
HEARTBEAT_INTERVAL_MS = 500
PROCESSING_MS = 50  # per poll, between the poll and its commit


@dataclass(frozen=True, slots=True)
class Handover:
    """Member ``to`` starting on ``partition`` (its first poll of it, or its first after
    the partition was assigned to it again); ``source`` polled it last (None: nobody)."""

    partition: int
    source: int | None
    to: int
    at: float  # when the new owner's first poll of it returned
    first_offset: int
    committed: int  # the last acknowledged commit before (0: none, auto_offset_reset earliest)
    maybe: frozenset[int]  # offsets of commits that may have been stored unbeknownst
    own_next: int | None  # after the member's own last poll of it (a reassignment)

    @property
    def ok(self) -> bool:
        # A member given back a partition it read may go on from its own position (it
        # polled everything before it) instead of the commit, if its last commit failed.
        own = self.own_next is not None and self.source == self.to
        return self.first_offset in (self.committed, *self.maybe) or (
            own and self.first_offset == self.own_next
        )

    def __str__(self) -> str:
        return (
            f"partition {self.partition}: member {self.source} -> {self.to}, first offset "
            f"{self.first_offset}, last acknowledged commit {self.committed}"
            + (f", uncertain commits {sorted(self.maybe)}" if self.maybe else "")
        )


@dataclass
class MemberLog:
    """What one member logged (``tests.faults.group_member``), in order."""

    process: int
    entries: list[dict[str, Any]]

    @classmethod
    def read(cls, process: int, path: Path) -> MemberLog:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        lines = text.split("\n")
        # The last element is "" after a complete line, or a line a kill -9 cut short.
        return cls(process, [json.loads(line) for line in lines[:-1]])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["e"] == kind]

    def events(self, topic: str, group: str) -> list[Poll | Commit | Rebalance]:
        out: list[Poll | Commit | Rebalance] = []
        for e in self.entries:
            if e["e"] == "poll":
                records = {
                    (topic, int(p)): tuple((o, v.encode()) for o, v in recs)
                    for p, recs in e["records"].items()
                }
                out.append(Poll(self.process, e["invoked"], e["completed"], records))
            elif e["e"] == "commit":
                offsets = {(topic, int(p)): o for p, o in e["offsets"].items()}
                out.append(Commit(self.process, group, e["invoked"], e["completed"], offsets))
            elif e["e"] in ("assigned", "revoked", "lost"):
                parts = frozenset((topic, p) for p in e["partitions"])
                out.append(Rebalance(self.process, e["at"], parts, group))
        return out

    def owned_at(self, at: float) -> set[int]:
        """The partitions this member owned at time ``at`` (its listener's view)."""
        owned: set[int] = set()
        for e in self.entries:
            if e["e"] in ("assigned", "revoked", "lost") and e["at"] <= at:
                parts = set(e["partitions"])
                owned = owned | parts if e["e"] == "assigned" else owned - parts
        return owned

    def uncertain_commits(self) -> list[dict[str, Any]]:
        """``commit_begin`` entries the broker may have stored without the member knowing:
        no outcome logged (a kill -9 inside ``commit()``), or a failure that was not a
        refusal (a timeout, a lost connection)."""
        out = []
        for i, e in enumerate(self.entries):
            if e["e"] != "commit_begin":
                continue
            outcome = next(
                (x for x in self.entries[i + 1 :] if x["e"] in ("commit", "commit_failed")),
                None,
            )
            if outcome is None or (outcome["e"] == "commit_failed" and not outcome["refused"]):
                out.append(e)
        return out

    def uncommitted_polls(self) -> set[int]:
        """Indices of polls whose commit did not succeed (failed, or no outcome)."""
        out: set[int] = set()
        for i, e in enumerate(self.entries):
            if e["e"] != "poll":
                continue
            outcome = next(
                (x["e"] for x in self.entries[i + 1 :] if x["e"] in ("commit", "commit_failed")),
                None,
            )
            if outcome != "commit":
                out.add(i)
        return out


def _commits(logs: Sequence[MemberLog]) -> dict[int, list[tuple[float, int]]]:
    """partition -> acknowledged commits (completed, offset), in time order."""
    out: dict[int, list[tuple[float, int]]] = {}
    for log in logs:
        for e in log.of("commit"):
            for p, o in e["offsets"].items():
                out.setdefault(int(p), []).append((e["completed"], o))
    return {p: sorted(c) for p, c in out.items()}


def _starts(logs: Sequence[MemberLog]) -> list[tuple[float, int, int, int, int | None]]:
    """(completed, process, partition, first offset, own next offset) of each poll that
    starts a member on a partition: its first poll of it, or the first after an
    ``assigned`` naming it (eager rebalances assign everything again)."""
    out = []
    for log in logs:
        next_offset: dict[int, int] = {}
        fresh: set[int] = set()
        for e in log.entries:
            if e["e"] == "assigned":
                fresh |= set(e["partitions"])
            elif e["e"] == "poll":
                for p, recs in e["records"].items():
                    partition = int(p)
                    if partition in fresh or partition not in next_offset:
                        own = next_offset.get(partition)
                        out.append((e["completed"], log.process, partition, recs[0][0], own))
                    fresh.discard(partition)
                    next_offset[partition] = recs[-1][0] + 1
    return out


def _pollers(logs: Sequence[MemberLog]) -> dict[int, list[tuple[float, int]]]:
    """partition -> (completed, process) of every poll returning it, in time order."""
    out: dict[int, list[tuple[float, int]]] = {}
    for log in logs:
        for e in log.of("poll"):
            for p in e["records"]:
                out.setdefault(int(p), []).append((e["completed"], log.process))
    return {p: sorted(polls) for p, polls in out.items()}


def handovers(logs: Sequence[MemberLog]) -> list[Handover]:
    """Every start of a member on a partition, with what it should have started at."""
    commits = _commits(logs)
    pollers = _pollers(logs)
    maybe = [
        (e["at"], int(p), o)
        for log in logs
        for e in log.uncertain_commits()
        for p, o in e["offsets"].items()
    ]
    out = []
    for completed, process, partition, first, own in sorted(_starts(logs)):
        earlier = [who for t, who in pollers[partition] if t < completed]
        source = earlier[-1] if earlier else None
        acked = [(t, o) for t, o in commits.get(partition, []) if t < completed]
        committed = acked[-1][1] if acked else 0
        since = acked[-1][0] if acked else float("-inf")
        pending = frozenset(o for at, p, o in maybe if p == partition and since <= at < completed)
        out.append(Handover(partition, source, process, completed, first, committed, pending, own))
    return out


def unexplained_duplicates(logs: Sequence[MemberLog]) -> list[str]:
    """Records read more than once against at-least-once: a first read whose poll's commit
    succeeded, or a re-read by a member assigned the partition after a commit past it."""
    commits = _commits(logs)
    reads: dict[tuple[int, int], list[tuple[float, int, bool, float]]] = {}
    for log in logs:
        uncommitted = log.uncommitted_polls()
        assigned_at: dict[int, float] = {}
        for i, e in enumerate(log.entries):
            if e["e"] == "assigned":
                assigned_at.update(dict.fromkeys(e["partitions"], e["at"]))
            if e["e"] != "poll":
                continue
            for p, recs in e["records"].items():
                since = assigned_at.get(int(p), e["invoked"])
                for offset, _ in recs:
                    key = (int(p), offset)
                    reads.setdefault(key, []).append(
                        (e["completed"], log.process, i in uncommitted, since)
                    )
    out = []
    for (partition, offset), seen in sorted(reads.items()):
        if len(seen) < 2:
            continue
        seen.sort()
        for completed, process, unsure, _ in seen[:-1]:
            if not unsure:
                out.append(
                    f"{partition}@{offset}: read by member {process} at {completed:.3f} in a "
                    f"poll whose commit was acknowledged, and read again: {seen}"
                )
        for _, process, _, since in seen[1:]:
            covered = [o for t, o in commits.get(partition, []) if t < since and o > offset]
            if covered:
                out.append(
                    f"{partition}@{offset}: re-read by member {process} assigned at {since:.3f}"
                    f" after a commit of offset {covered[0]} was acknowledged"
                )
    return out


def reads(logs: Sequence[MemberLog]) -> Counter[tuple[int, int]]:
    """(partition, offset) -> how many times members polled it."""
    return Counter(
        (int(p), offset)
        for log in logs
        for e in log.of("poll")
        for p, recs in e["records"].items()
        for offset, _ in recs
    )


def uncommitted_tail(log: MemberLog) -> set[tuple[int, int]]:
    """(partition, offset) of what ``log``'s member polled in polls it never committed."""
    return {
        (int(p), offset)
        for i in log.uncommitted_polls()
        for p, recs in log.entries[i]["records"].items()
        for offset, _ in recs
    }


def missed_by_group(sends: Sequence[Event], logs: Sequence[MemberLog]) -> list[Hashable]:
    """Acknowledged values no member ever polled."""
    polled = {
        v.encode()
        for log in logs
        for e in log.of("poll")
        for recs in e["records"].values()
        for _, v in recs
    }
    return [
        s.value
        for s in sends
        if isinstance(s, Send) and isinstance(s.outcome, Acked) and s.value not in polled
    ]


def member_history(logs: Sequence[MemberLog], topic: str, group: str) -> list[Event]:
    """Every member's events, merged by time (each member's own order kept)."""
    tagged = []
    for log in logs:
        for n, event in enumerate(log.events(topic, group)):
            at = event.completed_at if isinstance(event, Poll | Commit) else event.at
            tagged.append((at, log.process, n, event))
    return [event for *_, event in sorted(tagged, key=lambda t: t[:3])]


# --- members as processes and threads ------------------------------------------------------


@contextmanager
def member_processes(
    cluster: LocalCluster, root: Path, topic: str, group: str, count: int, strategy: str
) -> Iterator[list[Proc]]:
    """``count`` member processes; each logs to ``root/member-<n>.jsonl``. Every one still
    running at the end is killed, whatever the test did."""
    procs: list[Proc] = []
    try:
        for n in range(count):
            argv = [sys.executable, "-m", "tests.faults.group_member"]
            argv += ["--bootstrap", cluster.bootstrap, "--topic", topic, "--group", group]
            argv += ["--out", str(root / f"member-{n}.jsonl"), "--strategy", strategy]
            argv += ["--session-timeout-ms", str(SESSION_TIMEOUT_MS)]
            argv += ["--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)]
            argv += ["--processing-ms", str(PROCESSING_MS)]
            procs.append(Proc(f"member-{n}", argv, root / f"member-{n}.log"))
        yield procs
    finally:
        for proc in procs:
            proc.stop(timeout=15)


# --- waits ---------------------------------------------------------------------------------


def wait_for(
    what: str, done: Callable[[], T], timeout: float, detail: Callable[[], object] = str
) -> T:
    """Poll ``done()`` (other processes: nothing to wait on) until it is truthy; on time
    out, fail with ``detail()``."""
    deadline = time.monotonic() + timeout
    while True:
        result = done()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s; {detail()}")
        threading.Event().wait(0.02)


def wait_caught_up(admin: Admin, group: str, partitions: int, timeout: float = 30.0) -> None:
    """Until the group has committed every partition up to its log end offset (or past
    it: a bug the history checks then describe better than a time out would)."""

    def lags() -> list[int | None]:
        [desc] = admin.describe_consumer_groups([group])
        by_tp = {o.topic_partition.partition: o.lag for o in desc.offsets}
        return [by_tp.get(p) for p in range(partitions)]

    def done() -> bool:
        return all(lag is not None and lag <= 0 for lag in lags())

    wait_for(f"group {group} caught up", done, timeout, lags)
