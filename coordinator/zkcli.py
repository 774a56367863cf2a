"""``minibroker zk``: the coordinator's operator tool, in the manner of ZooKeeper's zkCli.

One command per invocation, e.g. ``minibroker zk --server h:p[,h:p] ls -R /``.

- Znode commands (``ls``, ``get``, ``stat``, ``create``, ``set``, ``delete``, ``rmr`` /
  ``deleteall``) open a session through ``coordinator.client`` and close it when the
  command ends, so a node made by ``create -e`` is deleted as the command exits (as after
  ``zkCli.sh -server ... create -e`` in batch mode).
- ``ruok``, ``srvr``, ``mntr`` and ``conf`` are four-letter words: the word is written on a
  plain TCP connection to every listed server and the answer read until the server closes.

Failures are raised as typed ``MinibrokerError``s (``NoNodeError``, ``BadVersionError``,
``ConnectionFailedError``, ...); ``broker.cli.main`` prints them as one ``error:`` line and
exits 1. This module only reads and writes through the public client API; it never
imports the server.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import trio
from rich.console import Console
from rich.table import Table

from broker.logsetup import configure_logging
from coordinator.client import CoordinatorClient, Stat, open_coordinator
from coordinator.config import DEFAULT_PORT
from proto.errors import ConnectionFailedError, MinibrokerError, NoNodeError

__all__ = [
    "DEFAULT_SERVER",
    "FOUR_LETTER_WORDS",
    "SERVER_ENV",
    "ZNODE_COMMANDS",
    "execute",
    "format_data",
    "format_stat",
    "four_letter_word",
    "list_tree",
    "parse_mntr",
    "parse_servers",
    "register_cli",
    "run",
]

SERVER_ENV = "MINIBROKER_COORDINATOR"
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_TIMEOUT_MS = 5000
FOUR_LETTER_WORDS = ("ruok", "srvr", "mntr", "conf")
READ_SIZE = 65536

Server = tuple[str, int]
ZnodeCommand = Callable[[CoordinatorClient, argparse.Namespace], Awaitable[None]]


# --- pure formatting ------------------------------------------------------------------


def parse_servers(value: str) -> list[Server]:
    """``"h1:2181,h2"`` -> ``[("h1", 2181), ("h2", 2181)]``; ValueError on a bad item."""
    servers: list[Server] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            servers.append((item, DEFAULT_PORT))
            continue
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad server address {item!r} (want HOST:PORT)")
        servers.append((host, int(port)))
    if not servers:
        raise ValueError(f"no server in {value!r}")
    return servers


def _server_list(value: str) -> list[Server]:
    try:
        return parse_servers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _hosts(servers: Sequence[Server]) -> str:
    return ",".join(f"{host}:{port}" for host, port in servers)


def format_data(data: bytes) -> str:
    """Znode data as text when it is printable UTF-8, else ``0x`` and lowercase hex.

    Control characters other than newline, carriage return and tab count as binary, so
    that ``get`` never writes raw terminal escapes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    if all(ch.isprintable() or ch in "\n\r\t" for ch in text):
        return text
    return "0x" + data.hex()


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def format_stat(stat: Stat) -> list[str]:
    """zkCli's ``stat`` lines (``name = value``), with ZooKeeper's field names. Times are
    ISO-8601 UTC; there are no ACLs, so ``aclVersion`` is always 0."""
    fields: list[tuple[str, object]] = [
        ("cZxid", f"{stat.czxid:#x}"),
        ("ctime", _time(stat.ctime)),
        ("mZxid", f"{stat.mzxid:#x}"),
        ("mtime", _time(stat.mtime)),
        ("pZxid", f"{stat.pzxid:#x}"),
        ("cversion", stat.cversion),
        ("dataVersion", stat.version),
        ("aclVersion", 0),
        ("ephemeralOwner", f"{stat.ephemeral_owner:#x}"),
        ("dataLength", stat.data_length),
        ("numChildren", stat.num_children),
    ]
    return [f"{name} = {value}" for name, value in fields]


def parse_mntr(text: str) -> list[tuple[str, str]]:
    """``mntr``'s ``key<TAB>value`` lines as pairs; a line without a tab keeps its text as
    the key and an empty value (so an error answer is still shown)."""
    rows: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, _, value = line.partition("\t")
        rows.append((key.strip(), value.strip()))
    return rows


# --- talking to the coordinator -------------------------------------------------------


