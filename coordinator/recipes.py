"""Recipes on top of the client: leader election, and registering an ephemeral node.

Both follow ZooKeeper's recipes: election by ephemeral-sequential candidates, each
watching only its predecessor (no herd effect when the leader dies); registration that
tells its own stale ephemeral (left by an earlier session of the same process, not yet
reaped by the server) apart from a node another live process owns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection

import trio

from coordinator.client import CoordinatorClient, SessionState, WatchedEvent
from proto.errors import NodeExistsError, NoNodeError, SessionExpiredError

__all__ = ["LeaderElection", "register_ephemeral"]

CANDIDATE_PREFIX = "n_"


def _sequence(name: str) -> int:
    return int(name[-10:])


class LeaderElection:
    """``await election.campaign()`` returns once this candidate leads; it stays leader
    while its session lives (watch for LOST/SUSPENDED with ``add_listener``)."""

    def __init__(self, zk: CoordinatorClient, path: str, identifier: bytes = b"") -> None:
        self.zk = zk
        self.path = path.rstrip("/") or "/"
        self.identifier = identifier
        self.node: str | None = None
        self.is_leader = False

    def _candidates(self, children: list[str]) -> list[str]:
        return sorted((c for c in children if c.startswith(CANDIDATE_PREFIX)), key=_sequence)

    async def campaign(self) -> None:
        zk = self.zk
        if self.node is None:
            await zk.ensure_path(self.path)
            prefix = f"{self.path.rstrip('/')}/{CANDIDATE_PREFIX}"
            self.node = await zk.create(prefix, self.identifier, ephemeral=True, sequential=True)
        me = self.node.rsplit("/", 1)[1]
        while True:
            candidates = self._candidates(await zk.get_children(self.path))
            if me not in candidates:
                raise SessionExpiredError(f"candidate {self.node} vanished")
            index = candidates.index(me)
            if index == 0:
                self.is_leader = True
                return
            predecessor = f"{self.path.rstrip('/')}/{candidates[index - 1]}"
            changed = trio.Event()

            def wake(_: WatchedEvent | SessionState, changed: trio.Event = changed) -> None:
                changed.set()

            zk.add_listener(wake)
            try:
                if await zk.exists(predecessor, watch=wake) is not None:
                    await changed.wait()
            finally:
                zk.remove_listener(wake)
            if zk.state is SessionState.LOST:
                raise SessionExpiredError("session lost while campaigning")

    async def resign(self) -> None:
        """Withdraw (and step down if leading)."""
        node, self.node, self.is_leader = self.node, None, False
        if node is not None:
            with contextlib.suppress(NoNodeError):
                await self.zk.delete(node)

    async def leader(self) -> bytes | None:
        """The identifier of the current leader, None if there are no candidates."""
        while True:
            candidates = self._candidates(await self.zk.get_children(self.path))
            if not candidates:
                return None
            try:
                data, _ = await self.zk.get(f"{self.path.rstrip('/')}/{candidates[0]}")
            except NoNodeError:
                continue  # it just resigned; look again
            return data


async def register_ephemeral(
    zk: CoordinatorClient,
    path: str,
    data: bytes,
    *,
    own_sessions: Collection[int] = (),
    stale_wait_ms: int | None = None,
) -> None:
    """Create ephemeral ``path`` holding ``data`` for this session, parents included.

    If the node already exists: owned by this session -> done; owned by one of
    ``own_sessions`` (earlier sessions of this process) or holding exactly ``data`` (our
    own registration from an expired session, as Kafka's broker registration assumes) ->
    wait for the server to reap it, up to ``stale_wait_ms`` (default: twice the
    negotiated session timeout), then create it; anything else -> NodeExistsError.
    """
    wait_ms = stale_wait_ms if stale_wait_ms is not None else 2 * zk.negotiated_timeout_ms
    with trio.move_on_after(wait_ms / 1000) as scope:
        while True:
            try:
                await zk.create(path, data, ephemeral=True, makepath=True)
                return
            except NodeExistsError:
                pass
            gone = trio.Event()

            def on_change(_: WatchedEvent, gone: trio.Event = gone) -> None:
                gone.set()

            try:
                existing, stat = await zk.get(path, watch=on_change)
            except NoNodeError:
                continue
            owner = stat.ephemeral_owner
            if owner == zk.session_id:
                return
            if owner == 0 or (owner not in own_sessions and existing != data):
                raise NodeExistsError(f"{path} is held by session {owner:#x}")
            await gone.wait()  # stale node of ours: the server deletes it on expiry
    if scope.cancelled_caught:
        raise NodeExistsError(f"{path}: stale ephemeral not reaped within {wait_ms} ms")
