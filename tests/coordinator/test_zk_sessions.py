"""Session tracker and watch table, synchronously: time is an argument."""

from __future__ import annotations

from coordinator.sessions import SessionTracker, first_session_id
from coordinator.watches import WatchManager
from proto.zk import EventType


def test_negotiate_clamps_to_tick_bounds() -> None:
    tracker = SessionTracker(min_timeout_ms=4000, max_timeout_ms=40000)
    assert tracker.negotiate(100) == 4000
    assert tracker.negotiate(10_000) == 10_000
    assert tracker.negotiate(10**9) == 40000


def test_expiry_and_touch() -> None:
    tracker = SessionTracker(4000, 40000)
    tracker.add(1, 6000, now_ms=0)
    tracker.add(2, 4000, now_ms=0)
    assert tracker.next_deadline_ms() == 4000
    assert tracker.expired(3999) == []
    assert tracker.touch(2, 3000)
    assert tracker.expired(6000) == [1]
    assert tracker.expired(6500) == []  # reported once
    assert not tracker.is_live(1) and not tracker.touch(1, 6500)
    assert tracker.next_deadline_ms() == 7000
    assert tracker.expired(7000) == [2]
    tracker.remove(1)
    assert 1 not in tracker and 2 in tracker


def test_session_ids_carry_the_server_id() -> None:
    sid = first_session_id(5, 1_700_000_000_000)
    assert sid >> 56 == 5
    assert first_session_id(5, 1_700_000_000_001) > sid


def test_watches_are_one_shot_and_by_kind() -> None:
    w = WatchManager()
    w.add_data_watch("/a", 1)
    w.add_data_watch("/a", 2)
    w.add_child_watch("/a", 2)
    w.add_child_watch("/a", 3)
    assert w.trigger("/a", EventType.CHILD) == [2, 3]
    assert w.trigger("/a", EventType.CHILD) == []
    assert w.trigger("/a", EventType.CHANGED) == [1, 2]
    assert w.count == 0
    w.add_data_watch("/b", 1)
    w.add_child_watch("/b", 1)
    assert w.trigger("/b", EventType.DELETED) == [1]  # once, though it had two watches
    w.add_data_watch("/c", 4)
    w.add_child_watch("/d", 4)
    w.remove_watcher(4)
    assert w.trigger("/c", EventType.CREATED) == [] and w.trigger("/d", EventType.DELETED) == []
    assert w.count == 0
