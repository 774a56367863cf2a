"""``minibroker zk``: every command against a real coordinator, in-process and as a process.

In-process tests parse argv with the real parser and await ``execute`` (output through
capsys); process tests run ``python -m broker.cli zk ...`` with ``trio.run_process`` so the
coordinator in this test's nursery keeps serving meanwhile. Process tests use the real
clock: under autojump a wait on a child process would let the server expire sessions.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
import trio
import trio.testing

from coordinator.client import CoordinatorClient, Stat, open_coordinator
from coordinator.testing import CoordinatorHarness
from coordinator.zkcli import (
    execute,
    format_data,
    format_stat,
    parse_mntr,
    parse_servers,
    register_cli,
)
from proto.errors import (
    BadArgumentsError,
    BadVersionError,
    ConnectionFailedError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)

REPO = Path(__file__).resolve().parents[2]
STAT_NAMES = [
    "cZxid",
    "ctime",
    "mZxid",
    "mtime",
    "pZxid",
    "cversion",
    "dataVersion",
    "aclVersion",
    "ephemeralOwner",
    "dataLength",
    "numChildren",
]


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The client logs to structlog's default (stdout); keep capsys output clean."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    yield
    structlog.configure(**saved)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> CoordinatorHarness:
    harness = CoordinatorHarness(nursery, tmp_path / "zk")
    await harness.start()
    return harness


@pytest.fixture
async def zk(server: CoordinatorHarness) -> AsyncIterator[CoordinatorClient]:
    """An independent session, to set up and check state behind the CLI's back."""
    async with open_coordinator(server.hosts) as client:
        yield client


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="minibroker")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["zk", *argv])


