"""Three real ``minibroker coordinator`` processes: kill -9 the leader under load."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from coordinator.client import open_coordinator
from proto.errors import ConnectionLossError

ELECTION_MS = 300


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def command(member: int, ports: list[int], peer_ports: list[int], data: Path) -> list[str]:
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    return [
        sys.executable, "-m", "broker.cli", "coordinator",
        "--id", str(member),
        "--listen", f"127.0.0.1:{ports[member - 1]}",
        "--peers", peers,
        "--data-dir", str(data / f"m{member}"),
        "--election-timeout-ms", str(ELECTION_MS),
        "--heartbeat-interval-ms", "50",
        "--tick-time-ms", "500",
    ]  # fmt: skip


@contextmanager
def processes(tmp_path: Path) -> Iterator[tuple[dict[int, subprocess.Popen[bytes]], list[str]]]:
    ports, peer_ports = free_ports(3), free_ports(3)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    cmds = [command(m, ports, peer_ports, tmp_path) for m in (1, 2, 3)]
    try:
        for m in (1, 2, 3):
            procs[m] = subprocess.Popen(cmds[m - 1], stderr=subprocess.DEVNULL)
        yield procs, [f"127.0.0.1:{p}" for p in ports]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


async def mntr(address: str) -> str:
    host, port = address.rsplit(":", 1)
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        return ""
    try:
        await stream.send_all(b"mntr")
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    except trio.BrokenResourceError:
        return ""
    finally:
        await trio.aclose_forcefully(stream)
    return b"".join(chunks).decode()


async def wait_leader(addresses: list[str], exclude: int = 0) -> int:
    """Poll ``mntr``: separate processes have no event to wait on. Bounded."""
    with trio.fail_after(10):
        while True:
            for i, addr in enumerate(addresses, start=1):
                if i != exclude and "zk_server_state\tleader" in await mntr(addr):
                    return i
            await trio.sleep(0.02)


async def test_kill_9_the_leader_under_load(tmp_path: Path) -> None:
    with processes(tmp_path) as (procs, addresses), trio.fail_after(30):
        leader = await wait_leader(addresses)
        hosts = ",".join(addresses)
        async with open_coordinator(hosts, session_timeout_ms=6000) as zk:
            await zk.create("/eph", b"e", ephemeral=True)
            acked: list[str] = []
            target = {"count": 50}
            reached = trio.Event()

            async def load() -> None:
                n = 0
                while True:
                    try:
                        await zk.create(f"/w{n:05d}", b"x")
                        acked.append(f"/w{n:05d}")
                        if len(acked) >= target["count"]:
                            reached.set()
                    except ConnectionLossError:
                        pass  # may or may not have happened; not acknowledged
                    n += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(load)
                await reached.wait()
                os.kill(procs[leader].pid, signal.SIGKILL)
                killed_at = trio.current_time()
                new_leader = await wait_leader(addresses, exclude=leader)
                elapsed = trio.current_time() - killed_at
                reached = trio.Event()
                target["count"] = len(acked) + 50  # acknowledged writes after the failover
                await reached.wait()
                nursery.cancel_scope.cancel()
            assert new_leader != leader
            assert elapsed < 2 * 2 * ELECTION_MS / 1000 + 0.5, elapsed
            await zk.sync("/")
            children = set(await zk.get_children("/"))
            missing = [p for p in acked if p.lstrip("/") not in children]
            assert not missing, f"acknowledged writes lost: {missing[:5]}"
            _, stat = await zk.get("/eph")
            assert stat.ephemeral_owner == zk.session_id
        # The killed member rejoins and catches up.
        procs[leader].wait()
        procs[leader] = subprocess.Popen(
            command(leader, [int(a.rsplit(":", 1)[1]) for a in addresses],
                    _peer_ports(procs), tmp_path),
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await _wait_listening(addresses[leader - 1])  # a loaded machine starts it slowly
        async with open_coordinator(addresses[leader - 1]) as zk2:
            await zk2.sync("/")
            children = set(await zk2.get_children("/"))
            assert all(p.lstrip("/") in children for p in acked)


async def _wait_listening(address: str, timeout_s: float = 60) -> None:
    host, port = address.rsplit(":", 1)
    with trio.fail_after(timeout_s):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, int(port))
            except OSError:
                await trio.sleep(0.05)  # the process is still booting
                continue
            await stream.aclose()
            return


def _peer_ports(procs: dict[int, subprocess.Popen[bytes]]) -> list[int]:
    """The peer ports from a running member's command line."""
    args = next(p for p in procs.values() if p.poll() is None).args
    assert isinstance(args, list)
    peers = args[args.index("--peers") + 1]
    return [int(item.rsplit(":", 1)[1]) for item in peers.split(",")]


def test_unknown_id_refuses_to_start(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "broker.cli", "coordinator", "--id", "5",
         "--peers", "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2
    # One clear line, no traceback, no log noise.
    assert bad.stderr.splitlines() == ["error: --id 5 is not in --peers (members: 1, 2, 3)"]
