"""The futures a producer hands out: one ``ProduceResult`` per batch, shared by its records.

Every record of a batch shares one ``ProduceResult`` (Kafka's ProduceRequestResult); the
record's ``FutureRecordMetadata`` is a 3-tuple that only remembers the batch result, its
offset delta and its timestamp, so making one costs a tuple allocation. ``RecordFutures``
stands for the records of one ``send_many`` call. No I/O; completion happens in the
sender's (trio) thread, waiting in the application's.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, overload

import trio

from client.errors import TimeoutExpiredError
from client.types import RecordMetadata, TopicPartition

__all__ = ["FutureRecordMetadata", "ProduceResult", "RecordFutures"]

Callback = tuple[bool, Callable[..., Any], tuple[Any, ...], "FutureRecordMetadata"]


class ProduceResult:
    """The outcome of one batch, shared by the futures of all its records.

    Completed exactly once, in the sender's (trio) thread. A blocking producer waits on a
    ``threading.Event``, an async one on a ``trio.Event``; callbacks run in the sender.
    """

    __slots__ = (
        "_async_event",
        "_callbacks",
        "_lock",
        "_sync_event",
        "base_offset",
        "completed_at",
        "done",
        "error",
        "log_append_time",
        "tp",
    )

    def __init__(self, tp: TopicPartition, lock: threading.Lock, blocking: bool) -> None:
        self.tp = tp
        self.base_offset = -1
        self.log_append_time = -1
        self.error: BaseException | None = None
        self.done = False
        self.completed_at: float | None = None
        self._lock = lock
        self._callbacks: list[Callback] | None = []
        self._sync_event = threading.Event() if blocking else None
        self._async_event = None if blocking else trio.Event()

    def complete(
        self, base_offset: int, log_append_time: int = -1, error: BaseException | None = None
    ) -> None:
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.error = error
        self.completed_at = time.perf_counter()
        with self._lock:
            self.done = True
            callbacks, self._callbacks = self._callbacks, None
        if self._sync_event is not None:
            self._sync_event.set()
        if self._async_event is not None:
            self._async_event.set()
        for ok, fn, args, fut in callbacks or ():
            fut._run_callback(ok, fn, args)

    def add_callback(self, entry: Callback) -> bool:
        """Register; False if already done (the caller runs it now)."""
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(entry)
            return True

    def wait_blocking(self, timeout: float | None) -> bool:
        if self._sync_event is None:
            raise TypeError("this future belongs to an async producer: await it")
        return self._sync_event.wait(timeout)

    async def wait(self) -> None:
        if self._async_event is None:
            raise TypeError("this future belongs to a blocking producer: use .get()")
        await self._async_event.wait()


class FutureRecordMetadata(tuple[ProduceResult, int, int]):
    """The future ``send()`` returns: ``.get(timeout)`` (blocking) or ``await`` (async).

    A 3-tuple (batch result, offset delta, timestamp) underneath, so that making one per
    record costs a tuple allocation rather than a Python ``__init__`` call.
    """

    __slots__ = ()

    @property
    def is_done(self) -> bool:
        return self[0].done

    def succeeded(self) -> bool:
        return self[0].done and self[0].error is None

    def failed(self) -> bool:
        return self[0].done and self[0].error is not None

    @property
    def completed_at(self) -> float | None:
        """``time.perf_counter()`` when the batch was answered (latency measurement)."""
        return self[0].completed_at

    @property
    def exception(self) -> BaseException | None:
        return self[0].error if self[0].done else None

    @property
    def value(self) -> RecordMetadata | None:
        return self._value() if self.succeeded() else None

    def _value(self) -> RecordMetadata:
        r, delta, timestamp = self
        if r.error is not None:
            raise r.error
        offset = r.base_offset + delta if r.base_offset >= 0 else -1
        ts = r.log_append_time if r.log_append_time >= 0 else timestamp
        return RecordMetadata(r.tp.topic, r.tp.partition, offset, ts)

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Block until acknowledged (``timeout`` in seconds, like kafka-python)."""
        r = self[0]
        if not r.done and not r.wait_blocking(timeout):
            raise TimeoutExpiredError(f"record not acknowledged within {timeout} s")
        return self._value()

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if not self[0].done:
            yield from self[0].wait().__await__()
        return self._value()

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> FutureRecordMetadata:
        """``fn(*args, record_metadata)`` on success; runs in the sender thread."""
        if not self[0].add_callback((True, fn, args, self)):
            self._run_callback(True, fn, args)
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> FutureRecordMetadata:
        """``fn(*args, exception)`` on failure; runs in the sender thread."""
        if not self[0].add_callback((False, fn, args, self)):
            self._run_callback(False, fn, args)
        return self

    def _run_callback(self, ok: bool, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        err = self[0].error
        if ok and err is None:
            fn(*args, self._value())
        elif not ok and err is not None:
            fn(*args, err)

    def __repr__(self) -> str:
        r = self[0]
        state = "pending" if not r.done else ("failed" if r.error else "done")
        return f"<FutureRecordMetadata {r.tp.topic}-{r.tp.partition} +{self[1]} {state}>"


_new_future = tuple.__new__


class RecordFutures(Sequence[FutureRecordMetadata]):
    """The futures of one ``send_many`` call, in order, made on demand.

    Holds one entry per batch the records went into, so a million records cost a few
    thousand objects until someone indexes or iterates.
    """

    __slots__ = ("_count", "_firsts", "_segments", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._segments: list[tuple[ProduceResult, int]] = []
        self._firsts: list[int] = []
        self._count = 0

    def add(self, result: ProduceResult, first_delta: int, count: int, timestamp: int) -> None:
        self._starts.append(self._count)
        self._segments.append((result, timestamp))
        self._firsts.append(first_delta)
        self._count += count

    def __len__(self) -> int:
        return self._count

    def _at(self, i: int) -> FutureRecordMetadata:
        seg = bisect.bisect_right(self._starts, i) - 1
        result, timestamp = self._segments[seg]
        delta = self._firsts[seg] + i - self._starts[seg]
        return _new_future(FutureRecordMetadata, (result, delta, timestamp))

    @overload
    def __getitem__(self, index: int) -> FutureRecordMetadata: ...

    @overload
    def __getitem__(self, index: slice) -> list[FutureRecordMetadata]: ...

    def __getitem__(self, index: int | slice) -> FutureRecordMetadata | list[FutureRecordMetadata]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("RecordFutures index out of range")
        return self._at(index)

    def __iter__(self) -> Iterator[FutureRecordMetadata]:
        for (result, timestamp), first, start, end in zip(
            self._segments,
            self._firsts,
            self._starts,
            [*self._starts[1:], self._count],
            strict=True,
        ):
            for delta in range(first, first + end - start):
                yield _new_future(FutureRecordMetadata, (result, delta, timestamp))

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Wait for every record (blocking producers) and return their metadata."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for result, _ts in self._segments:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not result.done and not result.wait_blocking(left):
                raise TimeoutExpiredError(f"records not acknowledged within {timeout} s")
        return [f.get() for f in self]

    def __repr__(self) -> str:
        return f"<RecordFutures {self._count} records in {len(self._segments)} batches>"
