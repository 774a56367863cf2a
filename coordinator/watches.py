"""One-shot watches: who is told about which change. Sans-IO.

A watcher is a connection id. Data watches (set by get and exists, including exists on a
missing node) fire on CREATED, CHANGED and DELETED of their path; child watches (set by
get_children) fire on CHILD of their path and on its DELETED. Firing removes the watch
(one-shot); a watcher that has both kinds on a deleted path hears DELETED once.
"""

from __future__ import annotations

from proto.zk import EventType

__all__ = ["WatchManager"]


class WatchManager:
    __slots__ = ("_by_watcher", "child", "data")

    def __init__(self) -> None:
        self.data: dict[str, set[int]] = {}
        self.child: dict[str, set[int]] = {}
        self._by_watcher: dict[int, set[tuple[bool, str]]] = {}  # (is_child, path)

    def add_data_watch(self, path: str, watcher: int) -> None:
        self.data.setdefault(path, set()).add(watcher)
        self._by_watcher.setdefault(watcher, set()).add((False, path))

    def add_child_watch(self, path: str, watcher: int) -> None:
        self.child.setdefault(path, set()).add(watcher)
        self._by_watcher.setdefault(watcher, set()).add((True, path))

    def _pop(self, table: dict[str, set[int]], path: str, is_child: bool) -> set[int]:
        watchers = table.pop(path, set())
        for w in watchers:
            owned = self._by_watcher.get(w)
            if owned is not None:
                owned.discard((is_child, path))
                if not owned:
                    del self._by_watcher[w]
        return watchers

    def trigger(self, path: str, event: EventType) -> list[int]:
        """Watchers to notify of ``event`` on ``path`` (their watches are removed)."""
        fired: set[int] = set()
        if event in (EventType.CREATED, EventType.CHANGED, EventType.DELETED):
            fired |= self._pop(self.data, path, False)
        if event in (EventType.CHILD, EventType.DELETED):
            fired |= self._pop(self.child, path, True)
        return sorted(fired)

    def remove_watcher(self, watcher: int) -> None:
        for is_child, path in self._by_watcher.pop(watcher, set()):
            table = self.child if is_child else self.data
            ws = table.get(path)
            if ws is not None:
                ws.discard(watcher)
                if not ws:
                    del table[path]

    @property
    def count(self) -> int:
        return sum(len(v) for v in self._by_watcher.values())
