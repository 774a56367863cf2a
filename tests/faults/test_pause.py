"""The partition leader frozen (SIGSTOP) beyond its coordinator session, under acks=all load.

While it is frozen its session expires, the controller elects an ISR member in the next
leader epoch and the producers carry on there. When it is continued (SIGCONT) it still
believes it leads, and the requests that queued in its sockets during the pause are
handled: it may append produced records, but it must not acknowledge them (nobody fetches
from it any more, so its high watermark cannot pass them). Once it learns it was deposed it
truncates that divergent tail (OffsetForLeaderEpoch) and follows the new leader back into
the ISR. The history must check clean and the three replicas must end byte-identical.

``hold-coordinator``: its links to the ensemble stay stalled for a few seconds after
SIGCONT, so it acts on its stale belief for that long (deterministically, instead of racing
its own session-loss handling) before it can learn anything.
"""

from __future__ import annotations

import socket
import time

import pytest

from client import Producer
from proto import messages as m
from proto.connection import ClientConnection
from tests.faults.known_bugs import (
    leadership_regressions,
)
from tests.faults.scenario import leader_fault
from tests.faults.workload import PRODUCER_CONFIG, create_topic
from tests.integration.cluster import LocalCluster

TOPIC = "paused"
HOLD_AFTER_RESUME_S = 3.0


@pytest.mark.parametrize("hold_coordinator", [False, True], ids=["plain", "hold-coordinator"])
def test_paused_leader_is_fenced_then_truncates_and_follows(
    proxied_cluster: LocalCluster, hold_coordinator: bool
) -> None:
    cluster = proxied_cluster
    create_topic(cluster, TOPIC)

    def pause(leader: int) -> None:
        cluster.pause_broker(leader)
        if hold_coordinator:
            cluster.isolate_broker(leader, stall=True, coordinator_only=True)

    def resume(leader: int) -> None:
        cluster.resume_broker(leader)
        if hold_coordinator:
            # Continued but unable to learn it was deposed: stale requests reach it.
            time.sleep(HOLD_AFTER_RESUME_S)  # the fault's length, not a wait for a condition
            cluster.heal_broker(leader)

    outcome = leader_fault(cluster, TOPIC, pause, resume)
    if hold_coordinator:
        # What it appended after SIGCONT was never committed: it must have cut it.
        truncations = cluster.brokers[outcome.leader].events("follower_truncating")
        assert truncations, cluster.brokers[outcome.leader].tail(80)


def test_stale_long_poll_fetch_does_not_reinstate_a_deposed_leader(
    proxied_cluster: LocalCluster,
) -> None:
    """The deterministic reproduction: a consumer fetch long-polls the frozen-then-continued
    leader while it cannot reach the ensemble; then its session is replaced and it learns
    it was deposed. The waiting fetch must not make it leader again."""
    cluster = proxied_cluster
    [leader] = create_topic(cluster, TOPIC)
    cluster.pause_broker(leader)
    cluster.isolate_broker(leader, stall=True, coordinator_only=True)
    moved = cluster.wait_partition_state(
        TOPIC, 0, lambda s: s.leader not in (leader, -1), what="a new leader"
    )
    cluster.resume_broker(leader)
    lines_before = len(cluster.brokers[leader].lines)
    # Straight to its listener: it still believes it leads, so the fetch waits (min_bytes
    # can never be met) in the handler of its old, expired session.
    conn = ClientConnection()
    fetch = m.FetchRequest(
        max_wait_ms=15_000,
        min_bytes=2**31 - 1,
        max_bytes=1 << 20,
        topics=[m.FetchTopic(TOPIC, [m.FetchPartition(0, 0, 1 << 20)])],
    )
    with socket.create_connection(("127.0.0.1", cluster.broker_ports[leader]), 10) as s:
        s.settimeout(30)
        s.sendall(conn.send_request(fetch)[1])
        cluster.heal_broker(leader)  # it learns: session expired, a new view, follower
        cluster.brokers[leader].wait_for_event("became_follower", after=lines_before)
        while (event := conn.next_event()) is None:
            data = s.recv(1 << 20)
            assert data, "the broker closed the connection"
            conn.receive_data(data)
    # The fetch has woken and answered: whatever it did to the roles is done.
    assert not leadership_regressions(cluster)
    back = cluster.wait_isr_full(TOPIC, 0, 3)
    assert back.leader_epoch >= moved.leader_epoch
    assert isinstance(event.response, m.FetchResponse)


def test_client_fails_over_when_its_metadata_broker_is_frozen(
    ensemble_cluster: LocalCluster,
) -> None:
    """The producer's only connection is to the leader (first in its bootstrap); the leader
    freezes and is replaced. The next send must reach the new leader in seconds: a frozen
    broker accepts bytes and never answers, so the client must give up on it after a
    request timeout (and disconnect, as Kafka's NetworkClient) instead of sending every
    metadata refresh there."""
    cluster = ensemble_cluster
    [leader] = create_topic(cluster, TOPIC)
    config = {**PRODUCER_CONFIG, "delivery_timeout_ms": 20_000}
    first = f"127.0.0.1:{cluster.advertised_port(leader)}"
    with Producer(bootstrap_servers=first, **config) as producer:
        producer.send(TOPIC, value=b"before").get(timeout=30)
        cluster.pause_broker(leader)
        cluster.wait_partition_state(
            TOPIC, 0, lambda s: s.leader not in (leader, -1), what="a new leader"
        )
        md = producer.send(TOPIC, value=b"after").get(timeout=30)
    assert md.offset >= 1
