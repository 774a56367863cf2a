"""``minibroker coordinator``: run a standalone coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import structlog
import trio

from coordinator.config import DEFAULT_PEER_PORT, DEFAULT_PORT, CoordinatorConfig
from coordinator.server import serve

__all__ = ["register_cli", "run"]


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, DEFAULT_PORT
    try:
        return host or "0.0.0.0", int(port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad listen address {value!r}") from exc


def _peers(value: str) -> dict[int, tuple[str, int]]:
    """``1=h:p,2=h:p,3=h:p`` (the port defaults to 2888)."""
    out: dict[int, tuple[str, int]] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        sid, sep, addr = item.strip().partition("=")
        try:
            member = int(sid)
            host, colon, port = addr.rpartition(":")
            out[member] = (host, int(port)) if colon else (addr, DEFAULT_PEER_PORT)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"bad --peers item {item!r}: want ID=HOST:PORT"
            ) from exc
        if not sep or not out[member][0]:
            raise argparse.ArgumentTypeError(f"bad --peers item {item!r}: want ID=HOST:PORT")
    return out


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("coordinator", help="run a standalone ZooKeeper-like coordinator")
    p.add_argument("--id", type=int, default=1, help="server id (0-127)")
    p.add_argument(
        "--listen",
        type=_host_port,
        default=("127.0.0.1", DEFAULT_PORT),
        metavar="HOST:PORT",
        help=f"address to listen on (default 127.0.0.1:{DEFAULT_PORT})",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="snapshots and txn logs")
    p.add_argument(
        "--peers",
        type=_peers,
        default={},
        metavar="1=H:P,2=H:P,3=H:P",
        help="every ensemble member's peer address (this one included); omit: standalone",
    )
    p.add_argument(
        "--peer-listen",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help=f"peer address to listen on (default: this id's --peers entry, port "
        f"{DEFAULT_PEER_PORT})",
    )
    p.add_argument("--election-timeout-ms", type=int, default=500)
    p.add_argument("--heartbeat-interval-ms", type=int, default=100)
    p.add_argument("--tick-time-ms", type=int, default=2000)
    p.add_argument("--min-session-timeout-ms", type=int, default=None)
    p.add_argument("--max-session-timeout-ms", type=int, default=None)
    p.add_argument(
        "--session-disconnect-grace-ms",
        type=int,
        default=1000,
        help="expire a session this long after its connection closes unannounced, unless "
        "the client reconnects (0: wait out the whole session timeout, as ZooKeeper)",
    )
    p.add_argument(
        "--snapshot-count",
        type=int,
        default=100_000,
        help="txns between snapshots (ZooKeeper's snapCount)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def configure_logging(level: str) -> None:
    renderer: structlog.types.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


async def _main(config: CoordinatorConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)
            async for signum in signals:
                structlog.get_logger("coordinator").info(
                    "shutdown_signal", signal=signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    host, port = args.listen
    peers: dict[int, tuple[str, int]] = args.peers
    peer_host, peer_port = args.peer_listen or peers.get(args.id, ("0.0.0.0", DEFAULT_PEER_PORT))
    try:
        config = CoordinatorConfig(
            id=args.id,
            host=host,
            port=port,
            data_dir=args.data_dir,
            tick_time_ms=args.tick_time_ms,
            min_session_timeout_ms=args.min_session_timeout_ms,
            session_disconnect_grace_ms=args.session_disconnect_grace_ms,
            max_session_timeout_ms=args.max_session_timeout_ms,
            snapshot_count=args.snapshot_count,
            peers=peers,
            peer_host=peer_host,
            peer_port=peer_port,
            election_timeout_ms=args.election_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trio.run(_main, config)
    return 0
