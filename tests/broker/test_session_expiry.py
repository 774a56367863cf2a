"""A broker whose coordinator session expires registers again and keeps serving."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio.testing

from broker import zk_layout as zl
from broker.config import BrokerConfig
from broker.server import serve as serve_broker
from coordinator.client import Stat, WatchedEvent, open_coordinator
from coordinator.config import CoordinatorConfig
from coordinator.server import serve as serve_coordinator
from coordinator.testing import ChaosProxy
from proto import messages as m
from tests.broker.test_broker_component import Wire, batch, produce, produced


async def wait_for(zk_exists: Callable[..., Awaitable[Stat | None]], present: bool) -> None:
    """Wait until the node's presence is ``present`` (by exists watches, no polling)."""
    while True:
        changed = trio.Event()

        def wake(_e: WatchedEvent, changed: trio.Event = changed) -> None:
            changed.set()

        stat = await zk_exists(watch=wake)
        if (stat is not None) == present:
            return
        await changed.wait()


async def test_session_expiry_re_registers(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    coord = await nursery.start(
        serve_coordinator, CoordinatorConfig(port=0, data_dir=tmp_path / "c", force_sync=False)
    )
    proxy = ChaosProxy(nursery, coord)
    await proxy.start()
    config = BrokerConfig.from_settings(
        1,
        {"zookeeper.session.timeout.ms": "6000"},
        listen_port=0,
        coordinator=proxy.hosts,
        data_dir=str(tmp_path / "b"),
    )
    shutdown, stopped = trio.Event(), trio.Event()

    async def run_broker(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            await serve_broker(config, shutdown=shutdown, task_status=task_status)
        finally:
            stopped.set()

    host, port = await nursery.start(run_broker)
    path = zl.broker_path(1)
    async with open_coordinator(f"{coord[0]}:{coord[1]}") as zk:
        _data, stat = await zk.get(path)
        first_owner = stat.ephemeral_owner

        proxy.hold()  # the broker's session can no longer reach the coordinator
        with trio.fail_after(60):  # virtual seconds: fails instead of hanging
            await wait_for(functools.partial(zk.exists, path), present=False)  # expired
            await proxy.heal()
            await wait_for(functools.partial(zk.exists, path), present=True)  # registered again
        _data, stat = await zk.get(path)
        assert stat.ephemeral_owner not in (0, first_owner)

    # The broker kept its listener and still takes writes.
    stream = await trio.open_tcp_stream(host, port)
    wire = Wire(stream)
    created = await wire.call(m.CreateTopicsRequest([m.CreatableTopic("t", 1, 1)]))
    assert isinstance(created, m.CreateTopicsResponse) and created.topics[0].error_code == 0
    ok = produced(await wire.call(produce(batch(b"after expiry"))))
    assert ok.error_code == 0 and ok.base_offset == 0
    await stream.aclose()
    shutdown.set()
    await stopped.wait()
    await proxy.cut()
    nursery.cancel_scope.cancel()
