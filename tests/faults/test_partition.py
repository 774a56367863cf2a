"""The partition leader cut off by the network (proxies), under acks=all load, then healed.

- ``reset``: every link of the leader (clients, followers, the three coordinator members)
  is reset and stays refused: everyone notices at once.
- ``stall``: the same links go silent; what was sent meanwhile is delivered late on heal
  (stale produce and fetch requests reach the old leader when it comes back).
- ``coordinator-only``: only its links to the ensemble go silent. Clients still reach it and
  it still believes it leads, so it keeps taking produce requests it can never commit: the
  followers have moved to the new leader. This is the partition Jepsen used against Kafka.

In each case its session expires, the controller elects an ISR member in the next epoch,
the producer carries on there; on heal the old leader learns it was deposed, truncates what
it appended alone and follows. The history must check clean (duplicates tolerated for now)
and the three replicas must end byte-identical.
"""

from __future__ import annotations

import pytest

from tests.faults.scenario import leader_fault
from tests.faults.workload import create_topic
from tests.integration.cluster import LocalCluster

TOPIC = "partitioned"


@pytest.mark.parametrize(
    ("stall", "coordinator_only"),
    [(False, False), (True, False), (True, True)],
    ids=["reset", "stall", "coordinator-only"],
)
def test_partitioned_leader_is_replaced_fenced_and_rejoins(
    proxied_cluster: LocalCluster, stall: bool, coordinator_only: bool
) -> None:
    cluster = proxied_cluster
    create_topic(cluster, TOPIC)
    outcome = leader_fault(
        cluster,
        TOPIC,
        lambda b: cluster.isolate_broker(b, stall=stall, coordinator_only=coordinator_only),
        cluster.heal_broker,
    )
    # It learnt of its deposition only through the ensemble, after the heal.
    events = cluster.brokers[outcome.leader].events("coordinator_session")
    assert any(e["state"] == "LOST" for e in events), cluster.brokers[outcome.leader].tail(60)
