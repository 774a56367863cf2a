"""The ensemble request processor driven by hand (sans-IO): one member, its own leader."""

from __future__ import annotations

import random
from pathlib import Path

from coordinator.config import CoordinatorConfig
from coordinator.consensus.host import EnsembleEngine
from coordinator.engine import Close, Connect, Output, Send
from proto.codec import unpackb
from proto.framing import FrameDecoder
from proto.zk import PROTOCOL_VERSION, ConnectRequest, ConnectResponse

WALL = 1_700_000_000_000
NEW_SESSION = ConnectRequest(PROTOCOL_VERSION, 0, 6000, 0, b"")


def leader_engine(tmp_path: Path) -> EnsembleEngine:
    config = CoordinatorConfig(
        id=1, data_dir=tmp_path, peers={1: ("127.0.0.1", 1)},
        election_timeout_ms=300, heartbeat_interval_ms=50,
    )  # fmt: skip
    engine = EnsembleEngine(config, now_ms=0, wall_ms=WALL, rng=random.Random(1))
    out: list[Output] = []
    engine.tick(1000, WALL, out)
    engine.flush(1000, WALL, out)
    assert engine.node.is_leader
    return engine


def step(engine: EnsembleEngine, items: list[Connect]) -> list[Output]:
    out = engine.process(items, now_ms=1000, wall_ms=WALL)
    engine.flush(1000, WALL, out)
    return out


def connect_response(out: list[Output], conn_id: int) -> ConnectResponse:
    (send,) = [o for o in out if isinstance(o, Send) and o.conn_id == conn_id]
    decoder = FrameDecoder(1 << 20)
    decoder.receive_data(send.frame)
    frame = decoder.next_frame()
    assert frame is not None
    timeout_ms, session_id, password = unpackb(frame)[1:]
    return ConnectResponse(PROTOCOL_VERSION, timeout_ms, session_id, password)


def test_a_session_created_for_a_closed_connection_is_not_bound(tmp_path: Path) -> None:
    engine = leader_engine(tmp_path)
    out = engine.process([Connect(7, NEW_SESSION)], now_ms=1000, wall_ms=WALL)
    assert not out  # the reply waits for the create_session entry to apply
    engine.connection_closed(7)  # the client went away meanwhile
    out = []
    engine.flush(1000, WALL, out)
    assert engine.session_of(7) is None
    assert [o for o in out if o.conn_id == 7] == []
    engine.close()


def test_a_reconnect_from_a_closed_connection_does_not_move_the_session(
    tmp_path: Path,
) -> None:
    engine = leader_engine(tmp_path)
    response = connect_response(step(engine, [Connect(1, NEW_SESSION)]), 1)
    sid = response.session_id
    assert engine.session_of(1) == sid
    resume = ConnectRequest(PROTOCOL_VERSION, 0, 6000, sid, response.password)
    engine.process([Connect(2, resume)], now_ms=1000, wall_ms=WALL)
    engine.connection_closed(2)  # before the revalidation came back
    out: list[Output] = []
    engine.flush(1000, WALL, out)
    assert engine.session_of(2) is None
    assert engine.session_of(1) == sid  # not closed as "session_moved"
    assert not [o for o in out if isinstance(o, Close)]
    # A live reconnect does move it.
    out = step(engine, [Connect(3, resume)])
    assert connect_response(out, 3).session_id == sid
    assert Close(1, "session_moved") in out
    engine.close()
