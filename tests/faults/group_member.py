"""One consumer-group member of the group fault tests, as a process or as a thread.

The member subscribes with a ``group_id``, polls, and after each poll commits exactly what
that poll returned (``{tp: last offset + 1}``) synchronously, with auto commit off: the
at-least-once loop of docs/consumer.md. Everything it does is written as one JSON line
per step, flushed as it happens, so that a member killed with SIGKILL leaves a log that is
true up to its last completed line:

- ``assigned`` / ``revoked`` / ``lost``: the listener's callbacks (``partitions``);
- ``poll``: ``invoked``/``completed`` and ``records`` ``{partition: [[offset, value]]}``;
- ``commit_begin``: the offsets about to be committed (its outcome may never be written:
  a commit the broker acknowledged just before a kill -9);
- ``commit``: acknowledged, written only after ``commit()`` returned;
- ``commit_failed``: ``refused`` (``CommitFailedError``, ``RebalanceInProgressError``:
  certainly not stored) or not (a timeout: maybe stored); the records of that poll may be
  read again by whoever owns the partition next.

Times are ``time.monotonic()``, which is one clock for every process of the machine
(CLOCK_MONOTONIC), so the test compares them with its own.

``MemberThread`` runs the same loop on a thread of the test process, logging to memory.
Run as ``python -m tests.faults.group_member --bootstrap ... --topic T --group G --out F``;
SIGTERM ends the loop and closes the consumer (LeaveGroup), SIGKILL is the fault.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from client import Consumer, ConsumerRebalanceListener, TopicPartition
from client.errors import (
    ClientError,
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from proto.errors import MinibrokerError

# A commit failed with one of these was certainly not stored; any other failure (a
# timeout, a lost connection) may have been.
REFUSED = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)

Sink = Callable[[dict[str, Any]], None]

MEMBER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 500,
    "fetch_max_wait_ms": 100,
    "retry_backoff_ms": 100,
    "request_timeout_ms": 10_000,
    "max_poll_records": 200,
}


def file_sink(out: IO[str]) -> Sink:
    """One JSON line per entry, flushed at once (a kill -9 loses at most the line being
    written, which the reader drops as incomplete)."""
    lock = threading.Lock()

    def write(entry: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            out.flush()

    return write


class _Recorder(ConsumerRebalanceListener):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def _note(self, kind: str, parts: set[TopicPartition]) -> None:
        self._sink(
            {"e": kind, "at": time.monotonic(), "partitions": sorted(tp.partition for tp in parts)}
        )

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._note("assigned", assigned)

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._note("revoked", revoked)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._note("lost", lost)


def run_member(
    sink: Sink,
    stop: threading.Event,
    bootstrap: str,
    topic: str,
    group: str,
    processing_ms: int = 0,
    **config: Any,
) -> None:
    """Poll, "process" each batch for ``processing_ms``, commit it; until ``stop`` is set,
    then close (leave the group). The processing time is where a kill lands most often,
    leaving polled records uncommitted, as a crash of a real application would."""
    settings = {**MEMBER_DEFAULTS, **config}
    consumer = Consumer(bootstrap_servers=bootstrap, group_id=group, **settings)
    try:
        consumer.subscribe([topic], listener=_Recorder(sink))
        sink({"e": "start", "at": time.monotonic()})
        while not stop.is_set():
            invoked = time.monotonic()
            try:
                batch = consumer.poll(timeout_ms=200)
            except (ClientError, MinibrokerError) as exc:
                sink({"e": "poll_failed", "at": time.monotonic(), "error": repr(exc)})
                continue
            if not batch:
                continue
            records = {
                str(tp.partition): [[r.offset, r.value.decode()] for r in recs]
                for tp, recs in batch.items()
            }
            sink(
                {"e": "poll", "invoked": invoked, "completed": time.monotonic(), "records": records}
            )
            time.sleep(processing_ms / 1000)  # the application at work
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
            wire = {str(tp.partition): o for tp, o in offsets.items()}
            begun = time.monotonic()
            sink({"e": "commit_begin", "at": begun, "offsets": wire})
            try:
                consumer.commit(offsets)
            except (ClientError, MinibrokerError) as exc:
                failed = {"e": "commit_failed", "at": time.monotonic(), "error": repr(exc)}
                sink({**failed, "refused": isinstance(exc, REFUSED)})
                continue
            sink({"e": "commit", "invoked": begun, "completed": time.monotonic(), "offsets": wire})
    finally:
        consumer.close()
        sink({"e": "closed", "at": time.monotonic()})


@dataclass
class MemberThread:
    """A member in this process: ``run_member`` on a thread, logging to memory."""

    process: int
    bootstrap: str
    topic: str
    group: str
    config: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _crash: BaseException | None = None

    def start(self) -> MemberThread:
        self._thread = threading.Thread(target=self._run, name=f"member-{self.process}")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            run_member(
                self.entries.append,
                self._stop,
                self.bootstrap,
                self.topic,
                self.group,
                **self.config,
            )
        except BaseException as exc:
            self._crash = exc
            raise

    def snapshot(self) -> list[dict[str, Any]]:
        """What it logged so far (``MemberLog(process, snapshot())`` reads it)."""
        return list(self.entries)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), f"member {self.process} did not close in 30 s"
        if self._crash is not None:
            raise RuntimeError(f"member {self.process} crashed") from self._crash


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--strategy", default="range")
    parser.add_argument("--session-timeout-ms", type=int, default=3_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=500)
    parser.add_argument("--processing-ms", type=int, default=0)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with open(args.out, "a", encoding="utf-8") as out:
        run_member(
            file_sink(out),
            stop,
            args.bootstrap,
            args.topic,
            args.group,
            args.processing_ms,
            partition_assignment_strategy=args.strategy,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        )


if __name__ == "__main__":
    main()
