"""ZooKeeper's four-letter words: ``ruok``, ``srvr``/``stat``, ``mntr``, ``conf``. Pure.

The server answers one of these when it is the first four bytes of a connection, then
closes the connection. ``mntr`` is tab-separated ``key<TAB>value`` lines, as ZooKeeper's.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.engine import Engine

__all__ = ["ServerCounters", "answer"]

VERSION = "minibroker-coordinator-0.1.0"


@dataclass(slots=True)
class ServerCounters:
    packets_received: int = 0
    packets_sent: int = 0
    alive_connections: int = 0


def answer(word: str, engine: Engine, counters: ServerCounters) -> str:
    lat = engine.latency
    tree = engine.tree
    if word == "ruok":
        return "imok"
    if word in ("srvr", "stat"):
        return (
            f"Zookeeper version: {VERSION}\n"
            f"Latency min/avg/max: {lat.min}/{lat.avg:.4f}/{lat.max}\n"
            f"Received: {counters.packets_received}\n"
            f"Sent: {counters.packets_sent}\n"
            f"Connections: {counters.alive_connections}\n"
            f"Outstanding: 0\n"
            f"Zxid: {tree.last_zxid:#x}\n"
            f"Mode: standalone\n"
            f"Node count: {tree.node_count}\n"
        )
    if word == "mntr":
        metrics: list[tuple[str, object]] = [
            ("zk_version", VERSION),
            ("zk_server_state", "standalone"),
            ("zk_avg_latency", f"{lat.avg:.4f}"),
            ("zk_max_latency", lat.max),
            ("zk_min_latency", lat.min),
            ("zk_packets_received", counters.packets_received),
            ("zk_packets_sent", counters.packets_sent),
            ("zk_num_alive_connections", counters.alive_connections),
            ("zk_outstanding_requests", 0),
            ("zk_znode_count", tree.node_count),
            ("zk_watch_count", engine.watches.count),
            ("zk_ephemerals_count", tree.ephemeral_count),
            ("zk_approximate_data_size", tree.approximate_data_size),
            ("zk_global_sessions", len(tree.sessions)),
            ("zk_last_zxid", f"{tree.last_zxid:#x}"),
        ]
        return "".join(f"{k}\t{v}\n" for k, v in metrics)
    if word == "conf":
        cfg = engine.config
        return (
            f"serverId={cfg.id}\ndataDir={cfg.data_dir}\nclientPort={cfg.port}\n"
            f"tickTime={cfg.tick_time_ms}\nminSessionTimeout={cfg.min_timeout_ms}\n"
            f"maxSessionTimeout={cfg.max_timeout_ms}\nsnapCount={cfg.snapshot_count}\n"
        )
    return f"{word} is not executed because it is not in the whitelist.\n"
