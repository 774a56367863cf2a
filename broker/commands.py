"""CLI commands of the broker side: ``minibroker broker`` and ``minibroker cluster up``."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from broker.cluster_file import (
    CLUSTER_FILE,
    ClusterFile,
    ClusterProcess,
    pid_alive,
    pid_runs,
    read_cluster_file,
    terminate_pids,
    write_cluster_file,
)
from broker.config import (
    DEFAULT_BROKER_PORT,
    DEFAULT_COORDINATOR_PORT,
    BrokerConfig,
    parse_hostport,
)
from broker.health import register_cli as register_health_cli
from broker.logsetup import configure_logging
from proto.errors import InvalidConfigurationError


def _settings(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidConfigurationError(f"--set expects name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    # Only what was given: --listen and --set listeners=... must not both be in force.
    addresses: dict[str, object] = {}
    port = DEFAULT_BROKER_PORT
    if args.listen is not None:
        host, port = parse_hostport(args.listen, DEFAULT_BROKER_PORT)
        addresses.update(listen_host=host, listen_port=port)
    if args.advertise:
        adv_host, adv_port = parse_hostport(args.advertise, port)
        addresses.update(advertised_host=adv_host, advertised_port=adv_port)
    for hp in args.coordinator.split(","):
        parse_hostport(hp, DEFAULT_COORDINATOR_PORT)
    return BrokerConfig.from_settings(
        args.id,
        _settings(args.set or []),
        coordinator=args.coordinator,
        data_dir=args.data_dir,
        **addresses,
    )


async def _run_until_signal(config: BrokerConfig) -> None:
    from broker.server import serve

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    shutdown.set()
                    return

        nursery.start_soon(watch_signals)
        await serve(config, shutdown=shutdown)
        nursery.cancel_scope.cancel()


def run_broker(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = config_from_args(args)
    try:
        trio.run(_run_until_signal, config)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# --- cluster up -------------------------------------------------------------------------


def _wait_port(host: str, port: int, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InvalidConfigurationError(
                f"process for {host}:{port} exited with code {proc.returncode}; see its log"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise InvalidConfigurationError(f"nothing listens on {host}:{port} after waiting")


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_cluster_up(args: argparse.Namespace) -> int:
    if args.coordinators < 1:
        raise InvalidConfigurationError("--coordinators must be at least 1")
    if args.brokers < 1:
        raise InvalidConfigurationError("--brokers must be at least 1")
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    host = "127.0.0.1"
    exe = [sys.executable, "-m", "broker.cli"]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    ports_of: dict[str, dict[str, int]] = {}  # name -> its ports, for cluster.json
    # name -> the pid that runs it now: another tool (minibroker chaos) may have restarted
    # it from its argv and recorded the new pid in cluster.json.
    current: dict[str, int] = {}
    log_dir = data / "logs"
    log_dir.mkdir(exist_ok=True)
    env = dict(os.environ)

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        procs.append((name, proc))
        return proc

    def stop_all() -> None:
        # Brokers first (each hands its leaderships over through the coordinator, Kafka's
        # controlled shutdown), then the coordinators.
        brokers = [p for name, p in procs if name.startswith("broker")]
        others = [p for name, p in procs if not name.startswith("broker")]
        for group in (brokers, others):
            adopted = [
                current[name]
                for name, p in procs
                if p in group
                and current.get(name, p.pid) != p.pid
                and pid_runs(current[name], p.args)  # type: ignore[arg-type]
            ]
            terminate_pids(adopted)
            for proc in reversed(group):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.send_signal(signal.SIGCONT)  # a paused one must act on it
            deadline = time.monotonic() + 30
            for proc in reversed(group):
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # Both signals stop the cluster, even when started in the background (where a shell
    # leaves SIGINT ignored).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    try:
        cports = [args.coordinator_port + i for i in range(args.coordinators)]
        peers = ",".join(f"{i}={host}:{args.peer_port + i - 1}" for i in range(1, len(cports) + 1))
        coordinators: list[subprocess.Popen[bytes]] = []
        for i, cport in enumerate(cports, start=1):
            argv = [
                *exe,
                "coordinator",
                "--id",
                str(i),
                "--listen",
                f"{host}:{cport}",
                "--data-dir",
                str(data / f"coordinator-{i}"),
            ]
            if len(cports) > 1:
                argv += ["--peers", peers]
            coordinators.append(spawn(f"coordinator-{i}", argv))
            ports_of[f"coordinator-{i}"] = {"client": cport}
            if len(cports) > 1:
                ports_of[f"coordinator-{i}"]["peer"] = args.peer_port + i - 1
        for cport, proc in zip(cports, coordinators, strict=True):
            _wait_port(host, cport, time.monotonic() + 30, proc)
        ensemble = ",".join(f"{host}:{p}" for p in cports)
        ports = [args.broker_port + i for i in range(args.brokers)]
        for i, port in enumerate(ports, start=1):
            argv = [
                *exe,
                "broker",
                "--id",
                str(i),
                "--listen",
                f"{host}:{port}",
                "--coordinator",
                ensemble,
                "--data-dir",
                str(data / f"broker-{i}"),
            ]
            for s in args.set or []:
                argv += ["--set", s]
            spawn(f"broker-{i}", argv)
            ports_of[f"broker-{i}"] = {"broker": port}
        for (_name, proc), port in zip(procs[len(cports) :], ports, strict=True):
            _wait_port(host, port, time.monotonic() + 30, proc)
        bootstrap = ",".join(f"{host}:{p}" for p in ports)
        cluster_json = data / CLUSTER_FILE
        write_cluster_file(
            cluster_json,
            ClusterFile(
                os.getpid(),
                bootstrap,
                ensemble,
                tuple(
                    ClusterProcess(
                        name,
                        name.partition("-")[0],
                        int(name.rpartition("-")[2]),
                        proc.pid,
                        tuple(proc.args),  # type: ignore[arg-type]
                        ports_of[name],
                        str(log_dir / f"{name}.log"),
                    )
                    for name, proc in procs
                ),
            ),
        )
        current.update((name, proc.pid) for name, proc in procs)
        print(f"coordinators: {ensemble}")
        print(f"bootstrap servers: {bootstrap}")
        print(f"data: {data}  (logs in {log_dir}; processes in {cluster_json})")
        print("Ctrl-C stops the cluster.", flush=True)
        # A process that dies (or is killed on purpose) is reported, not restarted: the
        # rest of the cluster keeps running, as a real one would. One restarted by another
        # tool (its new pid in cluster.json) is watched, and stopped at the end, as ours.
        reported: set[str] = set()
        while True:
            try:
                recorded = {p.name: p.pid for p in read_cluster_file(cluster_json).processes}
            except InvalidConfigurationError:
                recorded = {}  # removed or damaged: keep what we know
            for name, proc in procs:
                proc.poll()  # reap our own child whatever runs the name now
                pid = recorded.get(name, current[name])
                if pid != current[name]:
                    current[name] = pid
                    reported.discard(name)
                    print(f"{name} restarted by another process as pid {pid}", flush=True)
                alive = proc.returncode is None if pid == proc.pid else pid_alive(pid)
                if not alive and name not in reported:
                    reported.add(name)
                    code = f" with code {proc.returncode}" if pid == proc.pid else ""
                    print(
                        f"{name} exited{code}; the rest keep running. "
                        f"Restart it with: {' '.join(proc.args)}",  # type: ignore[arg-type]
                        file=sys.stderr,
                        flush=True,
                    )
            if len(reported) == len(procs):
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping cluster", flush=True)
        return 0
    finally:
        stop_all()


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="run one broker")
    p.add_argument("--id", type=int, required=True, help="broker id (unique in the cluster)")
    p.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help=f"one listener (default 127.0.0.1:{DEFAULT_BROKER_PORT}); for several, "
        "--set listeners=NAME://HOST:PORT,... as Kafka",
    )
    p.add_argument(
        "--advertise",
        default=None,
        metavar="HOST:PORT",
        help="address clients should use (default: the listen address)",
    )
    p.add_argument(
        "--coordinator",
        default=f"127.0.0.1:{DEFAULT_COORDINATOR_PORT}",
        metavar="HOST:PORT[,HOST:PORT...]",
    )
    p.add_argument("--data-dir", required=True, metavar="DIR")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a setting by Kafka's name, e.g. log.segment.bytes=1048576",
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run_broker)

    c = sub.add_parser("cluster", help="run a local cluster")
    csub = c.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = csub.add_parser("up", help="start coordinator and brokers in the foreground")
    up.add_argument("--brokers", type=int, default=3)
    up.add_argument("--coordinators", type=int, default=1)
    up.add_argument("--data-dir", default="./data")
    up.add_argument(
        "--broker-port",
        type=int,
        default=DEFAULT_BROKER_PORT,
        help="port of broker 1; broker N listens on this + N - 1",
    )
    up.add_argument(
        "--coordinator-port",
        type=int,
        default=DEFAULT_COORDINATOR_PORT,
        help="client port of coordinator 1; coordinator N uses this + N - 1",
    )
    up.add_argument(
        "--peer-port",
        type=int,
        default=2888,
        help="peer port of coordinator 1 in an ensemble; N uses this + N - 1",
    )
    up.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a broker setting passed to every broker",
    )
    up.set_defaults(func=run_cluster_up)
    register_health_cli(sub)  # `minibroker health broker|coordinator`
