"""Server and client together over TCP on 127.0.0.1 (port 0), one trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from coordinator.client import (
    CheckOp,
    CreateOp,
    DeleteOp,
    EventType,
    SessionState,
    SetDataOp,
    Stat,
    WatchedEvent,
    open_coordinator,
)
from coordinator.testing import CoordinatorHarness, RawSession
from proto.errors import (
    BadArgumentsError,
    BadVersionError,
    ConnectionFailedError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from proto.framing import encode_frame
from proto.zk import CreateFlags, CreateRequest

MiB = 1024 * 1024


@asynccontextmanager
async def coordinator(tmp_path: Path, **config: Any) -> AsyncIterator[CoordinatorHarness]:
    async with trio.open_nursery() as nursery:
        harness = CoordinatorHarness(nursery, tmp_path, **config)
        await harness.start()
        yield harness
        nursery.cancel_scope.cancel()


class Recorder:
    """A watcher that records its events and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.events: list[WatchedEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: WatchedEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, count: int = 1) -> None:
        while len(self.events) < count:
            await self._changed.wait()


async def test_crud_stat_and_cas(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        assert zk.state is SessionState.CONNECTED and zk.session_id >> 56 == 1
        assert await zk.create("/a", b"one") == "/a"
        data, stat = await zk.get("/a")
        assert data == b"one" and stat.version == 0 and stat.data_length == 3
        stat = await zk.set("/a", b"two", version=0)
        assert stat.version == 1 and stat.mzxid > stat.czxid
        with pytest.raises(BadVersionError):
            await zk.set("/a", b"three", version=0)
        with pytest.raises(BadVersionError):
            await zk.delete("/a", version=0)
        with pytest.raises(NodeExistsError):
            await zk.create("/a")
        with pytest.raises(NoNodeError):
            await zk.get("/missing")
        assert await zk.exists("/missing") is None
        await zk.create("/a/child")
        with pytest.raises(NotEmptyError):
            await zk.delete("/a")
        await zk.delete("/a", recursive=True)
        assert await zk.exists("/a") is None
        await zk.ensure_path("/x/y/z")
        await zk.ensure_path("/x/y/z")
        assert await zk.get_children("/x/y") == ["z"]
        await zk.sync("/x")


async def test_sequential_ephemeral_cap_and_paths(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        await zk.ensure_path("/q")
        names = [await zk.create("/q/job-", sequential=True) for _ in range(3)]
        assert names == [f"/q/job-{i:010d}" for i in range(3)]
        eph = await zk.create("/q/e", ephemeral=True)
        stat = await zk.exists(eph)
        assert stat is not None and stat.ephemeral_owner == zk.session_id
        with pytest.raises(NoChildrenForEphemeralsError):
            await zk.create("/q/e/child")
        with pytest.raises(BadArgumentsError):
            await zk.create("/big", b"x" * (MiB + 1))
        await zk.create("/big", b"x" * MiB)
        for bad in ("relative", "/trailing/", "/double//slash"):
            with pytest.raises(BadArgumentsError):
                await zk.create(bad)
        with pytest.raises(BadArgumentsError):
            await zk.get("no-slash")


async def test_ephemerals_die_with_closed_session(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as observer:
        async with open_coordinator(h.hosts) as zk:
            await zk.create("/reg/me", b"", ephemeral=True, makepath=True)
            gone = Recorder()
            assert await observer.exists("/reg/me", watch=gone) is not None
        assert zk.state is SessionState.LOST
        await gone.wait()
        assert gone.events == [WatchedEvent(EventType.DELETED, "/reg/me")]
        assert await observer.get_children("/reg") == []


async def test_watches_fire_once_and_before_later_reads(tmp_path: Path) -> None:
    async with (
        coordinator(tmp_path) as h,
        open_coordinator(h.hosts) as a,
        open_coordinator(h.hosts) as b,
    ):
        await a.create("/w", b"0")
        data_w, exists_w, child_w, missing_w = Recorder(), Recorder(), Recorder(), Recorder()
        await a.get("/w", watch=data_w)
        await a.exists("/w", watch=exists_w)
        await a.get_children("/w", watch=child_w)
        assert await a.exists("/w/new", watch=missing_w) is None

        await b.set("/w", b"1")
        # The notification reaches A before A can read the new data.
        data, _ = await a.get("/w")
        assert data == b"1"
        assert data_w.events == [WatchedEvent(EventType.CHANGED, "/w")]
        assert exists_w.events == [WatchedEvent(EventType.CHANGED, "/w")]

        await b.set("/w", b"2")  # one-shot: nobody is watching now
        await b.create("/w/new")
        await a.sync()
        assert missing_w.events == [WatchedEvent(EventType.CREATED, "/w/new")]
        assert child_w.events == [WatchedEvent(EventType.CHILD, "/w")]
        assert len(data_w.events) == 1

        deleted = Recorder()
        await a.get("/w/new", watch=deleted)
        await a.get_children("/w/new", watch=deleted)
        await b.delete("/w/new")
        await a.sync()
        assert deleted.events == [WatchedEvent(EventType.DELETED, "/w/new")]


async def test_multi_is_all_or_nothing(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        await zk.create("/epoch", b"1")
        results = await zk.multi(
            [
                CheckOp("/epoch", 0),
                SetDataOp("/epoch", b"2", 0),
                CreateOp("/controller", b"me", ephemeral=True),
                CreateOp("/log-", sequential=True),
            ]
        )
        assert results[0] is None and isinstance(results[1], Stat) and results[1].version == 1
        assert results[2:] == ["/controller", "/log-0000000002"]  # root cversion was 2
        with pytest.raises(BadVersionError):
            await zk.multi(
                [CreateOp("/should-not-exist"), SetDataOp("/epoch", b"3"), CheckOp("/epoch", 0)]
            )
        assert await zk.exists("/should-not-exist") is None
        assert (await zk.get("/epoch"))[0] == b"2"
        with pytest.raises(NodeExistsError):
            await zk.multi([DeleteOp("/controller"), CreateOp("/epoch")])
        assert await zk.exists("/controller") is not None
        assert await zk.multi([]) == []


async def test_session_expiry_deletes_ephemerals(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with coordinator(tmp_path, tick_time_ms=2000) as h, open_coordinator(h.hosts) as zk:
        assert h.address is not None
        raw = await RawSession.open(h.address, timeout_ms=100)  # negotiated up to 2 ticks
        reply = await raw.call(CreateRequest("/silent", b"", int(CreateFlags.EPHEMERAL)))
        assert reply.error_code == 0
        watcher = Recorder()
        assert await zk.exists("/silent", watch=watcher) is not None
        start = trio.current_time()
        await watcher.wait()
        elapsed = trio.current_time() - start
        assert watcher.events == [WatchedEvent(EventType.DELETED, "/silent")]
        assert 4.0 <= elapsed <= 4.0 + 2.0 + 0.1  # timeout, plus at most one tick
        # The client with pings survived all of it.
        assert zk.state is SessionState.CONNECTED
        await zk.create("/still-here")
        await raw.aclose()


async def test_four_letter_words(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        assert h.address is not None
        await zk.create("/e", ephemeral=True)

        async def ask(word: bytes) -> str:
            stream = await trio.open_tcp_stream(*h.address)  # type: ignore[misc]
            await stream.send_all(word)
            out = b""
            while chunk := await stream.receive_some(4096):
                out += chunk
            await stream.aclose()
            return out.decode()

        assert await ask(b"ruok") == "imok"
        assert "Mode: standalone" in await ask(b"srvr")
        metrics = dict(line.split("\t") for line in (await ask(b"mntr")).splitlines())
        assert metrics["zk_server_state"] == "standalone"
        assert metrics["zk_znode_count"] == "2"
        assert metrics["zk_ephemerals_count"] == "1"
        assert metrics["zk_num_alive_connections"] == "2"  # the client and this one
        assert int(metrics["zk_last_zxid"], 16) > 0
        assert {"zk_avg_latency", "zk_max_latency"} <= metrics.keys()


async def test_malformed_frame_closes_only_that_connection(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as h, open_coordinator(h.hosts) as zk:
        assert h.address is not None
        raw = await RawSession.open(h.address)
        await raw.stream.send_all(encode_frame(b"\xc1 not msgpack"))
        with pytest.raises(trio.BrokenResourceError):
            while True:
                if not await raw.stream.receive_some(4096):
                    raise trio.BrokenResourceError
        await raw.aclose()
        await zk.create("/fine")


async def test_no_server_raises_connection_failed(autojump_clock: trio.testing.MockClock) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectionFailedError):
        async with open_coordinator(f"127.0.0.1:{port}", connect_timeout_ms=1000):
            pytest.fail("connected to nothing")


async def test_hosts_list_skips_a_dead_server(tmp_path: Path) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    dead = listener.getsockname()[1]
    listener.close()
    async with coordinator(tmp_path) as h, open_coordinator(f"127.0.0.1:{dead},{h.hosts}") as zk:
        assert zk.state is SessionState.CONNECTED
        assert await zk.exists("/") is not None