async def cli(server: CoordinatorHarness, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run one command in-process; returns its stdout (a failure raises)."""
    capsys.readouterr()
    assert await execute(parse("--server", server.hosts, *argv)) == 0
    return capsys.readouterr().out


def stat_fields(out: str) -> dict[str, str]:
    pairs = [line.split(" = ", 1) for line in out.splitlines() if " = " in line]
    return {name: value for name, value in pairs}


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port that is bound but not listening: connects are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# --- pure parts -------------------------------------------------------------------------


def test_parse_servers() -> None:
    assert parse_servers("a:1, b ,c:65535") == [("a", 1), ("b", 2181), ("c", 65535)]
    for bad in ("", ",", "a:x", "a:0", "a:70000", ":1"):
        with pytest.raises(ValueError):
            parse_servers(bad)


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--server", "h:nope", "ls", "/"],
        ["set", "-v", "-2", "/a", "x"],
        ["delete", "-v", "one", "/a"],
        ["frob", "/a"],
        ["ls"],
        ["--timeout-ms", "0", "ruok"],
    ):
        with pytest.raises(SystemExit) as info:
            parse(*argv)
        assert info.value.code == 2
    assert "bad server address 'h:nope'" in capsys.readouterr().err


def test_format_data_text_or_hex() -> None:
    assert format_data(b"") == ""
    assert format_data("héllo\n\tworld".encode()) == "héllo\n\tworld"
    assert format_data(b'{"version":1}') == '{"version":1}'
    assert format_data(b"\xff\x00") == "0xff00"  # not UTF-8
    assert format_data(b"a\x00b") == "0x610062"  # UTF-8 but a control character
    assert format_data(b"\x1b[31m") == "0x1b5b33316d"  # never print terminal escapes


def test_format_stat_names_and_hex() -> None:
    stat = Stat(
        czxid=0x100000002,
        mzxid=0x100000007,
        pzxid=0x100000009,
        ctime=1_700_000_000_123,
        mtime=0,
        version=4,
        cversion=2,
        ephemeral_owner=0x1000ABC,
        data_length=5,
        num_children=1,
    )
    lines = format_stat(stat)
    assert [line.split(" = ")[0] for line in lines] == STAT_NAMES
    assert stat_fields("\n".join(lines)) == {
        "cZxid": "0x100000002",
        "ctime": "2023-11-14T22:13:20.123+00:00",
        "mZxid": "0x100000007",
        "mtime": "1970-01-01T00:00:00.000+00:00",
        "pZxid": "0x100000009",
        "cversion": "2",
        "dataVersion": "4",
        "aclVersion": "0",
        "ephemeralOwner": "0x1000abc",
        "dataLength": "5",
        "numChildren": "1",
    }


def test_parse_mntr() -> None:
    text = "zk_version\tv 1\nzk_znode_count\t5\n\nnot a metric\n"
    assert parse_mntr(text) == [
        ("zk_version", "v 1"),
        ("zk_znode_count", "5"),
        ("not a metric", ""),
    ]


# --- znode commands in-process ------------------------------------------------------------


async def test_create_get_set_stat(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(server, capsys, "create", "/app", "hello") == "Created /app\n"
    assert await cli(server, capsys, "create", "/app/empty") == "Created /app/empty\n"
    assert await cli(server, capsys, "get", "/app") == "hello\n"
    assert await cli(server, capsys, "get", "/app/empty") == "\n"

    out = await cli(server, capsys, "get", "-s", "/app")
    assert out.splitlines()[0] == "hello"
    assert [line.split(" = ")[0] for line in out.splitlines()[1:]] == STAT_NAMES
    _, stat = await zk.get("/app")
    assert stat_fields(out)["cZxid"] == f"{stat.czxid:#x}"

    assert await cli(server, capsys, "set", "-v", "0", "/app", "v1") == ""
    with pytest.raises(BadVersionError, match=r"^\[BAD_VERSION\] /app$"):
        await cli(server, capsys, "set", "-v", "0", "/app", "v2")
    out = await cli(server, capsys, "set", "-s", "/app", "v3")  # -1: any version
    assert stat_fields(out)["dataVersion"] == "2"
    assert await zk.get("/app") == (b"v3", await zk.exists("/app"))

    out = await cli(server, capsys, "stat", "/app")
    assert [line.split(" = ")[0] for line in out.splitlines()] == STAT_NAMES
    stat_now = await zk.exists("/app")
    assert stat_now is not None
    assert stat_fields(out) == {
        name: value for name, value in (line.split(" = ") for line in format_stat(stat_now))
    }
    assert stat_fields(out)["numChildren"] == "1"
    assert stat_fields(out)["dataLength"] == "2"
    assert stat_fields(out)["ephemeralOwner"] == "0x0"

    with pytest.raises(NodeExistsError, match=r"^\[NODE_EXISTS\] /app$"):
        await cli(server, capsys, "create", "/app")
    with pytest.raises(NoNodeError, match=r"^\[NO_NODE\] /missing/child$"):
        await cli(server, capsys, "create", "/missing/child")
    with pytest.raises(BadArgumentsError, match=r"^\[BAD_ARGUMENTS\] relative$"):
        await cli(server, capsys, "ls", "relative")
    for argv in (("get", "/nope"), ("stat", "/nope"), ("set", "/nope", "x"), ("ls", "/nope")):
        with pytest.raises(NoNodeError, match=r"^\[NO_NODE\] /nope$"):
            await cli(server, capsys, *argv)


async def test_get_prints_binary_as_hex(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await zk.create("/bin", b"\x00\x01\xfe")
    assert await cli(server, capsys, "get", "/bin") == "0x0001fe\n"


async def test_sequential_and_ephemeral(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await cli(server, capsys, "create", "/q")
    assert await cli(server, capsys, "create", "-s", "/q/job-", "a") == (
        "Created /q/job-0000000000\n"
    )
    assert await cli(server, capsys, "create", "-s", "/q/job-") == "Created /q/job-0000000001\n"
    assert await zk.get("/q/job-0000000000") == (b"a", await zk.exists("/q/job-0000000000"))

    # An ephemeral node lives as long as the command's session: gone once it returns.
    out = await cli(server, capsys, "create", "-e", "-s", "/q/eph-")
    assert out == "Created /q/eph-0000000002\n"
    assert await zk.exists("/q/eph-0000000002") is None
    assert await cli(server, capsys, "ls", "/q") == "[job-0000000000, job-0000000001]\n"

    # Another session's ephemeral: its owner shows, and it cannot have children.
    await zk.create("/owned", b"", ephemeral=True)
    out = await cli(server, capsys, "stat", "/owned")
    assert stat_fields(out)["ephemeralOwner"] == f"{zk.session_id:#x}"
    assert zk.session_id != 0
    with pytest.raises(NoChildrenForEphemeralsError, match="NO_CHILDREN_FOR_EPHEMERALS"):
        await cli(server, capsys, "create", "/owned/child")


async def test_ls_and_ls_recursive(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(server, capsys, "ls", "/") == "[]\n"
    for path in ("/b/y", "/b/x/2", "/b/x/1", "/a"):
        await zk.create(path, makepath=True)
    assert await cli(server, capsys, "ls", "/") == "[a, b]\n"
    assert await cli(server, capsys, "ls", "/b") == "[x, y]\n"
    assert await cli(server, capsys, "ls", "/a") == "[]\n"
    # zkCli's ls -R: depth first, the start path first, one full path a line.
    assert (await cli(server, capsys, "ls", "-R", "/")).splitlines() == [
        "/",
        "/a",
        "/b",
        "/b/x",
        "/b/x/1",
        "/b/x/2",
        "/b/y",
    ]
    assert (await cli(server, capsys, "ls", "-R", "/b/x")).splitlines() == [
        "/b/x",
        "/b/x/1",
        "/b/x/2",
    ]
    out = await cli(server, capsys, "ls", "-s", "/b")
    assert out.splitlines()[0] == "[x, y]"
    assert stat_fields(out)["numChildren"] == "2"
    with pytest.raises(NoNodeError, match=r"^\[NO_NODE\] /c$"):
        await cli(server, capsys, "ls", "-R", "/c")


async def test_delete_with_version_and_rmr(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await zk.create("/d/e/f", b"", makepath=True)
    await zk.set("/d/e/f", b"x")  # version 1
    with pytest.raises(BadVersionError, match=r"^\[BAD_VERSION\] /d/e/f$"):
        await cli(server, capsys, "delete", "-v", "0", "/d/e/f")
    assert await zk.exists("/d/e/f") is not None
    assert await cli(server, capsys, "delete", "-v", "1", "/d/e/f") == ""
    assert await zk.exists("/d/e/f") is None
    with pytest.raises(NotEmptyError, match=r"^\[NOT_EMPTY\] /d$"):
        await cli(server, capsys, "delete", "/d")
    with pytest.raises(NoNodeError, match=r"^\[NO_NODE\] /d/e/f$"):
        await cli(server, capsys, "delete", "/d/e/f")
    assert await cli(server, capsys, "delete", "/d/e") == ""

    for path in ("/r/a/1", "/r/a/2", "/r/b", "/keep"):
        await zk.create(path, makepath=True)
    assert await cli(server, capsys, "rmr", "/r/a") == ""
    assert await zk.get_children("/r") == ["b"]
    assert await cli(server, capsys, "deleteall", "/r") == ""
    assert sorted(await zk.get_children("/")) == ["d", "keep"]
    for word in ("rmr", "deleteall"):
        with pytest.raises(NoNodeError, match=r"^\[NO_NODE\] /r$"):
            await cli(server, capsys, word, "/r")


# --- four-letter words in-process -----------------------------------------------------------


async def test_ruok_srvr_conf(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(server, capsys, "ruok") == "imok\n"
    await zk.create("/n", b"")
    srvr = await cli(server, capsys, "srvr")
    assert "Mode: standalone" in srvr.splitlines()
    assert "Node count: 2" in srvr.splitlines()
    conf = await cli(server, capsys, "conf")
    assert f"clientPort={server.config.port}" in conf.splitlines()


async def test_mntr_is_an_aligned_table(
    server: CoordinatorHarness, zk: CoordinatorClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await zk.create("/m1", b"")
    await zk.create("/m2", b"", ephemeral=True)
    out = await cli(server, capsys, "mntr")
    lines = out.splitlines()
    rows = dict(line.split(None, 1) for line in lines)
    assert rows["zk_server_state"] == "standalone"
    assert rows["zk_znode_count"] == "3"
    assert rows["zk_ephemerals_count"] == "1"
    assert rows["zk_last_zxid"].startswith("0x")
    value_column = {len(line) - len(line.split(None, 1)[1]) for line in lines}
    assert len(value_column) == 1  # every value starts in the same column
    assert all(line == line.rstrip() for line in lines)
    assert "\t" not in out


async def test_words_to_several_servers_report_the_dead_one(
    server: CoordinatorHarness, dead_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = f"{server.hosts},127.0.0.1:{dead_port}"
    capsys.readouterr()
    assert await execute(parse("--server", hosts, "mntr")) == 1
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split() == ["key", server.hosts]
    assert dict(line.split(None, 1) for line in rows)["zk_server_state"] == "standalone"
    assert err.startswith(f"error: cannot connect to 127.0.0.1:{dead_port}")
    assert len(err.splitlines()) == 1

    assert await execute(parse("--server", f"{server.hosts},{server.hosts}", "ruok")) == 0
    assert capsys.readouterr().out == f"{server.hosts}: imok\n{server.hosts}: imok\n"


async def test_unreachable_server_raises_connection_failed(
    dead_port: int, autojump_clock: trio.testing.MockClock
) -> None:
    hosts = f"127.0.0.1:{dead_port}"
    with pytest.raises(ConnectionFailedError, match=f"cannot connect to {hosts}"):
        await execute(parse("--server", hosts, "ruok"))
    with pytest.raises(ConnectionFailedError, match=f"cannot connect to a coordinator at {hosts}"):
        await execute(parse("--server", hosts, "--timeout-ms", "500", "ls", "/"))


# --- the real command, as a process ---------------------------------------------------------


async def minibroker_zk(*argv: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "MINIBROKER_COORDINATOR"}
    return await trio.run_process(
        [sys.executable, "-m", "broker.cli", "zk", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=REPO,
        env=env,
    )


async def test_command_line_end_to_end(server: CoordinatorHarness, zk: CoordinatorClient) -> None:
    hosts = ("--server", server.hosts)
    done = await minibroker_zk(*hosts, "create", "-s", "/job-", "payload")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"Created /job-0000000000\n", b"")
    done = await minibroker_zk(*hosts, "get", "/job-0000000000")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"payload\n", b"")

    done = await minibroker_zk(*hosts, "create", "-e", "/gone")
    assert done.stdout == b"Created /gone\n"
    assert await zk.exists("/gone") is None  # the CLI's session closed when it exited

    done = await minibroker_zk(*hosts, "get", "/missing")
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b"error: [NO_NODE] /missing\n")
    done = await minibroker_zk(*hosts, "set", "-v", "7", "/job-0000000000", "x")
    assert done.returncode == 1
    assert done.stderr == b"error: [BAD_VERSION] /job-0000000000\n"

    done = await minibroker_zk(*hosts, "mntr")
    assert done.returncode == 0
    assert b"zk_server_state" in done.stdout and b"\t" not in done.stdout


async def test_command_line_cannot_connect(dead_port: int) -> None:
    done = await minibroker_zk("--server", f"127.0.0.1:{dead_port}", "--timeout-ms", "100", "ls")
    assert done.returncode == 2  # usage: ls needs a path
    done = await minibroker_zk(
        "--server", f"127.0.0.1:{dead_port}", "--timeout-ms", "100", "ls", "/"
    )
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot connect to a coordinator at 127.0.0.1:{dead_port}")
    done = await minibroker_zk("--server", f"127.0.0.1:{dead_port}", "ruok")
    assert done.returncode == 1
    assert done.stderr.decode().startswith(f"error: cannot connect to 127.0.0.1:{dead_port}")
