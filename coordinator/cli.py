"""``minibroker coordinator``: run a standalone coordinator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import structlog
import trio

from coordinator.config import DEFAULT_PORT, CoordinatorConfig
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
    p.add_argument("--tick-time-ms", type=int, default=2000)
    p.add_argument("--min-session-timeout-ms", type=int, default=None)
    p.add_argument("--max-session-timeout-ms", type=int, default=None)
    p.add_argument("--snapshot-count", type=int, default=10_000, help="txns between snapshots")
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
    try:
        config = CoordinatorConfig(
            id=args.id,
            host=host,
            port=port,
            data_dir=args.data_dir,
            tick_time_ms=args.tick_time_ms,
            min_session_timeout_ms=args.min_session_timeout_ms,
            max_session_timeout_ms=args.max_session_timeout_ms,
            snapshot_count=args.snapshot_count,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trio.run(_main, config)
    return 0
