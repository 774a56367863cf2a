from __future__ import annotations

import trio
import trio.testing

from broker.purgatory import FetchPurgatory


async def test_wait_times_out(autojump_clock: trio.abc.Clock) -> None:
    p = FetchPurgatory()
    start = trio.current_time()
    assert not await p.wait_any([("t", 0)], 0.5)
    assert trio.current_time() - start == 0.5
    assert p.waiting == 0


async def test_append_wakes_only_waiters_of_that_partition(autojump_clock: trio.abc.Clock) -> None:
    p = FetchPurgatory()
    woken: list[str] = []

    async def waiter(name: str, key: tuple[str, int]) -> None:
        if await p.wait_any([key], 10):
            woken.append(name)

    async with trio.open_nursery() as n:
        n.start_soon(waiter, "a", ("t", 0))
        n.start_soon(waiter, "b", ("t", 1))
        await trio.testing.wait_all_tasks_blocked()
        assert p.waiting == 2
        p.notify(("t", 0))
    assert woken == ["a"]
    assert p.waiting == 0
