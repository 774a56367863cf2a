"""``minibroker health``: one-shot health checks for container orchestrators.

``health broker`` asks a broker for Metadata on one of its listeners and is healthy when
the answer lists the broker itself (its registration in the coordinator is in the view it
serves) and names a controller. ``health coordinator`` asks a member ``srvr`` and is
healthy when the member serves (leader, follower or standalone) and, given the ensemble,
some member is the leader. Exit 0 and one line on stdout when healthy; exit 1 and one line
on stderr saying why not.

Docker runs these every few seconds in every container, so they are cheap on purpose:
blocking sockets and the sans-IO protocol only (``python -m broker.health`` imports no
trio, no storage engine), and no coordinator session, so checks leave no trace in the
coordinator's log.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence

from proto.connection import ClientConnection, ResponseEvent
from proto.errors import MinibrokerError, RemoteProtocolError
from proto.messages import MetadataRequest, MetadataResponse

__all__ = ["UnhealthyError", "check_broker", "check_coordinator", "main", "register_cli"]

SERVING_MODES = ("leader", "follower", "standalone")
_RECV = 1 << 16


class UnhealthyError(MinibrokerError):
    """The component answered (or did not) in a way that is not healthy."""


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return text.strip(), default_port
    try:
        return host.strip("[]") or "localhost", int(port)
    except ValueError:
        raise UnhealthyError(f"{text!r} is not HOST:PORT") from None


class _Deadline:
    def __init__(self, timeout_ms: int) -> None:
        self.at = time.monotonic() + timeout_ms / 1000

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left


def _exchange(host: str, port: int, payload: bytes, deadline: _Deadline) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=deadline.left())
    sock.settimeout(deadline.left())
    sock.sendall(payload)
    return sock


def check_broker(host: str, port: int, broker_id: int, *, timeout_ms: int) -> str:
    deadline = _Deadline(timeout_ms)
    conn = ClientConnection("minibroker-health")
    _cid, frame = conn.send_request(MetadataRequest([]))
    try:
        with _exchange(host, port, frame, deadline) as sock:
            event: ResponseEvent | None = None
            while event is None:
                sock.settimeout(deadline.left())
                data = sock.recv(_RECV)
                if not data:
                    raise UnhealthyError(f"broker at {host}:{port} closed the connection")
                conn.receive_data(data)
                event = conn.next_event()
    except (OSError, RemoteProtocolError) as exc:  # TimeoutError is an OSError
        raise UnhealthyError(f"broker at {host}:{port} does not answer Metadata: {exc}") from exc
    response = event.response
    if not isinstance(response, MetadataResponse):
        raise UnhealthyError(f"broker at {host}:{port} answered error {event.error_code}")
    me = [b for b in response.brokers if b.node_id == broker_id]
    if not me:
        ids = sorted(b.node_id for b in response.brokers)
        raise UnhealthyError(
            f"broker {broker_id} at {host}:{port} is not registered (live brokers: {ids})"
        )
    if response.controller_id < 0:
        raise UnhealthyError(f"broker {broker_id}: the cluster has no controller yet")
    return f"broker {broker_id} registered as {me[0].host}:{me[0].port}"


def _srvr_mode(host: str, port: int, timeout_ms: int) -> str | None:
    """``Mode:`` of the member's ``srvr`` answer (read to EOF, as ZooKeeper closes)."""
    deadline = _Deadline(timeout_ms)
    chunks: list[bytes] = []
    try:
        with _exchange(host, port, b"srvr", deadline) as sock:
            while True:
                sock.settimeout(deadline.left())
                data = sock.recv(_RECV)
                if not data:
                    break
                chunks.append(data)
    except OSError as exc:
        raise UnhealthyError(f"cannot ask coordinator {host}:{port}: {exc}") from exc
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        if line.startswith("Mode:"):
            return line.removeprefix("Mode:").strip()
    return None


def check_coordinator(
    host: str, port: int, ensemble: Sequence[tuple[str, int]], *, timeout_ms: int
) -> str:
    mode = _srvr_mode(host, port, timeout_ms)
    if mode not in SERVING_MODES:
        raise UnhealthyError(f"coordinator at {host}:{port} is not serving (mode: {mode})")
    if mode != "follower" or not ensemble:
        return f"coordinator {host}:{port} is {mode}"
    for peer_host, peer_port in ensemble:
        try:
            if _srvr_mode(peer_host, peer_port, timeout_ms) == "leader":
                return f"coordinator {host}:{port} is follower; {peer_host}:{peer_port} leads"
        except UnhealthyError:
            continue  # a member down is what an ensemble tolerates
    raise UnhealthyError(f"coordinator at {host}:{port} is a follower but no member leads")


def run_health(args: argparse.Namespace) -> int:
    if args.component == "broker":
        host, port = _hostport(args.bootstrap_server, 9092)
        line = check_broker(host, port, args.id, timeout_ms=args.timeout_ms)
    else:
        host, port = _hostport(args.server, 2181)
        ensemble = [_hostport(hp, 2181) for hp in (args.ensemble or "").split(",") if hp.strip()]
        line = check_coordinator(host, port, ensemble, timeout_ms=args.timeout_ms)
    print(line)
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("health", help="check that a broker or coordinator serves (exit 0/1)")
    hsub = p.add_subparsers(dest="component", required=True, metavar="COMPONENT")
    b = hsub.add_parser("broker", help="Metadata lists the broker and a controller")
    b.add_argument("--id", type=int, required=True, help="the broker's id")
    b.add_argument(
        "--bootstrap-server",
        default="localhost:9092",
        metavar="HOST:PORT",
        help="one of the broker's listeners",
    )
    c = hsub.add_parser("coordinator", help="the member serves and the ensemble has a leader")
    c.add_argument("--server", default="localhost:2181", metavar="HOST:PORT")
    c.add_argument(
        "--ensemble",
        default=None,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="every member; a follower is healthy only when one of them leads",
    )
    for q in (b, c):
        q.add_argument("--timeout-ms", type=int, default=5000)
        q.set_defaults(func=run_health)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m broker.health broker --id 1``: the same checks without loading the
    whole ``minibroker`` command (what the container health checks run)."""
    parser = argparse.ArgumentParser(prog="python -m broker.health")
    register_cli(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(["health", *(argv if argv is not None else sys.argv[1:])])
    try:
        return run_health(args)
    except MinibrokerError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
