"""Every offset commit, sync, async or automatic, through one queue and one task.

Kafka keeps commits in order because they share the coordinator's connection; here the
queue does it (trio may start two tasks spawned together in either order), so an
``commit_async`` never overtakes an earlier commit nor a later ``commit()`` an earlier
async one. Callbacks of async commits run where Kafka runs them: in the application's
next poll(), commit() or close() (``run_callbacks``), never in the background task, so a
blocking Consumer's callback can call the consumer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from client.errors import MinibrokerError
from client.group.listener import CallbackRunner
from client.group.offsets import OffsetsClient
from client.logs import get_logger
from client.types import OffsetAndMetadata, TopicPartition

__all__ = ["CommitCallback", "CommitQueue"]

log = get_logger("client.group.commits")

CommitCallback = Callable[[dict[TopicPartition, OffsetAndMetadata], Exception | None], Any]


@dataclass(eq=False)
class _Job:
    offsets: dict[TopicPartition, OffsetAndMetadata]
    deadline: float
    callback: CommitCallback | None = None
    what: str = "commit"
    done: trio.Event = field(default_factory=trio.Event)
    error: MinibrokerError | None = None


class CommitQueue:
    def __init__(
        self,
        group_id: str,
        offsets: OffsetsClient,
        nursery: trio.Nursery,
        runner: CallbackRunner,
        wake_host: Callable[[], None],
    ) -> None:
        self._offsets = offsets
        self._runner = runner
        self._wake_host = wake_host
        self._completed: list[_Job] = []
        self._log = log.bind(group_id=group_id)
        send, recv = trio.open_memory_channel[_Job](math.inf)
        self._send = send
        nursery.start_soon(self._run, recv)

    async def _run(self, recv: trio.MemoryReceiveChannel[_Job]) -> None:
        async for job in recv:
            try:
                await self._offsets.commit(job.offsets, job.deadline)
            except MinibrokerError as exc:
                job.error = exc
                self._log.info("commit_failed", what=job.what, error=str(exc))
            job.done.set()
            if job.callback is not None:
                self._completed.append(job)
                self._wake_host()

    async def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], deadline: float, what: str
    ) -> None:
        """Commit after everything queued before; raise its error."""
        job = _Job(offsets, deadline, what=what)
        self._send.send_nowait(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error

    def commit_async(
        self,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        deadline: float,
        callback: CommitCallback | None,
        what: str = "commit_async",
    ) -> None:
        self._send.send_nowait(_Job(offsets, deadline, callback, what))

    async def drain(self, deadline: float) -> None:
        """Wait (until ``deadline``) for every commit queued so far."""
        job = _Job({}, deadline, what="drain")
        self._send.send_nowait(job)
        with trio.move_on_at(deadline):
            await job.done.wait()

    async def run_callbacks(self) -> Exception | None:
        """Run the callbacks of finished async commits; the first exception one raised is
        returned (the others are logged)."""
        first: Exception | None = None
        while self._completed:
            job = self._completed.pop(0)
            assert job.callback is not None
            try:
                await self._runner(job.callback, dict(job.offsets), job.error)
            except Exception as exc:
                self._log.error("commit_callback_failed", error=repr(exc))
                first = first or exc
        return first