async def four_letter_word(host: str, port: int, word: str, *, timeout_ms: int) -> str:
    """Send ``word`` on a fresh TCP connection and return the answer (read to EOF)."""
    chunks: list[bytes] = []
    try:
        with trio.fail_after(timeout_ms / 1000):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(word.encode("ascii"))
                while data := await stream.receive_some(READ_SIZE):
                    chunks.append(data)
    except trio.TooSlowError as exc:
        raise ConnectionFailedError(
            f"cannot connect to {host}:{port}: no answer within {timeout_ms} ms"
        ) from exc
    except (OSError, trio.BrokenResourceError) as exc:
        raise ConnectionFailedError(f"cannot connect to {host}:{port}: {exc}") from exc
    return b"".join(chunks).decode("utf-8", errors="replace")


async def _in_session(args: argparse.Namespace, command: ZnodeCommand) -> None:
    """Run ``command`` in a fresh session, closed before returning.

    ``open_coordinator`` runs its body inside a nursery, so an error raised in the body
    leaves it wrapped in an ExceptionGroup; the error is carried out of the block and
    raised bare, so ``broker.cli.main`` can print it as one line."""
    hosts = _hosts(args.server)
    failure: MinibrokerError | None = None
    try:
        async with open_coordinator(
            hosts,
            connect_timeout_ms=args.timeout_ms,
            request_timeout_ms=args.timeout_ms,
        ) as zk:
            try:
                await command(zk, args)
            except MinibrokerError as exc:
                failure = exc
    except ConnectionFailedError as exc:
        raise ConnectionFailedError(
            f"cannot connect to a coordinator at {hosts} within {args.timeout_ms} ms"
        ) from exc
    if failure is not None:
        raise failure


def _join(parent: str, child: str) -> str:
    return f"{parent.rstrip('/')}/{child}"


async def list_tree(zk: CoordinatorClient, path: str) -> list[str]:
    """``path`` and every node under it, depth first, children sorted (zkCli's ``ls -R``
    order, which visits children in the order the server lists them). A node deleted
    while we walk is skipped; a missing ``path`` raises NoNodeError."""
    out: list[str] = []
    stack = [path]
    while stack:
        node = stack.pop()
        try:
            children = await zk.get_children(node)
        except NoNodeError:
            if node == path:
                raise
            continue
        out.append(node)
        stack.extend(_join(node, child) for child in sorted(children, reverse=True))
    return out


# --- commands ---------------------------------------------------------------------------


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


