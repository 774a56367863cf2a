"""What a consumer asks of its group, read from its JoinGroup metadata (sans-IO).

The coordinator treats protocol metadata as opaque, with one exception: a static member
restarting (KIP-345). A cooperative consumer's metadata says what it asks for (topics,
user data) and what it holds (owned partitions, generation). A restarted process holds
nothing, so its metadata differs in bytes from its predecessor's even when it asks for
exactly the same; comparing bytes would rebalance on every restart, which static
membership exists to avoid. For protocol type "consumer" the coordinator therefore
compares what is asked for and ignores what is held. Anything else, or metadata that is
not a consumer subscription, is compared byte for byte.

Only ``Group._replace_static_member`` uses this. A *known* member's rejoin keeps Kafka's
byte comparison: a cooperative follower that gave up partitions (KIP-429) rejoins with
the same topics and fewer owned partitions, and that change is what starts the follow-up
rebalance handing those partitions to their new owner.
"""

from __future__ import annotations

from broker.group.members import Protocols
from proto.consumer_protocol import (
    CONSUMER_PROTOCOL_TYPE,
    ConsumerProtocolSubscription,
    decode_assignment,
    decode_subscription,
)
from proto.errors import RemoteProtocolError

__all__ = ["owes_follow_up_rejoin", "same_subscriptions"]


def _subscription(metadata: bytes) -> ConsumerProtocolSubscription | None:
    try:
        return decode_subscription(metadata)
    except RemoteProtocolError:
        return None


def _same_request(old: bytes, new: bytes) -> bool:
    if old == new:
        return True
    a, b = _subscription(old), _subscription(new)
    if a is None or b is None:
        return False
    return set(a.topics) == set(b.topics) and a.user_data == b.user_data


def same_subscriptions(protocol_type: str, old: Protocols, new: Protocols) -> bool:
    """Whether ``new`` asks for what ``old`` asked for: the same protocol names in the same
    order and, per protocol, the same metadata; for "consumer", the same topics (as a set)
    and user data, whatever the owned partitions and generation."""
    if protocol_type != CONSUMER_PROTOCOL_TYPE:
        return old == new
    if [name for name, _ in old] != [name for name, _ in new]:
        return False
    return all(_same_request(a, b) for (_, a), (_, b) in zip(old, new, strict=True))


def owes_follow_up_rejoin(protocol_type: str, metadata: bytes, assignment: bytes | None) -> bool:
    """Whether a member joined the current generation owning partitions its assignment
    took away (KIP-429): it was to revoke them and rejoin, which starts the rebalance that
    hands them to their new owner. A restarted process owns nothing, sees nothing revoked
    and would never rejoin, so its restart must start that rebalance itself.

    ``metadata`` is what the member sent for the group's protocol. Not a consumer
    subscription, or one owning nothing: False. An assignment that does not decode while
    partitions were owned: True (a rebalance is the safe answer).
    """
    if protocol_type != CONSUMER_PROTOCOL_TYPE:
        return False
    sub = _subscription(metadata)
    if sub is None or not sub.owned_partitions:
        return False
    try:
        assigned = set(decode_assignment(assignment or b"").partitions)
    except RemoteProtocolError:
        return True
    return not set(sub.owned_partitions) <= assigned
