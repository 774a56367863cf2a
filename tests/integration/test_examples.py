"""examples/order_events run the way docs/scaling-out.md runs it: three identical workers in
one group, the producer, a worker killed with SIGKILL in the middle of the run, and
check.py comparing the database with the log. The workers' session timeout is short
(the brokers allow 500 ms here) so that the killed worker's partitions move quickly.

Everything is a separate process, as in the docs; progress is read from the example's
SQLite database (polled with a deadline, as any external process's state). A poison record
is thrown in too. The last test drives the store's deduplication and the event decoding
directly, without a cluster.
"""

from __future__ import annotations

import importlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from client import Producer
from tests.integration.cluster import LocalCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_events"
SETTINGS = {
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
}
ORDERS = 300
TOPIC = "order-events"
GROUP = "order-processor"


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLE / f"{name}.py"), *args]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """Poll ``predicate()`` until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def applied_by(db: Path) -> list[tuple[str, int, int]]:
    """(worker, partition, offset) of every applied event, in the order applied."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            rows = conn.execute(
                "SELECT worker, partition_id, record_offset FROM applied_events ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # a worker is still creating the schema
            return []
    return [(str(w), int(p), int(o)) for w, p, o in rows]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=2, settings=SETTINGS).start()
    try:
        yield c
    finally:
        c.stop()


def test_three_workers_lose_one_to_kill_9_and_every_event_is_applied_once(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    db = tmp_path / "order_events.db"
    common = ["--bootstrap-servers", cluster.bootstrap, "--topic", TOPIC]
    logs: dict[str, Path] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        logs[name] = tmp_path / f"{name}.out"
        with open(logs[name], "wb") as out:
            procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        return procs[name]

    def output() -> str:
        return "\n".join(f"--- {n}\n{p.read_text(errors='replace')}" for n, p in logs.items())

    try:
        for i in (1, 2, 3):
            name = f"worker-{i}"
            # worker-2, the one to be killed, commits only when a partition is revoked:
            # what it applied on the partitions it still owns at the kill is certain to
            # be redelivered (not a matter of when its last periodic commit ran), so the
            # store's deduplication is exercised on every run.
            interval = "60000" if name == "worker-2" else "500"
            start(
                name,
                example(
                    "worker",
                    *common,
                    *("--db", str(db), "--group", GROUP, "--name", name),
                    *("--session-timeout-ms", "1500", "--work-ms", "5"),
                    *("--commit-interval-ms", interval),
                ),
            )
        producer = start(
            "producer", example("producer", *common, "--orders", str(ORDERS), "--rate", "150")
        )

        # Kill worker-2 once it has applied a good part of its share, in mid-run.
        victim = procs["worker-2"]
        try:
            wait_until(
                "worker-2 applying 40 events",
                lambda: sum(w == "worker-2" for w, _p, _o in applied_by(db)) >= 40,
                timeout=40,
            )
        except TimeoutError:
            pytest.fail(f"worker-2 never got going\n{output()}")
        assert producer.poll() is None, "the producer finished before the kill: not mid-run"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = {(p, o) for w, p, o in applied_by(db) if w == "worker-2"}
        victim_partitions = {p for p, _o in killed_at}

        assert producer.wait(60) == 0, output()
        # A poison record: the workers must set it aside and carry on, and the check
        # account for it.
        with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as poison:
            poison.send(TOPIC, key=b"order-00000", value=b"not an order event").get(10)
        check = subprocess.run(
            example("check", *common, "--db", str(db), "--orders", str(ORDERS), "--wait-s", "30"),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=90,
        )
        assert check.returncode == 0, f"{check.stdout}{check.stderr}\n{output()}"
        assert f"applied exactly once: {ORDERS * 3}/{ORDERS * 3}" in check.stdout
        assert "1 records that are not events" in check.stdout, check.stdout
        skipped = re.search(r"redeliveries skipped by the store: (\d+)", check.stdout)
        assert skipped is not None and int(skipped[1]) > 0, check.stdout

        # The killed worker's partitions went on being processed, by the others.
        rows = applied_by(db)
        for partition in victim_partitions:
            last = max(o for p, o in killed_at if p == partition)
            later = {w for w, p, o in rows if p == partition and o > last}
            assert later and "worker-2" not in later, (partition, later, output())

        # A clean stop: SIGTERM, commit, leave the group, exit 0.
        for name in ("worker-1", "worker-3"):
            procs[name].send_signal(signal.SIGTERM)
        for name in ("worker-1", "worker-3"):
            assert procs[name].wait(30) == 0, output()
            assert "worker_stopped" in logs[name].read_text(), output()
        assert "event_rejected" in output()

        # The checker must be able to fail: a duplicated application is reported.
        broken = tmp_path / "broken.db"
        with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(broken)) as conn:
            src.backup(conn)
            conn.execute(
                "INSERT INTO applied_events (topic, partition_id, record_offset, order_id, seq,"
                " worker, applied_at) SELECT topic, partition_id, record_offset, order_id, seq,"
                " 'ghost', applied_at FROM applied_events ORDER BY id LIMIT 1"
            )
            conn.commit()
        bad = subprocess.run(
            example("check", *common, "--db", str(broken), "--wait-s", "0"),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "duplicate: partition" in bad.stdout
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def example_module(name: str) -> Any:
    """Import one of the example's modules (they import each other by bare name, as
    scripts run from their own directory do)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLE))


def test_the_store_applies_a_record_once_and_sets_aside_what_is_not_an_event(
    tmp_path: Path,
) -> None:
    orders = example_module("orders")
    store = example_module("order_store").OrderStore(tmp_path / "db", worker="w")
    created = orders.OrderEvent("order-00001", 0, "created")
    event = orders.OrderEvent.decode(b"order-00001", created.encode())
    assert event == created
    assert store.apply("t", 0, 5, event) is True
    assert store.apply("t", 0, 5, event) is False  # redelivered: nothing changes
    assert store.apply("t", 0, 4, event) is False  # below the partition's progress
    assert store.apply("t", 1, 5, event) is True  # another partition has its own progress
    snap = store.snapshot()
    assert [(a.partition, a.offset) for a in snap.applied] == [(0, 5), (1, 5)]
    assert snap.orders == {"order-00001": ("created", 2)}
    assert snap.skipped == {"w": 2}

    paid = {"order_id": "order-00001", "seq": 1, "step": "paid"}
    for key, value in [
        (b"order-00001", b"not json"),
        (b"order-00001", b"[1, 2]"),
        (b"order-00001", json.dumps({**paid, "seq": 2}).encode()),  # seq and step disagree
        (b"order-00001", json.dumps({**paid, "order_id": 7}).encode()),
        (b"order-00002", json.dumps(paid).encode()),  # filed under another order's key
        (None, None),
    ]:
        with pytest.raises(orders.BadEventError):
            orders.OrderEvent.decode(key, value)
    assert store.reject("t", 0, 6, "not an event") is True
    assert store.reject("t", 0, 6, "not an event") is False
    assert store.apply("t", 0, 6, event) is False  # the partition moved past it
    assert store.snapshot().rejected == [("t", 0, 6)]
    store.close()
