"""The background nursery every async client owns between start() and close().

Entered by ``start()`` and exited by ``close()``; both must run in the same task (use
``async with``), because a trio nursery must be exited by the task that entered it.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["BackgroundTasks"]


class BackgroundTasks:
    def __init__(self) -> None:
        self._cm: Any = None
        self.nursery: trio.Nursery | None = None

    async def open(self) -> trio.Nursery:
        self._cm = trio.open_nursery()
        self.nursery = await self._cm.__aenter__()
        return self.nursery

    async def close(self) -> None:
        """Cancel whatever still runs and wait for it to finish."""
        if self._cm is None or self.nursery is None:
            return
        cm, self._cm = self._cm, None
        self.nursery.cancel_scope.cancel()
        await cm.__aexit__(None, None, None)
