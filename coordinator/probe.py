"""Test hooks into one running ensemble member (``serve(..., probe=...)``), so tests wait
on events instead of polling.

A ``MemberProbe`` mirrors the member's Raft role, leader and term (updated by the server
after every batch that changed them) and can pause the member's request processor: a
paused member still accepts connections and queues what arrives (peer messages, client
connects, ticks), but handles none of it until ``resume()``, like a member stalled by a
slow disk or a long GC pause. Nothing here is needed in production; ``serve`` without a
probe behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["MemberProbe"]


class MemberProbe:
    def __init__(self, on_change: Callable[[MemberProbe], None] | None = None) -> None:
        self.role = "follower"
        self.leader_id: int | None = None
        self.term = 0
        self.connects_queued = 0  # client ConnectRequests queued for the processor
        self._on_change = on_change
        self._changed = trio.Event()
        self._paused = False
        self._resumed = trio.Event()
        self._resumed.set()

    # --- the server's side --------------------------------------------------------------

    def report_state(self, role: str, leader_id: int | None, term: int) -> None:
        self.role, self.leader_id, self.term = role, leader_id, term
        self._notify()

    def connect_queued(self) -> None:
        self.connects_queued += 1
        self._notify()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        if self._on_change is not None:
            self._on_change(self)

    # --- the test's side ----------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop handling input after the current batch; everything queues up."""
        if not self._paused:
            self._paused = True
            self._resumed = trio.Event()

    def resume(self) -> None:
        """Handle everything queued while paused (as one batch, in arrival order)."""
        self._paused = False
        self._resumed.set()

    async def wait_changed(self) -> None:
        """Return at the next state report or queued connect."""
        await self._changed.wait()

    async def wait_connects_queued(self, count: int) -> None:
        while self.connects_queued < count:
            await self.wait_changed()