async def _ls(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    if args.recursive:
        _print_lines(await list_tree(zk, args.path))
    else:
        print(f"[{', '.join(sorted(await zk.get_children(args.path)))}]")
    if args.stat:
        await _stat(zk, args)


async def _get(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    data, stat = await zk.get(args.path)
    print(format_data(data))
    if args.stat:
        _print_lines(format_stat(stat))


async def _stat(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    stat = await zk.exists(args.path)
    if stat is None:
        raise NoNodeError(args.path)
    _print_lines(format_stat(stat))


async def _create(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    data = args.data.encode("utf-8")
    path = await zk.create(args.path, data, ephemeral=args.ephemeral, sequential=args.sequential)
    print(f"Created {path}")


async def _set(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    stat = await zk.set(args.path, args.data.encode("utf-8"), args.version)
    if args.stat:
        _print_lines(format_stat(stat))


async def _delete(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    await zk.delete(args.path, args.version)


async def _rmr(zk: CoordinatorClient, args: argparse.Namespace) -> None:
    # The client's recursive delete ignores a missing node; zkCli reports it.
    if await zk.exists(args.path) is None:
        raise NoNodeError(args.path)
    await zk.delete(args.path, recursive=True)


ZNODE_COMMANDS: dict[str, ZnodeCommand] = {
    "ls": _ls,
    "get": _get,
    "stat": _stat,
    "create": _create,
    "set": _set,
    "delete": _delete,
    "rmr": _rmr,
}


async def _word_command(args: argparse.Namespace) -> int:
    word: str = args.zk_command
    servers: list[Server] = args.server
    answers: list[tuple[str, str]] = []
    failures: list[ConnectionFailedError] = []
    for host, port in servers:
        try:
            text = await four_letter_word(host, port, word, timeout_ms=args.timeout_ms)
        except ConnectionFailedError as exc:
            if len(servers) == 1:
                raise
            failures.append(exc)
            continue
        answers.append((f"{host}:{port}", text))
    if word == "mntr":
        _print_mntr(answers, with_header=len(servers) > 1)
    elif len(servers) == 1:
        print(answers[0][1].rstrip("\n"))
    else:
        for server, text in answers:
            lines = text.rstrip("\n").splitlines()
            if len(lines) == 1:
                print(f"{server}: {lines[0]}")
            else:
                print(f"[{server}]")
                _print_lines(lines)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _print_mntr(answers: Sequence[tuple[str, str]], *, with_header: bool) -> None:
    """One row per metric: the key, then one value column per answering server."""
    values: dict[str, dict[str, str]] = {}
    for server, text in answers:
        for key, value in parse_mntr(text):
            values.setdefault(key, {})[server] = value
    table = Table(box=None, show_header=with_header, pad_edge=False, highlight=False)
    table.add_column("key" if with_header else "", no_wrap=True)
    for server, _ in answers:
        table.add_column(server if with_header else "", no_wrap=True)
    for key, by_server in values.items():
        table.add_row(key, *(by_server.get(server, "") for server, _ in answers))
    # Render off-screen at a width no value reaches, then drop the cells' trailing padding.
    console = Console(file=io.StringIO(), width=1000, highlight=False)
    with console.capture() as capture:
        console.print(table)
    _print_lines([line.rstrip() for line in capture.get().splitlines()])


async def execute(args: argparse.Namespace) -> int:
    """Run one parsed ``zk`` command; returns the exit code, raises typed errors."""
    if args.zk_command in FOUR_LETTER_WORDS:
        return await _word_command(args)
    await _in_session(args, ZNODE_COMMANDS[args.zk_command])
    return 0


def run(args: argparse.Namespace) -> int:
    # The client logs a warning when its connection closes, even on our own close; an
    # operator tool should print only the answer or one error line.
    configure_logging("error")
    return trio.run(execute, args)


# --- argument parsing ---------------------------------------------------------------------


def _version(value: str) -> int:
    try:
        version = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad version {value!r}") from exc
    if version < -1:
        raise argparse.ArgumentTypeError(f"bad version {value!r} (-1 matches any)")
    return version


def _positive_ms(value: str) -> int:
    try:
        ms = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad duration {value!r}") from exc
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {value!r} (want milliseconds > 0)")
    return ms


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "zk",
        help="inspect and edit the coordinator's znodes, ask its four-letter words (zkCli)",
        description="One zkCli command against the coordinator. Errors print one line and exit 1.",
    )
    p.add_argument(
        "--server",
        type=_server_list,
        default=os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"coordinators (default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--timeout-ms",
        type=_positive_ms,
        default=DEFAULT_TIMEOUT_MS,
        help=f"connect and request timeout (default {DEFAULT_TIMEOUT_MS})",
    )
    p.set_defaults(func=run)
    cmds = p.add_subparsers(dest="zk_command", required=True, metavar="COMMAND")

    ls = cmds.add_parser("ls", help="list children as [a, b]; -R: the subtree, one path a line")
    ls.add_argument("-R", dest="recursive", action="store_true", help="recursive, depth first")
    ls.add_argument("-s", dest="stat", action="store_true", help="also print the stat")
    ls.add_argument("path")

    get = cmds.add_parser("get", help="print the data (text if UTF-8, else 0x-hex)")
    get.add_argument("-s", dest="stat", action="store_true", help="also print the stat")
    get.add_argument("path")

    stat = cmds.add_parser("stat", help="print the stat, one field a line")
    stat.add_argument("path")

    create = cmds.add_parser("create", help="create a znode; prints 'Created PATH'")
    create.add_argument("-e", dest="ephemeral", action="store_true", help="ephemeral")
    create.add_argument("-s", dest="sequential", action="store_true", help="sequential")
    create.add_argument("path")
    create.add_argument("data", nargs="?", default="")

    set_ = cmds.add_parser("set", help="set the data (compare-and-set with -v)")
    set_.add_argument("-v", dest="version", type=_version, default=-1, help="expected version")
    set_.add_argument("-s", dest="stat", action="store_true", help="print the new stat")
    set_.add_argument("path")
    set_.add_argument("data")

    delete = cmds.add_parser("delete", help="delete a znode without children")
    delete.add_argument("-v", dest="version", type=_version, default=-1, help="expected version")
    delete.add_argument("path")

    rmr = cmds.add_parser("rmr", aliases=["deleteall"], help="delete a znode and its subtree")
    rmr.set_defaults(zk_command="rmr")
    rmr.add_argument("path")

    for word, text in (
        ("ruok", "ask each server 'ruok' (answer: imok)"),
        ("srvr", "each server's summary: version, latency, mode, zxid, node count"),
        ("mntr", "each server's metrics as a table"),
        ("conf", "each server's configuration"),
    ):
        cmds.add_parser(word, help=text)
