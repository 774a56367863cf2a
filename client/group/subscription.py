"""What the consumer reads: subscribed topics, a pattern, or partitions it assigned itself.

Kafka's SubscriptionState rules, sans-IO: the three kinds are mutually exclusive (switch
only through ``unsubscribe()``); a pattern is matched in full (``re.fullmatch``, as
Java's ``Matcher.matches``) against the cluster's non-internal topics, and the matched
set is what the member subscribes to in JoinGroup.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from client.errors import ConfigurationError, IllegalStateError

__all__ = ["SubscriptionState", "SubscriptionType"]

_EXCLUSIVE = (
    "subscription to topics, to a pattern and manual assignment are mutually exclusive: "
    "call unsubscribe() first"
)


class SubscriptionType(enum.Enum):
    NONE = "none"
    AUTO_TOPICS = "auto_topics"  # subscribe(topics): the group assigns partitions
    AUTO_PATTERN = "auto_pattern"  # subscribe(pattern=...): topics matched, then as above
    USER_ASSIGNED = "user_assigned"  # assign(): no group membership, commits only


class SubscriptionState:
    def __init__(self) -> None:
        self.type = SubscriptionType.NONE
        self.topics: frozenset[str] = frozenset()
        self.pattern: re.Pattern[str] | None = None
        self.listener: object | None = None

    @property
    def auto(self) -> bool:
        """True when the group assigns the partitions (subscribe), not the application."""
        return self.type in (SubscriptionType.AUTO_TOPICS, SubscriptionType.AUTO_PATTERN)

    def _set_type(self, kind: SubscriptionType) -> None:
        if self.type not in (SubscriptionType.NONE, kind):
            raise IllegalStateError(_EXCLUSIVE)
        self.type = kind

    def subscribe_topics(self, topics: Iterable[str], listener: object | None) -> bool:
        """True if the topic set changed (the member must rejoin)."""
        names = frozenset(topics)
        for t in names:
            if type(t) is not str or not t:
                raise ConfigurationError(f"topic names must be non-empty str, not {t!r}")
        if not names:
            raise ConfigurationError(
                "subscribe() needs at least one topic or a pattern (unsubscribe() to stop)"
            )
        self._set_type(SubscriptionType.AUTO_TOPICS)
        changed = names != self.topics
        self.topics = names
        self.listener = listener
        return changed

    def subscribe_pattern(self, pattern: str | re.Pattern[str], listener: object | None) -> None:
        if isinstance(pattern, str):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(f"pattern {pattern!r} is not a regex: {exc}") from exc
        elif isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
            compiled = pattern
        else:
            raise ConfigurationError(f"pattern must be a str or re.Pattern, not {pattern!r}")
        self._set_type(SubscriptionType.AUTO_PATTERN)
        if self.pattern is None or self.pattern.pattern != compiled.pattern:
            self.topics = frozenset()  # matched afresh before the next JoinGroup
        self.pattern = compiled
        self.listener = listener

    def match(self, topics: Iterable[tuple[str, bool]]) -> bool:
        """Match the pattern against ``(name, is_internal)`` pairs; True if the matched
        set changed."""
        assert self.pattern is not None
        matched = frozenset(
            name for name, internal in topics if not internal and self.pattern.fullmatch(name)
        )
        changed = matched != self.topics
        self.topics = matched
        return changed

    def assign_manually(self) -> None:
        self._set_type(SubscriptionType.USER_ASSIGNED)

    def unsubscribe(self) -> None:
        self.type = SubscriptionType.NONE
        self.topics = frozenset()
        self.pattern = None
        self.listener = None
