"""The in-memory Raft log of one server: a snapshot point plus the entries after it. Pure.

Invariants: ``entries[i].index == snap_index + 1 + i``; ``snap_index <= commit <=
last_index``; ``stable`` is the last index the host has persisted (fsynced) and ``written`` the last
it was handed to persist (``stable <= written``; entries after ``written`` are handed out
in the next ``Ready``); committed entries are never truncated.
"""

from __future__ import annotations

from proto.zk_peer import Entry

__all__ = ["RaftLog"]


class RaftLog:
    __slots__ = (
        "applied",
        "commit",
        "entries",
        "snap_data",
        "snap_index",
        "snap_term",
        "stable",
        "written",
    )

    def __init__(
        self,
        snap_index: int = 0,
        snap_term: int = 0,
        snap_data: bytes = b"",
        entries: list[Entry] | None = None,
    ) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.snap_data = snap_data
        self.entries: list[Entry] = list(entries or [])
        for i, e in enumerate(self.entries):
            if e.index != snap_index + 1 + i:
                raise ValueError(f"log entry {e.index} out of place after {snap_index}")
        self.stable = self.last_index  # what we were given came from disk
        self.written = self.stable
        self.commit = snap_index
        self.applied = snap_index

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None if it is compacted away or past the end."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self.entries[index - self.snap_index - 1].term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries lo..hi inclusive (lo > snap_index)."""
        base = self.snap_index + 1
        return self.entries[lo - base : hi - base + 1]

    def append(self, entry: Entry) -> None:
        assert entry.index == self.last_index + 1
        self.entries.append(entry)

    def merge(self, entries: list[Entry]) -> None:
        """Follower side: add ``entries`` (which follow a matching prefix), truncating the
        first conflicting entry and everything after it."""
        for n, e in enumerate(entries):
            if e.index <= self.snap_index:
                continue
            existing = self.term_at(e.index)
            if existing == e.term:
                continue
            if existing is not None:
                if e.index <= self.commit:
                    raise AssertionError(f"conflict at committed index {e.index}")
                del self.entries[e.index - self.snap_index - 1 :]
                self.stable = min(self.stable, e.index - 1)
                self.written = min(self.written, e.index - 1)
            self.entries.extend(entries[n:])
            return

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing ``index``'s term (conflict hint)."""
        term = self.term_at(index)
        while index - 1 > self.snap_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def unstable(self) -> list[Entry]:
        """Entries not handed to the host yet (to write and fsync)."""
        last = self.last_index
        return self.slice(self.written + 1, last) if self.written < last else []

    def to_apply(self) -> list[Entry]:
        return self.slice(self.applied + 1, self.commit) if self.applied < self.commit else []

    def install_snapshot(self, index: int, term: int, data: bytes) -> None:
        """Replace the whole log by a snapshot (the host persists it and drops its log)."""
        self.snap_index, self.snap_term, self.snap_data = index, term, data
        self.entries = []
        self.stable = self.written = index
        self.commit = max(self.commit, index)

    def compact(self, index: int, data: bytes) -> None:
        """The host snapshotted the state machine at applied ``index``: drop entries up to
        it and keep ``data`` to send to followers that need it."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise ValueError(f"compact({index}) beyond applied {self.applied}")
        term = self.term_at(index)
        assert term is not None
        del self.entries[: index - self.snap_index]
        self.snap_index, self.snap_term, self.snap_data = index, term, data
