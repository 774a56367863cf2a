"""What the chaos run asks the cluster, through the public client only: create the topic,
who leads what, whether every ISR is full again, and the final read from offset 0.

Every question is retried through faults (a broker down, paused or cut off makes a single
request fail) until its own deadline; answers come from broker metadata, which a broker
that was cut off may serve stale for a moment, so "recovered" must hold on two reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from chaos.errors import ChaosConfigError, ChaosRunError
from chaos.history import QueueHistory
from client import Admin, Consumer, NewTopic, TopicPartition
from client.errors import ClientError, MinibrokerError, TopicAlreadyExistsError
from client.types import ConsumerRecord

__all__ = ["MIN_INSYNC", "REPLICAS", "ClusterView"]

REPLICAS = 3
MIN_INSYNC = 2
T = TypeVar("T")


class ClusterView:
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.admin = Admin(bootstrap_servers=bootstrap, request_timeout_ms=5_000)

    def close(self) -> None:
        self.admin.close()

    def _retry(self, what: str, call: Callable[[], T], timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return call()
            except TopicAlreadyExistsError:
                raise
            except (ClientError, MinibrokerError) as exc:
                if time.monotonic() > deadline:
                    raise ChaosRunError(f"{what}: {exc}") from exc
                time.sleep(0.2)  # between retries of a request a fault made fail

    def create_topic(self, timeout_s: float = 60.0) -> None:
        """RF 3, min.insync.replicas 2, a fresh topic (old records would be values the
        history never sent); returns once every partition has a full ISR."""
        brokers = self._retry("describe cluster", self.admin.describe_cluster, timeout_s).brokers
        if len(brokers) < REPLICAS:
            raise ChaosConfigError(
                f"chaos needs {REPLICAS} brokers, the cluster has {len(brokers)}"
            )
        topic = NewTopic(
            self.topic, self.partitions, REPLICAS, {"min.insync.replicas": str(MIN_INSYNC)}
        )
        try:
            self._retry("create topic", lambda: self.admin.create_topics([topic]), timeout_s)
        except TopicAlreadyExistsError:
            raise ChaosConfigError(
                f"topic {self.topic!r} exists; chaos needs a fresh one (leave --topic out for "
                "a new name per run)"
            ) from None
        if self.wait_recovered(timeout_s) is None:
            raise ChaosRunError(f"{self.topic}: ISRs not full {timeout_s} s after creation")

    def leaders(self) -> dict[int, int]:
        """partition -> leader (-1: none), as the brokers' metadata says now."""
        [desc] = self._retry("describe topic", lambda: self.admin.describe_topics([self.topic]), 30)
        return {p.partition: p.leader for p in desc.partitions}

    def isr_full(self) -> bool:
        try:
            [desc] = self.admin.describe_topics([self.topic])
        except (ClientError, MinibrokerError):
            return False
        return len(desc.partitions) == self.partitions and all(
            p.leader >= 0 and sorted(p.isr) == sorted(p.replicas) for p in desc.partitions
        )

    def wait_recovered(self, timeout_s: float) -> float | None:
        """Seconds until every partition has a leader and a full ISR on two reads in a row
        (None if not within ``timeout_s``)."""
        started = time.monotonic()
        streak = 0
        while time.monotonic() - started < timeout_s:
            streak = streak + 1 if self.isr_full() else 0
            if streak >= 2:
                return time.monotonic() - started
            time.sleep(0.25)  # polling another process's state: no event to wait on
        return None

    def final_read(
        self, history: QueueHistory, process: int, timeout_s: float = 120.0
    ) -> dict[int, int]:
        """Every partition from offset 0 up to an end offset that held still across two
        looks, recorded as the history's final read; returns partition -> end offset."""
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        got: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in tps}
        invoked = history.clock()
        deadline = time.monotonic() + timeout_s

        def position(tp: TopicPartition) -> int:
            return got[tp][-1].offset + 1 if got[tp] else 0

        with Consumer(bootstrap_servers=self.bootstrap, auto_offset_reset="none") as c:
            c.assign(tps)
            for tp in tps:
                c.seek(tp, 0)
            end: dict[TopicPartition, int] = {}
            while True:
                latest = self._retry("end offsets", lambda: c.end_offsets(tps), timeout_s)
                if latest == end and all(position(tp) >= end[tp] for tp in tps):
                    break
                end = latest
                while any(position(tp) < end[tp] for tp in tps):
                    if time.monotonic() > deadline:
                        raise ChaosRunError(
                            f"final read stuck: at {[position(tp) for tp in tps]}, end {end}"
                        )
                    try:
                        batch = c.poll(timeout_ms=500, max_records=50_000)
                    except (ClientError, MinibrokerError):
                        continue  # a leader still moving: poll again
                    for tp, records in batch.items():
                        got[tp] += records
                time.sleep(0.5)  # the end offset must hold still across a look
        history.final_read(process, invoked, {(tp.topic, tp.partition): got[tp] for tp in tps})
        return {tp.partition: end[tp] for tp in tps}
