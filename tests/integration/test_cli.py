"""The README tour, driven through the real `minibroker` CLI against real processes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.cluster import LocalCluster


def run_cli(
    cluster: LocalCluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MINIBROKER_BOOTSTRAP=cluster.bootstrap)
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stderr}\n{cluster.logs()}")
    return proc


def test_cli_round_trip(cluster3: LocalCluster) -> None:
    c = cluster3
    out = run_cli(c, "topics", "create", "orders", "--partitions", "3", "--replication-factor", "1")
    assert "Created topic orders" in out.stdout
    assert run_cli(c, "topics", "list").stdout.split() == ["orders"]
    described = run_cli(c, "topics", "describe", "orders").stdout
    assert "PartitionCount: 3" in described
    run_cli(
        c,
        "produce",
        "orders",
        "--key-separator",
        ":",
        stdin="alice:pizza\nbob:sushi\nalice:salad\n",
    )
    consumed = run_cli(
        c, "consume", "orders", "--from-beginning", "--print-key", "--timeout-ms", "3000"
    ).stdout.splitlines()
    assert sorted(consumed) == sorted(["alice\tpizza", "bob\tsushi", "alice\tsalad"])
    alice = [line for line in consumed if line.startswith("alice")]
    assert alice == ["alice\tpizza", "alice\tsalad"]  # same key, same partition, in order
    two = run_cli(c, "consume", "orders", "--from-beginning", "--max-messages", "2").stdout
    assert len(two.splitlines()) == 2
    run_cli(c, "topics", "delete", "orders")
    assert run_cli(c, "topics", "list").stdout.split() == []


def test_cli_errors_are_one_line_and_nonzero(cluster: LocalCluster) -> None:
    bad_name = run_cli(cluster, "topics", "create", "bad name!", check=False)
    assert bad_name.returncode != 0
    assert bad_name.stderr.strip().count("\n") == 0
    assert "INVALID_TOPIC_EXCEPTION" in bad_name.stderr

    rf = run_cli(cluster, "topics", "create", "t", "--replication-factor", "3", check=False)
    assert rf.returncode != 0
    assert "INVALID_REPLICATION_FACTOR" in rf.stderr

    cfg = run_cli(cluster, "topics", "create", "t", "--config", "retention.ms=soon", check=False)
    assert cfg.returncode != 0
    assert "INVALID_CONFIG" in cfg.stderr and "retention.ms" in cfg.stderr

    unknown = run_cli(cluster, "consume", "nope", "--timeout-ms", "500", check=False)
    assert unknown.returncode != 0
    assert "UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr

    run_cli(cluster, "topics", "create", "t")
    again = run_cli(cluster, "topics", "create", "t", check=False)
    assert again.returncode != 0 and "TOPIC_ALREADY_EXISTS" in again.stderr


def test_cli_consume_as_a_group_goes_on_from_the_committed_offsets(
    cluster: LocalCluster,
) -> None:
    """The README's consumer-group step: `consume --group` commits what it printed, a
    second run prints only what came after, `groups describe` shows the lag between."""
    run_cli(cluster, "topics", "create", "orders", "--partitions", "2")
    run_cli(cluster, "produce", "orders", "--key-separator", ":",
            stdin="alice:pizza\nbob:sushi\nalice:salad\n")  # fmt: skip
    group = ("consume", "orders", "--group", "billing", "--print-key", "--timeout-ms", "5000")
    first = run_cli(cluster, *group, "--from-beginning").stdout.splitlines()
    assert sorted(first) == sorted(["alice\tpizza", "bob\tsushi", "alice\tsalad"])
    run_cli(cluster, "produce", "orders", "--key-separator", ":", stdin="carol:tea\n")
    described = run_cli(cluster, "groups", "describe", "billing").stdout.splitlines()
    lags = [row.split() for row in described if row.startswith("billing")]
    assert sorted(int(row[5]) for row in lags) == [0, 1]  # LAG: carol's partition is behind
    assert run_cli(cluster, *group, "--from-beginning").stdout.splitlines() == ["carol\ttea"]
    both = run_cli(cluster, *group, "--partition", "0", check=False)
    assert both.returncode != 0 and "--group and --partition are exclusive" in both.stderr
