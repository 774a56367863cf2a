"""Who is in a group: its members, static instance ids, handed-out ids and leader (sans-IO).

A member is what a JoinGroup registered: its ids, timeouts and the protocols it offers
in order of preference, each with opaque metadata (for consumers, the encoded
subscription). The coordinator looks inside metadata only to tell whether a restarted
static consumer asks for what it asked before (``broker/group/subscriptions.py``).

``Roster`` keeps the bookkeeping consistent (the static map points at members, the leader
is a member, a handed-out id is never also a member) but decides nothing about phases or
responses: ``broker/group/state.py`` drives it. Nothing here imports trio or reads a clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from broker.group.events import JoinGroupRequest

__all__ = [
    "NEW_MEMBER_JOIN_TIMEOUT_MS",
    "Member",
    "Protocols",
    "Roster",
    "candidate_protocols",
    "select_protocol",
]

# Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a member on its first JoinGroup cannot
# heartbeat yet, so a client that gave up on a long rebalance is dropped after this long.
NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000

# (protocol name, metadata) in the member's order of preference.
Protocols = tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class Member:
    """A member's registration and where its requests stand.

    ``awaiting_join`` / ``awaiting_sync`` hold the request id of a JoinGroup / SyncGroup
    the coordinator has not answered yet (Kafka's awaitingJoinCallback and
    awaitingSyncCallback); never both. ``assignment`` is None until the leader's
    assignment for the current generation is stored; in a Stable group every member has one.
    """

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: Protocols
    last_heartbeat_ms: int
    is_new: bool = False
    assignment: bytes | None = None
    awaiting_join: int | None = None
    awaiting_sync: int | None = None

    @classmethod
    def from_join(cls, req: JoinGroupRequest, member_id: str, now_ms: int) -> Member:
        return cls(
            member_id,
            req.group_instance_id,
            req.client_id,
            req.client_host,
            req.rebalance_timeout_ms,
            req.session_timeout_ms,
            req.protocol_type,
            req.protocols,
            last_heartbeat_ms=now_ms,
            is_new=True,
        )

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        raise KeyError(f"member {self.member_id} does not support protocol {protocol!r}")

    def matches(self, protocols: Protocols) -> bool:
        """Same protocols, same order, same metadata bytes: a rejoin that changes nothing
        (Kafka's MemberMetadata.matches; a cooperative follower's smaller owned set counts)."""
        return self.protocols == protocols

    def vote(self, candidates: Iterable[str]) -> str:
        """The member's most preferred protocol among ``candidates``."""
        allowed = set(candidates)
        for name, _ in self.protocols:
            if name in allowed:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(allowed)}")

    def expiry_deadline_ms(self) -> int | None:
        """When this member's liveness timer fires, or None while nothing can expire it.

        A member with a JoinGroup or SyncGroup held in the coordinator is alive by
        definition (its request is in flight), except a new member's first JoinGroup,
        which is bounded by NEW_MEMBER_JOIN_TIMEOUT_MS (Kafka's shouldKeepAlive).
        """
        if self.awaiting_join is not None:
            return self.last_heartbeat_ms + NEW_MEMBER_JOIN_TIMEOUT_MS if self.is_new else None
        if self.awaiting_sync is not None:
            return None
        return self.last_heartbeat_ms + self.session_timeout_ms


def candidate_protocols(members: Iterable[Member]) -> list[str]:
    """Protocols every member supports, in the order the first member prefers them."""
    listed = list(members)
    if not listed:
        return []
    counts = Counter(name for m in listed for name in set(m.protocol_names))
    return [name for name in listed[0].protocol_names if counts[name] == len(listed)]


def select_protocol(members: Sequence[Member], leader: Member | None) -> str:
    """Kafka's vote: each member votes for its favourite protocol that all support; most
    votes wins. Kafka leaves ties to hash order; here the leader's preference breaks them,
    so the choice is deterministic."""
    candidates = candidate_protocols(members)
    if not candidates:
        raise ValueError("no protocol is supported by every member")
    votes = Counter(m.vote(candidates) for m in members)
    best = max(votes.values())
    tied = {name for name, n in votes.items() if n == best}
    order = leader.protocol_names if leader is not None else candidates
    for name in order:
        if name in tied:
            return name
    return min(tied)


class Roster:
    """The members of one group, in join order, and the indexes kept beside them."""

    __slots__ = ("leader_id", "members", "pending", "protocol_type", "static")

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.static: dict[str, str] = {}  # group.instance.id -> member id
        self.pending: dict[str, int] = {}  # KIP-394 id handed out -> when it expires
        self.leader_id: str | None = None  # the first member to join, while it stays
        self.protocol_type: str | None = None

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self.members

    def __getitem__(self, member_id: str) -> Member:
        return self.members[member_id]

    def all(self) -> list[Member]:
        return list(self.members.values())

    @property
    def leader(self) -> Member | None:
        return self.members.get(self.leader_id) if self.leader_id is not None else None

    def add(self, m: Member) -> None:
        if m.member_id in self.members:
            raise ValueError(f"member {m.member_id} is already in the group")
        if not self.members:
            self.protocol_type = m.protocol_type
        if self.leader_id is None:
            self.leader_id = m.member_id
        self.members[m.member_id] = m
        if m.group_instance_id is not None:
            self.static[m.group_instance_id] = m.member_id
        self.pending.pop(m.member_id, None)

    def remove(self, member_id: str) -> Member:
        m = self.members.pop(member_id)
        m.awaiting_join = m.awaiting_sync = None
        if m.group_instance_id is not None and self.static.get(m.group_instance_id) == member_id:
            del self.static[m.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return m

    def rename(self, old_id: str, new_id: str) -> None:
        """A static member's new incarnation takes the old one's place (and order)."""
        m = self.members[old_id]
        self.members = {(new_id if k == old_id else k): v for k, v in self.members.items()}
        m.member_id = new_id
        if m.group_instance_id is not None:
            self.static[m.group_instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id

    def fresh_member_id(self, generate: Callable[[str], str], prefix: str) -> str:
        member_id = generate(prefix)
        if not member_id or member_id in self.members or member_id in self.pending:
            raise ValueError(f"member id generator returned a used id {member_id!r}")
        return member_id

    def is_fenced(self, member_id: str, instance: str | None) -> bool:
        """KIP-345: the instance id now belongs to another member id."""
        return instance is not None and self.static.get(instance, member_id) != member_id

    def supports(self, protocol_type: str, protocols: Protocols) -> bool:
        """A member may (re)join only if it shares a protocol with every current member,
        so a protocol all support always exists (Kafka's supportsProtocols)."""
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        common = set(candidate_protocols(self.members.values()))
        return protocol_type == self.protocol_type and any(n in common for n, _ in protocols)

    def all_joined(self) -> bool:
        """Every member has a JoinGroup held and no handed-out id is outstanding."""
        return not self.pending and all(m.awaiting_join is not None for m in self.all())

    def elect_joined_leader(self) -> bool:
        """Keep the leader if it rejoined, else take the first member that did; False when
        nobody rejoined (Kafka's maybeElectNewJoinedLeader)."""
        leader = self.leader
        if leader is not None and leader.awaiting_join is not None:
            return True
        joined = next((m for m in self.all() if m.awaiting_join is not None), None)
        if joined is None:
            return False
        self.leader_id = joined.member_id
        return True

    def select_protocol(self) -> str:
        return select_protocol(self.all(), self.leader)

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.all()), default=0)

    def clear(self) -> None:
        self.members.clear()
        self.static.clear()
        self.pending.clear()
        self.leader_id = None
