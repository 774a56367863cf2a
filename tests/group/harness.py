"""A fake runtime around one ``Group``: a clock, request ids, and the responses and store
requests the group hands out. It checks that no request is ever answered twice."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

from broker.group import (
    Group,
    GroupConfig,
    GroupMetadataRecord,
    GroupState,
    HeartbeatResult,
    JoinGroupRequest,
    JoinGroupResult,
    LeaveGroupResult,
    MemberIdentity,
    Output,
    Respond,
    Response,
    StoreGroup,
    SyncGroupResult,
)
from proto.errors import MemberIdRequiredError

R = TypeVar("R", bound=Response)

RANGE = (("range", b"range-meta"),)
SESSION_MS = 10_000
REBALANCE_MS = 20_000


def counter_ids() -> Callable[[str], str]:
    """Reproducible member ids: "<client or instance id>-<n>"."""
    ids = itertools.count()
    return lambda prefix: f"{prefix}-{next(ids)}"


class Harness:
    def __init__(self, config: GroupConfig | None = None, group: Group | None = None) -> None:
        self.group = group or Group("g", config=config, new_member_id=counter_ids())
        self.now = 0
        self._rids = itertools.count(1)
        self.replies: dict[int, Response] = {}
        self.stores: list[StoreGroup] = []
        self.records: list[GroupMetadataRecord] = []  # the ones stored successfully
        self.issued: set[int] = set()

    # -- plumbing ------------------------------------------------------------------------

    def collect(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Respond):
                assert out.request_id in self.issued, f"answer to unknown request {out}"
                assert out.request_id not in self.replies, f"answered twice: {out}"
                self.replies[out.request_id] = out.response
            else:
                self.stores.append(out)

    def rid(self) -> int:
        rid = next(self._rids)
        self.issued.add(rid)
        return rid

    def reply(self, rid: int, kind: type[R]) -> R | None:
        r = self.replies.get(rid)
        assert r is None or isinstance(r, kind), r
        return r

    def must(self, rid: int, kind: type[R]) -> R:
        r = self.reply(rid, kind)
        assert r is not None, f"request {rid} is still held"
        return r

    @property
    def outstanding(self) -> set[int]:
        return self.issued - set(self.replies)

    # -- requests ------------------------------------------------------------------------

    def join(
        self,
        member_id: str = "",
        *,
        instance: str | None = None,
        client: str = "c",
        protocols: Sequence[tuple[str, bytes]] = RANGE,
        protocol_type: str = "consumer",
        session_ms: int = SESSION_MS,
        rebalance_ms: int = REBALANCE_MS,
    ) -> int:
        req = JoinGroupRequest(
            member_id,
            instance,
            client,
            f"/10.0.0.{client}",
            protocol_type,
            tuple(protocols),
            session_ms,
            rebalance_ms,
        )
        rid = self.rid()
        self.collect(self.group.join(rid, req, self.now))
        return rid

    def join_new(
        self,
        client: str = "c",
        *,
        protocols: Sequence[tuple[str, bytes]] = RANGE,
        session_ms: int = SESSION_MS,
        rebalance_ms: int = REBALANCE_MS,
    ) -> tuple[str, int]:
        """KIP-394's two steps for a dynamic member: MEMBER_ID_REQUIRED, then the join
        with that id (usually held). Returns (member id, request id of the second)."""
        first_rid = self.join(
            client=client, protocols=protocols, session_ms=session_ms, rebalance_ms=rebalance_ms
        )
        first = self.must(first_rid, JoinGroupResult)
        assert first.error == MemberIdRequiredError.code, first
        rid = self.join(
            first.member_id,
            client=client,
            protocols=protocols,
            session_ms=session_ms,
            rebalance_ms=rebalance_ms,
        )
        return first.member_id, rid

    def sync(
        self,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        instance: str | None = None,
    ) -> int:
        rid = self.rid()
        out = self.group.sync(
            rid,
            member_id=member_id,
            generation_id=generation,
            assignments=assignments or {},
            now_ms=self.now,
            group_instance_id=instance,
        )
        self.collect(out)
        return rid

    def heartbeat(self, member_id: str, generation: int, instance: str | None = None) -> int:
        rid = self.rid()
        self.collect(
            self.group.heartbeat(
                rid,
                member_id=member_id,
                generation_id=generation,
                now_ms=self.now,
                group_instance_id=instance,
            )
        )
        return self.must(rid, HeartbeatResult).error

    def leave(self, *who: MemberIdentity) -> LeaveGroupResult:
        rid = self.rid()
        self.collect(self.group.leave(rid, who, self.now))
        return self.must(rid, LeaveGroupResult)

    def commit(self, member_id: str, generation: int, instance: str | None = None) -> int:
        return self.group.validate_commit(
            member_id=member_id,
            generation_id=generation,
            now_ms=self.now,
            group_instance_id=instance,
        )

    def advance(self, ms: int) -> None:
        self.now += ms
        self.collect(self.group.tick(self.now))

    def state(self) -> GroupState:
        """A call, not a property: mypy would keep a narrowed state across calls."""
        return self.group.state

    def complete_join(self) -> None:
        """Let time run until the rebalance collecting joins is done (with several members
        joining an Empty group together the initial delay runs twice)."""
        while self.group.state is GroupState.PREPARING_REBALANCE:
            deadline = self.group.next_deadline_ms()
            assert deadline is not None
            self.advance(deadline - self.now)

    def complete_stores(self, error: int = 0) -> None:
        stores, self.stores = self.stores, []
        for s in stores:
            if error == 0:
                self.records.append(s.record)
            self.collect(self.group.store_completed(s.store_id, error, self.now))

    # -- whole steps ---------------------------------------------------------------------

    def stable_group(self, *clients: str) -> dict[str, str]:
        """Members join an Empty group, the initial delay passes, the leader assigns
        b"<member id>" to each, the record is stored: a Stable group. client -> id."""
        joins = {c: self.join_new(c) for c in clients}
        self.complete_join()
        self.sync_all({rid for _, rid in joins.values()})
        return {c: mid for c, (mid, _) in joins.items()}

    def sync_all(self, join_rids: set[int]) -> None:
        """Everyone whose JoinGroup was answered syncs; the leader assigns b"<id>"."""
        results = [self.must(rid, JoinGroupResult) for rid in sorted(join_rids)]
        assert all(r.error == 0 for r in results), results
        generation = results[0].generation_id
        leader = next(r for r in results if r.is_leader)
        assignment = {m.member_id: m.member_id.encode() for m in leader.members}
        rids = [
            self.sync(r.member_id, generation, assignment if r.is_leader else None) for r in results
        ]
        self.complete_stores()
        for rid in rids:
            assert self.must(rid, SyncGroupResult).error == 0
