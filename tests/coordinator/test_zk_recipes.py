"""Recipes: leader election by predecessor watches, and ephemeral registration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from coordinator.client import CoordinatorClient, open_coordinator
from coordinator.recipes import LeaderElection, register_ephemeral
from coordinator.testing import CoordinatorHarness, RawSession
from proto.errors import NodeExistsError
from proto.zk import CreateFlags, CreateRequest


@asynccontextmanager
async def coordinator(tmp_path: Path) -> AsyncIterator[CoordinatorHarness]:
    async with trio.open_nursery() as nursery:
        harness = CoordinatorHarness(nursery, tmp_path)
        await harness.start()
        yield harness
        nursery.cancel_scope.cancel()


async def test_leader_election_hands_over_in_order(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, AsyncExitStack() as stack:
        clients: list[CoordinatorClient] = [
            await stack.enter_async_context(open_coordinator(h.hosts)) for _ in range(3)
        ]
        elections = [
            LeaderElection(zk, "/election", f"c{i}".encode()) for i, zk in enumerate(clients)
        ]
        await elections[0].campaign()
        assert elections[0].is_leader
        order: list[int] = []
        async with trio.open_nursery() as nursery:

            async def campaign(i: int) -> None:
                await elections[i].campaign()
                order.append(i)

            nursery.start_soon(campaign, 1)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(campaign, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert order == []
            assert await elections[2].leader() == b"c0"
            # Each waiting candidate watches only its predecessor: two watches in all.
            assert h.address is not None
            stream = await trio.open_tcp_stream(*h.address)
            await stream.send_all(b"mntr")
            text = b""
            while chunk := await stream.receive_some(4096):
                text += chunk
            await stream.aclose()
            assert "zk_watch_count\t2\n" in text.decode()
            await elections[0].resign()
            while not order:
                await trio.testing.wait_all_tasks_blocked()
            assert order == [1]
            assert await elections[2].leader() == b"c1"
            await elections[1].resign()
        assert order == [1, 2] and elections[2].is_leader


async def test_register_ephemeral(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        assert h.address is not None
        await register_ephemeral(zk, "/brokers/ids/1", b"host-a")
        await register_ephemeral(zk, "/brokers/ids/1", b"host-a")  # ours already: fine
        stat = await zk.exists("/brokers/ids/1")
        assert stat is not None and stat.ephemeral_owner == zk.session_id

        # Another live process holds /brokers/ids/2 with other data: a real conflict.
        other = await RawSession.open(h.address, timeout_ms=4000)
        reply = await other.call(
            CreateRequest("/brokers/ids/2", b"host-b", int(CreateFlags.EPHEMERAL))
        )
        assert reply.error_code == 0
        with pytest.raises(NodeExistsError):
            await register_ephemeral(zk, "/brokers/ids/2", b"host-c")

        # Our own registration left by an expired session (same data): wait for the reap.
        start = trio.current_time()
        await register_ephemeral(zk, "/brokers/ids/2", b"host-b")
        assert trio.current_time() - start >= 3.0
        stat = await zk.exists("/brokers/ids/2")
        assert stat is not None and stat.ephemeral_owner == zk.session_id
        await other.aclose()


async def test_register_ephemeral_gives_up_on_a_live_stale_looking_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        coordinator(tmp_path) as h,
        open_coordinator(h.hosts) as first,
        open_coordinator(h.hosts) as second,
    ):
        await register_ephemeral(first, "/brokers/ids/3", b"same")
        with pytest.raises(NodeExistsError):
            await register_ephemeral(second, "/brokers/ids/3", b"same", stale_wait_ms=5000)
