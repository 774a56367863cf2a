"""What an order event is, and the settings the example's three scripts share.

An order goes through ``created``, ``paid`` and ``shipped``, in that order. Each event is a
record whose key is the order id: the default partitioner sends every event of one order to
the same partition, and a partition has one owner in the group at a time, so the events of
one order are handled in the order they were produced whichever worker handles them.

A value that is not an order event raises ``BadEventError``: the worker sets it aside
(a "poison" record must not stop the partition behind it) and ``check.py`` accounts for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from client import Admin, NewTopic
from client.errors import (
    LeaderNotAvailableError,
    TimeoutExpiredError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"  # what `make run` prints
DEFAULT_TOPIC = "order-events"
DEFAULT_GROUP = "order-processor"
DEFAULT_DB = "order_events.db"
DEFAULT_PARTITIONS = 6
STEPS = ("created", "paid", "shipped")


class BadEventError(ValueError):
    """A record that is not an order event (bad JSON, unknown step, key and order differ)."""


@dataclass(frozen=True, slots=True)
class OrderEvent:
    order_id: str
    seq: int  # position in STEPS: an order's events must be applied in seq order
    step: str

    def encode(self) -> bytes:
        return json.dumps({"order_id": self.order_id, "seq": self.seq, "step": self.step}).encode()

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> OrderEvent:
        try:
            obj: Any = json.loads(value or b"")
        except ValueError as exc:
            raise BadEventError(f"value is not JSON: {value!r:.80}") from exc
        if not isinstance(obj, dict):
            raise BadEventError(f"value is not a JSON object: {value!r:.80}")
        order_id, seq, step = obj.get("order_id"), obj.get("seq"), obj.get("step")
        if not isinstance(order_id, str) or not order_id:
            raise BadEventError(f"order_id missing or not a string: {value!r:.80}")
        if type(seq) is not int or not 0 <= seq < len(STEPS) or STEPS[seq] != step:
            raise BadEventError(f"seq {seq!r} and step {step!r} do not match {STEPS}")
        if key != order_id.encode():
            # The key decides the partition: an event filed under another key could be
            # handled by another worker concurrently with the rest of its order.
            raise BadEventError(f"key {key!r} is not the event's order id {order_id!r}")
        return cls(order_id, seq, step)


def order_id(n: int) -> str:
    return f"order-{n:05d}"


def add_common_args(parser: argparse.ArgumentParser, *, db: bool = True) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=DEFAULT_BOOTSTRAP,
        metavar="HOST:PORT[,HOST:PORT]",
        help=f"default: the `make run` cluster, {DEFAULT_BOOTSTRAP}",
    )
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"default: {DEFAULT_TOPIC}")
    if db:
        parser.add_argument(
            "--db",
            default=DEFAULT_DB,
            help=f"the application's SQLite database, shared by every worker "
            f"(default: ./{DEFAULT_DB})",
        )


def positive_int(text: str) -> int:
    """argparse type: an int > 0, with a message argparse prints as a usage error."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {n}")
    return n


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int, wait_s: float = 30) -> int:
    """Create ``topic`` if it does not exist (replication factor: min(3, brokers)), wait
    until every partition has a leader, and return its partition count.

    Both the producer and the workers call this, so any of them may start first. A worker
    must not subscribe before the topic exists: it would see the topic only at its next
    metadata refresh. Brokers learn of a new topic a moment after the controller creates
    it, hence the wait (a poll with a deadline: the metadata lives in other processes).
    """
    deadline = time.monotonic() + wait_s
    with Admin(bootstrap_servers=bootstrap_servers) as admin:
        brokers = len(admin.describe_cluster().brokers)
        # Already there: another script of the example, or an earlier run, created it.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, partitions, min(3, brokers))])
        while True:
            try:
                (description,) = admin.describe_topics([topic])
                if description.partitions and all(p.leader >= 0 for p in description.partitions):
                    return len(description.partitions)
            except (UnknownTopicOrPartitionError, LeaderNotAvailableError):
                pass  # not on this broker yet
            if time.monotonic() > deadline:
                raise TimeoutExpiredError(f"topic {topic!r} has no leaders after {wait_s} s")
            time.sleep(0.2)
