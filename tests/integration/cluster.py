"""Real minibroker processes on 127.0.0.1 for integration and fault tests.

Each process logs JSON lines on stderr; a thread drains them into memory so a test can
wait for an event by name (``broker_started``) instead of sleeping, and a failing test can
show what the processes said.

``LocalCluster`` runs one coordinator (or an ensemble of ``coordinators``) and N brokers.
Faults a test can inject: SIGKILL / SIGTERM / SIGSTOP / SIGCONT of any broker or
coordinator member, and, with ``proxies=True``, network faults: every broker then listens
on one port and advertises a proxy in front of it (clients and followers reach it through
that proxy), and reaches each coordinator member through a proxy of its own, so
``isolate_broker`` cuts one broker off from clients, followers and the ensemble at once.
The test process itself reads the coordinator directly (never through a proxy) to learn
who leads what: the znodes are the truth a stale broker's metadata may not be.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from broker import zk_layout as zl
from coordinator.client import open_coordinator
from proto.errors import BrokerResponseError, ClientError

if TYPE_CHECKING:
    from tests.faults.proxy import ProxyHub, TcpProxy

START_TIMEOUT_S = 30.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range when there is room:
    a process restarted on the same port (kill -9, then start) must not find it taken by
    some connection's source port meanwhile, which a port of that range can be."""
    low, _high = _ephemeral_range()
    if low > 11_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.lines: list[str] = []
        self.paused = False
        self._cond = threading.Condition()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        with self.popen.stderr, open(self.log_path, "ab") as out:
            for raw in self.popen.stderr:
                out.write(raw)
                out.flush()
                with self._cond:
                    self.lines.append(raw.decode(errors="replace"))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every JSON log line so far; only those whose ``event`` is ``name`` if given."""
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if name is None or obj.get("event") == name:
                out.append(obj)
        return out

    def wait_for_event(
        self, event: str, timeout: float = START_TIMEOUT_S, *, after: int = 0
    ) -> dict[str, Any]:
        """The first ``event`` logged at line ``after`` or later (``len(proc.lines)`` taken
        before an action waits for what the action caused, not for an older line)."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            with self._cond:
                lines = self.lines[seen:]
                seen = len(self.lines)
            for line in lines:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("event") == event:
                    return obj  # type: ignore[no-any-return]
            if self.popen.poll() is not None and not lines:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name} never logged {event!r}:\n{self.tail()}")
            with self._cond:
                if len(self.lines) == seen:
                    self._cond.wait(remaining)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "".join(self.lines[-n:])

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets (the kernel still accepts connections and
        buffers bytes) but runs nothing, as in a long GC pause or a frozen VM."""
        self.popen.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)
        self.paused = False

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` if alive; a paused process is continued so that it can act on it."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            if self.paused:
                self.resume()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._thread.join(5)
        return self.popen.returncode


class LocalCluster:
    """``coordinators`` coordinator members (1: standalone) and N brokers, each a real
    process with its own ports and dir.

    ``coordinator_tick_ms`` sets the members' tick (session timeouts are bounded by 2 and 20
    ticks, so short broker sessions need a short tick). ``proxies``: see the module doc.
    """

    def __init__(
        self,
        root: Path,
        brokers: int = 1,
        settings: dict[str, str] | None = None,
        *,
        coordinators: int = 1,
        coordinator_tick_ms: int | None = None,
        proxies: bool = False,
    ) -> None:
        self.root = root
        self.settings = settings or {}
        self.coordinator_tick_ms = coordinator_tick_ms
        self.coordinator_ports = {i: free_port() for i in range(1, coordinators + 1)}
        self.peer_ports = (
            {i: free_port() for i in self.coordinator_ports} if coordinators > 1 else {}
        )
        self.broker_ports = {i: free_port() for i in range(1, brokers + 1)}  # listen ports
        self.brokers: dict[int, Proc] = {}
        self.coordinators: dict[int, Proc] = {}
        self.hub: ProxyHub | None = None
        self.broker_proxies: dict[int, TcpProxy] = {}
        # broker id -> coordinator member -> the proxy that broker reaches the member by
        self.coordinator_proxies: dict[int, dict[int, TcpProxy]] = {}
        if proxies:
            from tests.faults.proxy import ProxyHub

            self.hub = ProxyHub()
            for b, port in self.broker_ports.items():
                self.broker_proxies[b] = self.hub.open(f"broker-{b}", ("127.0.0.1", port))
                self.coordinator_proxies[b] = {
                    c: self.hub.open(f"broker-{b}->coordinator-{c}", ("127.0.0.1", cport))
                    for c, cport in self.coordinator_ports.items()
                }

    # --- addresses ----------------------------------------------------------------------

    @property
    def coordinator(self) -> Proc | None:
        """The first coordinator member (the only one when standalone)."""
        return self.coordinators.get(1)

    @property
    def coordinator_port(self) -> int:
        return self.coordinator_ports[1]

    @property
    def coordinator_address(self) -> str:
        """The whole connect string, every member (what the test process uses)."""
        return ",".join(f"127.0.0.1:{p}" for p in self.coordinator_ports.values())

    def advertised_port(self, broker_id: int) -> int:
        proxy = self.broker_proxies.get(broker_id)
        return proxy.port if proxy is not None else self.broker_ports[broker_id]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.advertised_port(b)}" for b in self.broker_ports)

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "broker.cli", *args]

    # --- coordinators -------------------------------------------------------------------

    def start_coordinator(self, member: int = 1, *, wait: bool = True) -> Proc:
        argv = self._cmd(
            "coordinator",
            "--id",
            str(member),
            "--listen",
            f"127.0.0.1:{self.coordinator_ports[member]}",
            "--data-dir",
            str(self.root / ("coordinator" if not self.peer_ports else f"coordinator-{member}")),
        )
        if self.peer_ports:
            argv += ["--peers", ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.peer_ports.items())]
        if self.coordinator_tick_ms is not None:
            argv += ["--tick-time-ms", str(self.coordinator_tick_ms)]
        name = "coordinator" if not self.peer_ports else f"coordinator-{member}"
        proc = Proc(name, argv, self.root / f"{name}.log")
        self.coordinators[member] = proc
        if wait:
            wait_listening(self.coordinator_ports[member], proc)
        return proc

    def start_coordinators(self) -> None:
        """Every member at once (an ensemble needs a quorum up to elect), then a leader."""
        procs = {m: self.start_coordinator(m, wait=False) for m in self.coordinator_ports}
        for member, proc in procs.items():
            wait_listening(self.coordinator_ports[member], proc)
        if self.peer_ports:
            self.coordinator_leader()

    def coordinator_mode(self, member: int) -> str | None:
        """``Mode:`` of member's ``srvr`` (leader, follower, looking, standalone...), or
        None when it does not answer."""
        proc = self.coordinators.get(member)
        if proc is None or not proc.alive or proc.paused:
            return None
        text = four_letter_word(self.coordinator_ports[member], "srvr")
        for line in text.splitlines():
            if line.startswith("Mode: "):
                return line.removeprefix("Mode: ").strip()
        return None

    def coordinator_leader(self, timeout: float = START_TIMEOUT_S) -> int:
        """The member that reports ``Mode: leader`` (polled: separate processes have no
        event to wait on); waits for an election in progress to end."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.coordinator_ports:
                if self.coordinator_mode(member) == "leader":
                    return member
            if time.monotonic() > deadline:
                raise TimeoutError(f"no coordinator leader after {timeout} s:\n{self.logs()}")
            threading.Event().wait(0.05)

    def kill_coordinator(self, member: int) -> None:
        self.coordinators[member].stop(signal.SIGKILL)

    def restart_coordinator(self, member: int) -> Proc:
        proc = self.coordinators.get(member)
        if proc is not None:
            proc.stop()
        return self.start_coordinator(member)

    # --- brokers ------------------------------------------------------------------------

    def start_broker(self, broker_id: int, *, wait: bool = True) -> Proc:
        proxies = self.coordinator_proxies.get(broker_id)
        ensemble = (
            ",".join(f"127.0.0.1:{p.port}" for p in proxies.values())
            if proxies
            else self.coordinator_address
        )
        argv = self._cmd(
            "broker",
            "--id",
            str(broker_id),
            "--listen",
            f"127.0.0.1:{self.broker_ports[broker_id]}",
            "--coordinator",
            ensemble,
            "--data-dir",
            str(self.root / f"broker-{broker_id}"),
        )
        if broker_id in self.broker_proxies:
            argv += ["--advertise", f"127.0.0.1:{self.advertised_port(broker_id)}"]
        for k, v in self.settings.items():
            argv += ["--set", f"{k}={v}"]
        proc = Proc(f"broker-{broker_id}", argv, self.root / f"broker-{broker_id}.log")
        self.brokers[broker_id] = proc
        if wait:
            proc.wait_for_event("broker_started")
        return proc

    def start(self) -> LocalCluster:
        self.start_coordinators()
        procs = [self.start_broker(b, wait=False) for b in self.broker_ports]
        for proc in procs:
            proc.wait_for_event("broker_started")
        return self

    def kill_broker(self, broker_id: int) -> None:
        self.brokers[broker_id].stop(signal.SIGKILL)

    def stop_broker(self, broker_id: int) -> int:
        """SIGTERM: a clean shutdown (session closed, logs checkpointed); the exit code."""
        return self.brokers[broker_id].stop(signal.SIGTERM)

    def restart_broker(self, broker_id: int, sig: int = signal.SIGTERM) -> Proc:
        self.brokers[broker_id].stop(sig)
        return self.start_broker(broker_id)

    def pause_broker(self, broker_id: int) -> None:
        self.brokers[broker_id].pause()

    def resume_broker(self, broker_id: int) -> None:
        self.brokers[broker_id].resume()

    def isolate_broker(
        self, broker_id: int, *, stall: bool = False, coordinator_only: bool = False
    ) -> None:
        """Cut ``broker_id`` off from clients, followers and every coordinator member (or,
        ``coordinator_only``, from the ensemble alone): links reset (default) or ``stall``ed
        (silence; bytes delivered late on heal). Its own fetches from other leaders still
        pass (they go through those leaders' proxies): a leader is cut off completely, a
        follower from all but its leader."""
        proxies = list(self.coordinator_proxies[broker_id].values())
        if not coordinator_only:
            proxies.append(self.broker_proxies[broker_id])
        for proxy in proxies:
            if stall:
                proxy.stall()
            else:
                proxy.cut()

    def heal_broker(self, broker_id: int) -> None:
        self.broker_proxies[broker_id].heal()
        for proxy in self.coordinator_proxies[broker_id].values():
            proxy.heal()

    def heal_all(self) -> None:
        for broker_id in self.broker_proxies:
            self.heal_broker(broker_id)

    # --- the coordinator's view, read directly -----------------------------------------

    def read_znode(self, path: str, timeout: float = START_TIMEOUT_S) -> bytes | None:
        """``path``'s data read straight from the ensemble after a ``sync`` (None if it
        does not exist); retried while the ensemble elects a leader."""

        async def read() -> bytes | None:
            async with open_coordinator(
                self.coordinator_address, session_timeout_ms=10_000, connect_timeout_ms=5_000
            ) as zk:
                await zk.sync("/")
                if await zk.exists(path) is None:
                    return None
                data, _ = await zk.get(path)
                return data

        deadline = time.monotonic() + timeout
        while True:
            try:
                return trio.run(read)
            except (BrokerResponseError, ClientError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"coordinator unreadable: {exc}\n{self.logs()}") from exc
                threading.Event().wait(0.1)

    def partition_state(self, topic: str, partition: int) -> zl.PartitionState | None:
        path = zl.partition_state_path(topic, partition)
        data = self.read_znode(path)
        return None if data is None else zl.PartitionState.decode(path, data)

    def wait_partition_state(
        self,
        topic: str,
        partition: int,
        predicate: Callable[[zl.PartitionState], bool],
        timeout: float = START_TIMEOUT_S,
        what: str = "the wanted state",
    ) -> zl.PartitionState:
        """Poll the state znode until ``predicate`` holds (separate processes: no event)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.partition_state(topic, partition)
            if state is not None and predicate(state):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}-{partition} never reached {what} in {timeout} s (last: {state})"
                    f"\n{self.logs()}"
                )
            threading.Event().wait(0.1)

    def wait_isr_full(
        self, topic: str, partition: int, replicas: int, timeout: float = START_TIMEOUT_S
    ) -> zl.PartitionState:
        """Wait until a live broker leads and all ``replicas`` are in the ISR."""

        def full(state: zl.PartitionState) -> bool:
            leader = self.brokers.get(state.leader)
            return (
                len(state.isr) == replicas
                and leader is not None
                and leader.alive
                and not leader.paused
            )

        return self.wait_partition_state(topic, partition, full, timeout, "a full ISR")

    # --- teardown -----------------------------------------------------------------------

    def stop(self) -> None:
        """Heal every link, SIGTERM every process (paused ones are continued), wait."""
        if self.hub is not None and self.hub.running:
            self.heal_all()
        for proc in self.brokers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.brokers.values():
            proc.stop()
        for proc in self.coordinators.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.coordinators.values():
            proc.stop()
        if self.hub is not None:
            self.hub.close()

    def logs(self, n: int = 40) -> str:
        procs = [*self.brokers.values(), *self.coordinators.values()]
        return "\n".join(f"--- {p.name}\n{p.tail(n)}" for p in procs)


def four_letter_word(port: int, word: str, timeout: float = 2.0) -> str:
    """Send a ZooKeeper four-letter word to 127.0.0.1:``port``; "" if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


def wait_listening(port: int, proc: Proc, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until something accepts on ``port`` (process start-up, not a test timeout)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not listening on {port}:\n{proc.tail()}") from None
            # Back off between connection attempts while the process boots.
            threading.Event().wait(delay)
            delay = min(delay * 2, 0.5)
