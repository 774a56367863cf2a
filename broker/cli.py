"""The ``minibroker`` command: one entry point, a subcommand per component.

Each component registers its own subcommands through a ``register_cli(subparsers)``
function that adds a parser and sets ``func`` to a callable taking the parsed namespace
and returning the process exit code. Errors a user can cause are printed as one line on
stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from broker.logsetup import configure_logging
from proto.errors import MinibrokerError

# Modules that contribute subcommands; each has register_cli(subparsers).
_CLI_MODULES = (
    "broker.commands",
    "coordinator.cli",
    "coordinator.zkcli",
    "client.cli",
    "chaos.cli",
)

CommandFunc = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minibroker", description="A Kafka-like distributed log: brokers, coordinator, tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _CLI_MODULES:
        import_module(name).register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Tools log warnings only, on stderr; servers reconfigure with their --log-level.
    configure_logging("warning")
    func: CommandFunc = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except MinibrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Errors raised inside a trio nursery arrive wrapped; show the first of ours.
        match, _rest = group.split(MinibrokerError)
        if match is None:
            raise
        print(f"error: {_first_leaf(match)}", file=sys.stderr)
        return 1


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
