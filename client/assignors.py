"""Partition assignors the group leader runs, and the consumer protocol's metadata encoding.

Each assignor is a pure function from every member's ``Subscription`` and the partition
count of each topic to every member's ``Assignment``, with Kafka's names and results:

- ``range``: per topic, members sorted; the first ``n % members`` get one extra partition.
- ``roundrobin``: all subscribed partitions sorted, dealt to sorted members in turn,
  skipping members that do not subscribe to the partition's topic.
- ``cooperative-sticky``: balanced, keeps as much of each member's previous ownership as
  balance allows, and incremental (KIP-429): a partition moving from A to B is left out of
  this generation's assignment altogether (A sees it revoked) and goes to B in the
  follow-up rebalance, so no partition is owned by two members at once.

Members sort as Kafka sorts them: static members (by group.instance.id) first, then the
others by member id. The subscription and assignment travel as the opaque metadata of the
JoinGroup/SyncGroup; their format is defined once, in ``proto/consumer_protocol.py`` (the
broker reads subscriptions too), and the functions here only convert to the client's types.
"""

from __future__ import annotations

import enum
import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from client.types import TopicPartition
from proto import consumer_protocol as cp
from proto.consumer_protocol import CONSUMER_PROTOCOL_TYPE

__all__ = [
    "ASSIGNORS",
    "CONSUMER_PROTOCOL_TYPE",
    "COOPERATIVE_STICKY",
    "RANGE",
    "ROUNDROBIN",
    "Assignment",
    "Assignor",
    "RebalanceProtocol",
    "Subscription",
    "cooperative_sticky_assign",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "range_assign",
    "roundrobin_assign",
]


class RebalanceProtocol(enum.Enum):
    """EAGER: every member gives up all partitions before rejoining. COOPERATIVE (KIP-429):
    members keep theirs and give up only what the assignment revokes."""

    EAGER = "eager"
    COOPERATIVE = "cooperative"


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a member sends in JoinGroup. ``generation`` is the generation its
    ``owned_partitions`` belong to (-1: none). ``group_instance_id`` comes from the
    JoinGroup member list, not from the encoded metadata."""

    topics: tuple[str, ...]
    owned_partitions: tuple[TopicPartition, ...] = ()
    user_data: bytes = b""
    generation: int = -1
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    partitions: tuple[TopicPartition, ...]
    user_data: bytes = b""


AssignFn = Callable[[Mapping[str, Subscription], Mapping[str, int]], dict[str, Assignment]]


@dataclass(frozen=True, slots=True)
class Assignor:
    name: str
    assign: AssignFn
    protocols: tuple[RebalanceProtocol, ...]


def _member_order(subscriptions: Mapping[str, Subscription]) -> list[str]:
    """Kafka's MemberInfo order: static members by instance id, then the rest by id."""

    def key(member_id: str) -> tuple[int, str, str]:
        instance = subscriptions[member_id].group_instance_id
        return (0, instance, member_id) if instance is not None else (1, "", member_id)

    return sorted(subscriptions, key=key)


def _result(per_member: Mapping[str, Iterable[TopicPartition]]) -> dict[str, Assignment]:
    return {m: Assignment(tuple(sorted(tps))) for m, tps in per_member.items()}


# -- range and roundrobin ----------------------------------------------------------------


def range_assign(
    subscriptions: Mapping[str, Subscription], partitions_per_topic: Mapping[str, int]
) -> dict[str, Assignment]:
    """Kafka's RangeAssignor: e.g. C0, C1 on t0, t1 of 3 partitions each get
    C0 [t0p0, t0p1, t1p0, t1p1] and C1 [t0p2, t1p2]."""
    order = _member_order(subscriptions)
    out: dict[str, list[TopicPartition]] = {m: [] for m in order}
    topics = {t for s in subscriptions.values() for t in s.topics if t in partitions_per_topic}
    for topic in sorted(topics):
        members = [m for m in order if topic in subscriptions[m].topics]
        per_member, extra = divmod(partitions_per_topic[topic], len(members))
        for i, m in enumerate(members):
            start = per_member * i + min(i, extra)
            length = per_member + (1 if i < extra else 0)
            out[m].extend(TopicPartition(topic, p) for p in range(start, start + length))
    return _result(out)


