"""The member's log writes in progress, in order, and the messages that wait for them.
Sans-IO: the server runs the jobs (``RaftDisk.run``) in a thread and reports them done.

A job is what one ``Ready`` hands the disk (an installed snapshot, entries) or a snapshot
of our own tree to write. Jobs run in the order they were added, a group at a time with
one fsync (natural group commit: what is added while a group is being written becomes the
next group). A message for which ``needs_durable_log`` holds (an append ack) waits behind
the last job added before it, so it leaves only once everything it acknowledges is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.consensus.node import Snapshot, needs_durable_log
from proto.zk_peer import Entry, PeerMessage

__all__ = ["DiskJob", "WriteQueue"]


@dataclass(slots=True)
class DiskJob:
    entries: list[Entry] = field(default_factory=list)
    # From the leader: replaces the whole log.
    installed: Snapshot | None = None
    # Ours: (index, term, DataTree.to_snapshot() rows), packed by the writer into
    # ``compacted``; the log is compacted once that is on disk.
    compaction: tuple[int, int, Any] | None = None
    compacted: Snapshot | None = None
    # Sent once this job and all before it are durable.
    after: list[PeerMessage] = field(default_factory=list)


class WriteQueue:
    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: list[DiskJob] = []  # not handed to the writer yet
        self.running: list[DiskJob] = []  # being written

    def add(self, job: DiskJob) -> None:
        self.waiting.append(job)

    def gate(self, msg: PeerMessage) -> bool:
        """True if ``msg`` must wait (it was queued behind the last job)."""
        last = self.waiting or self.running
        if not last or not needs_durable_log(msg):
            return False
        last[-1].after.append(msg)
        return True

    def take(self) -> list[DiskJob]:
        """The next group to write; nothing while the previous one is being written."""
        if self.running or not self.waiting:
            return []
        self.running, self.waiting = self.waiting, []
        return self.running

    def finished(self) -> list[DiskJob]:
        done, self.running = self.running, []
        return done

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)
