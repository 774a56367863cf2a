"""Malformed, unknown and oversized frames close one connection; the broker serves on."""

from __future__ import annotations

import socket
import struct

import msgpack

from client import Admin
from proto.connection import ClientConnection
from proto.errors import UnsupportedVersionError
from proto.messages import MetadataRequest, MetadataResponse
from tests.integration.cluster import LocalCluster


def _connect(cluster: LocalCluster) -> socket.socket:
    port = next(iter(cluster.broker_ports.values()))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _read_until_closed(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _metadata_still_works(cluster: LocalCluster) -> None:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        assert admin.describe_cluster().brokers


def test_garbage_frame_closes_only_that_connection(cluster: LocalCluster) -> None:
    bystander = _connect(cluster)
    with _connect(cluster) as s:
        s.sendall(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        assert _read_until_closed(s) == b""
    # The other connection still gets answers.
    conn = ClientConnection("bystander")
    _cid, frame = conn.send_request(MetadataRequest(None))
    bystander.sendall(frame)
    event = None
    while event is None:
        conn.receive_data(bystander.recv(65536))
        event = conn.next_event()
    assert isinstance(event.response, MetadataResponse)
    bystander.close()
    _metadata_still_works(cluster)


def test_unknown_api_gets_an_error_response_then_close(cluster: LocalCluster) -> None:
    with _connect(cluster) as s:
        body = msgpack.packb([999, 0, 42, "probe", []])
        s.sendall(struct.pack(">I", len(body)) + body)
        data = _read_until_closed(s)
    (size,) = struct.unpack(">I", data[:4])
    assert msgpack.unpackb(data[4 : 4 + size]) == [42, UnsupportedVersionError.code, None]
    _metadata_still_works(cluster)


def test_oversized_frame_is_refused_before_its_body(cluster: LocalCluster) -> None:
    with _connect(cluster) as s:
        s.sendall(struct.pack(">I", 2**31 - 1) + b"x" * 100)
        assert _read_until_closed(s) == b""
    _metadata_still_works(cluster)


def test_wrong_message_shape_closes_connection(cluster: LocalCluster) -> None:
    with _connect(cluster) as s:
        body = msgpack.packb([3, 0, 1, "probe", ["not", "a", "metadata", "request"]])
        s.sendall(struct.pack(">I", len(body)) + body)
        assert _read_until_closed(s) == b""
    _metadata_still_works(cluster)