def roundrobin_assign(
    subscriptions: Mapping[str, Subscription], partitions_per_topic: Mapping[str, int]
) -> dict[str, Assignment]:
    """Kafka's RoundRobinAssignor: e.g. C0 on t0, C1 on t0+t1, C2 on t0+t1+t2 with 1, 2, 3
    partitions get C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0, t2p1, t2p2]."""
    order = _member_order(subscriptions)
    out: dict[str, list[TopicPartition]] = {m: [] for m in order}
    if not order:
        return {}
    topics = {t for s in subscriptions.values() for t in s.topics if t in partitions_per_topic}
    turn = 0
    for topic in sorted(topics):
        for p in range(partitions_per_topic[topic]):
            while topic not in subscriptions[order[turn % len(order)]].topics:
                turn += 1
            out[order[turn % len(order)]].append(TopicPartition(topic, p))
            turn += 1
    return _result(out)


# -- cooperative-sticky ------------------------------------------------------------------


def cooperative_sticky_assign(
    subscriptions: Mapping[str, Subscription], partitions_per_topic: Mapping[str, int]
) -> dict[str, Assignment]:
    """Balanced, sticky and incremental; see the module docstring.

    Only members of the highest generation any member reports count as previous owners
    (an older claim is stale: that member was fenced and lost its partitions, as in Kafka).
    A partition two such members both claim is contested: it goes to nobody this round.
    """
    order = _member_order(subscriptions)
    topics_of = {
        m: {t for t in subscriptions[m].topics if t in partitions_per_topic} for m in order
    }
    subscribers = {
        t: [m for m in order if t in topics_of[m]] for t in set().union(*topics_of.values())
    }
    partitions = sorted(
        TopicPartition(t, p) for t in subscribers for p in range(partitions_per_topic[t])
    )
    claims = _current_claims(subscriptions, partitions_per_topic)
    previous = {
        tp: next(iter(owners))
        for tp, owners in claims.items()
        if len(owners) == 1 and tp.topic in topics_of[next(iter(owners))]
    }
    if len({frozenset(ts) for ts in topics_of.values()}) <= 1:
        target = _constrained_assign(order, partitions, previous)
    else:
        target = _general_assign(order, subscribers, partitions, previous)
    # KIP-429: hand out a partition only once nobody else still owns it.
    return _result(
        {m: [tp for tp in tps if claims.get(tp, {m}) == {m}] for m, tps in target.items()}
    )


def _current_claims(
    subscriptions: Mapping[str, Subscription], partitions_per_topic: Mapping[str, int]
) -> dict[TopicPartition, set[str]]:
    newest = max((s.generation for s in subscriptions.values()), default=-1)
    claims: dict[TopicPartition, set[str]] = defaultdict(set)
    for m, sub in subscriptions.items():
        if sub.generation != newest:
            continue
        for tp in sub.owned_partitions:
            if 0 <= tp.partition < partitions_per_topic.get(tp.topic, 0):
                claims[tp].add(m)
    return claims


def _constrained_assign(
    order: list[str], partitions: list[TopicPartition], previous: Mapping[TopicPartition, str]
) -> dict[str, list[TopicPartition]]:
    """Every member subscribes to the same topics: sizes are ``n // members`` or one more,
    and each member keeps as many of its partitions as that allows (Kafka's
    constrainedAssign), which is the most any balanced assignment can keep."""
    out: dict[str, list[TopicPartition]] = {m: [] for m in order}
    if not order:
        return out
    min_quota, extra_slots = divmod(len(partitions), len(order))
    owned: dict[str, list[TopicPartition]] = defaultdict(list)
    for tp, m in previous.items():
        owned[m].append(tp)
    for m in order:
        mine = sorted(owned[m])
        if len(mine) > min_quota and extra_slots > 0:
            keep = mine[: min_quota + 1]
            extra_slots -= 1
        else:
            keep = mine[:min_quota]
        out[m] = keep
    taken = {tp for tps in out.values() for tp in tps}
    free = iter([tp for tp in partitions if tp not in taken])
    for m in order:
        while len(out[m]) < min_quota:
            out[m].append(next(free))
    for m in order:
        if extra_slots == 0:
            break
        if len(out[m]) == min_quota:
            out[m].append(next(free))
            extra_slots -= 1
    return out


