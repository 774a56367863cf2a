"""``minibroker chaos``: the command line of ``chaos.run``.

Exit codes: 0 the check found no anomaly, 1 it found some, 2 the run reached no verdict
(a bad option, a cluster that cannot be found or hurt, no final read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.options import DEFAULT_FAULTS, TARGETS, ChaosOptions
from chaos.schedule import FaultKind, parse_faults
from proto.errors import MinibrokerError

__all__ = ["options_from_args", "register_cli"]


def options_from_args(args: argparse.Namespace) -> ChaosOptions:
    return ChaosOptions(
        target=args.target,
        cluster_dir=Path(args.cluster_dir),
        start_cluster=args.start_cluster,
        compose_file=Path(args.compose_file),
        compose_project=args.compose_project,
        bootstrap_servers=args.bootstrap_servers,
        duration_s=args.duration,
        seed=args.seed,
        faults=parse_faults(args.faults),
        topic=args.topic,
        partitions=args.partitions,
        producers=args.producers,
        consumers=args.consumers,
        rate=args.rate,
        out_dir=None if args.out is None else Path(args.out),
        quiet_s=args.quiet,
    ).validated()


def run_chaos(args: argparse.Namespace) -> int:
    from chaos.runner import run  # the clients load only when a run starts

    try:
        result = run(options_from_args(args))
    except MinibrokerError as exc:  # ChaosError and the cluster file's own errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result.exit_code


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = ",".join(k.value for k in FaultKind)
    p = sub.add_parser(
        "chaos",
        help="run a workload under seeded faults and check the history (Jepsen-style)",
        description=(
            "Idempotent acks=all producers and a consumer group on a fresh topic (RF 3, min "
            "ISR 2), faults on a seeded schedule, a quiet phase, a final read from offset 0 "
            "and the queue check. Writes history.json and report.html to --out. Exit 0: no "
            "anomaly; 1: anomalies; 2: no verdict."
        ),
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="process",
        help="process: a `minibroker cluster up --data-dir DIR` cluster (see --cluster-dir); "
        "compose: the docker-compose.yml project (see --compose-file)",
    )
    p.add_argument(
        "--cluster-dir",
        default="./data",
        metavar="DIR",
        help="process target: the --data-dir of `cluster up` (its cluster.json)",
    )
    p.add_argument(
        "--start-cluster",
        action="store_true",
        help="process target: run `cluster up` (3 coordinators, 3 brokers, free ports, 4 s "
        "broker sessions) in --cluster-dir for this run and stop it afterwards",
    )
    p.add_argument("--compose-file", default="docker-compose.yml", metavar="FILE")
    p.add_argument(
        "--compose-project",
        default=None,
        metavar="NAME",
        help="compose target: project name (default: as compose derives it)",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT,...",
        help="default: from cluster.json, or the brokers' published ports",
    )
    p.add_argument("--duration", type=float, default=120.0, metavar="SECONDS")
    p.add_argument(
        "--seed", type=int, default=None, help="the schedule's seed (default: drawn, printed)"
    )
    p.add_argument(
        "--faults",
        default=",".join(k.value for k in DEFAULT_FAULTS),
        metavar="KIND,...",
        help=f"of {kinds} (partition: compose target only)",
    )
    p.add_argument("--topic", default=None, help="a new topic (default: chaos-<run id>)")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--producers", type=int, default=2)
    p.add_argument(
        "--consumers", type=int, default=2, help="members of the run's consumer group (0: none)"
    )
    p.add_argument(
        "--rate", type=float, default=200.0, help="records/s over all producers (0: unlimited)"
    )
    p.add_argument(
        "--quiet",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fault-free end of the run (default: a quarter of --duration, 10 to 60 s)",
    )
    p.add_argument(
        "--out", default=None, metavar="DIR", help="report folder (default ./chaos-<timestamp>/)"
    )
    p.set_defaults(func=run_chaos)