def _general_assign(
    order: list[str],
    subscribers: Mapping[str, list[str]],
    partitions: list[TopicPartition],
    previous: Mapping[TopicPartition, str],
) -> dict[str, list[TopicPartition]]:
    """Subscriptions differ: keep previous owners, give each free partition to its
    least-loaded subscriber (topics with the fewest subscribers first), then move
    partitions one at a time from a member to a subscriber with at least two fewer until no
    such move exists (each move lowers the sum of squared sizes, so this ends). Moves
    prefer partitions the member did not own before."""
    rank = {m: i for i, m in enumerate(order)}
    out: dict[str, set[TopicPartition]] = {m: set() for m in order}
    for tp, m in previous.items():
        out[m].add(tp)
    free: dict[str, list[TopicPartition]] = defaultdict(list)
    for tp in partitions:
        if tp not in previous:
            free[tp.topic].append(tp)
    for topic in sorted(free, key=lambda t: (len(subscribers[t]), t)):
        # sizes change only through this loop while the topic is dealt: a heap stays exact
        heap = [(len(out[m]), rank[m], m) for m in subscribers[topic]]
        heapq.heapify(heap)
        for tp in free[topic]:
            size, r, m = heapq.heappop(heap)
            out[m].add(tp)
            heapq.heappush(heap, (size + 1, r, m))
    while (move := _balancing_move(order, rank, subscribers, previous, out)) is not None:
        tp, src, dst = move
        out[src].remove(tp)
        out[dst].add(tp)
    return {m: sorted(tps) for m, tps in out.items()}


def _balancing_move(
    order: list[str],
    rank: Mapping[str, int],
    subscribers: Mapping[str, list[str]],
    previous: Mapping[TopicPartition, str],
    out: Mapping[str, set[TopicPartition]],
) -> tuple[TopicPartition, str, str] | None:
    for src in sorted(order, key=lambda m: (-len(out[m]), rank[m])):
        limit = len(out[src]) - 2
        for topic in sorted({tp.topic for tp in out[src]}):
            dst = min(subscribers[topic], key=lambda m: (len(out[m]), rank[m]))
            if len(out[dst]) <= limit:
                mine = [tp for tp in out[src] if tp.topic == topic]
                return min(mine, key=lambda tp: (previous.get(tp) == src, tp)), src, dst
    return None


RANGE = Assignor("range", range_assign, (RebalanceProtocol.EAGER,))
ROUNDROBIN = Assignor("roundrobin", roundrobin_assign, (RebalanceProtocol.EAGER,))
COOPERATIVE_STICKY = Assignor(
    "cooperative-sticky",
    cooperative_sticky_assign,
    (RebalanceProtocol.COOPERATIVE, RebalanceProtocol.EAGER),
)
ASSIGNORS: Mapping[str, Assignor] = {a.name: a for a in (RANGE, ROUNDROBIN, COOPERATIVE_STICKY)}


# -- wire encoding (the format is proto/consumer_protocol.py's) ---------------------------


def encode_subscription(sub: Subscription) -> bytes:
    wire = cp.ConsumerProtocolSubscription(
        sub.topics, sub.owned_partitions, sub.user_data, sub.generation
    )
    return cp.encode_subscription(wire)


def decode_subscription(data: bytes, group_instance_id: str | None = None) -> Subscription:
    wire = cp.decode_subscription(data)
    owned = tuple(TopicPartition(t, p) for t, p in wire.owned_partitions)
    return Subscription(wire.topics, owned, wire.user_data, wire.generation, group_instance_id)


def encode_assignment(assignment: Assignment) -> bytes:
    return cp.encode_assignment(
        cp.ConsumerProtocolAssignment(assignment.partitions, assignment.user_data)
    )


def decode_assignment(data: bytes) -> Assignment:
    """An empty assignment may arrive as no bytes at all (the coordinator fills members
    the leader left out with empty bytes)."""
    wire = cp.decode_assignment(data)
    return Assignment(tuple(TopicPartition(t, p) for t, p in wire.partitions), wire.user_data)
