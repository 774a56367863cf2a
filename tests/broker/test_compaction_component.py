"""A running broker compacts a ``cleanup.policy=compact`` topic by itself (the cleaner task in
broker/server.py): below the high watermark, in closed segments, only the last value of each
key survives, at its original offset; replicas compact their own copies."""

from __future__ import annotations

from pathlib import Path

import trio

from proto import messages as m
from proto.batch import BatchBuilder, records_of
from proto.codec import FileRecords
from tests.broker.test_replication_component import (
    cluster3,
    create_topic,
    fetch,
    fetched,
    produce,
    produced,
)

KEYS = 10
ROUNDS = 30


def keyed(round_: int) -> bytes:
    b = BatchBuilder()
    for k in range(KEYS):
        b.append(b"r%03d" % round_, key=b"k%02d" % k)
    return b.build()


def bytes_of(resp: m.FetchPartitionResponse) -> bytes:
    assert not isinstance(resp.records, FileRecords)  # decoded from the wire
    return bytes(resp.records or b"")


async def test_a_compacted_topic_keeps_the_last_value_per_key(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    configs = {"cleanup.policy": "compact", "segment.bytes": "1024", "min.insync.replicas": "2"}
    async with cluster3(tmp_path) as (cluster, _zk):
        leader, _replicas = await create_topic(await cluster.wire(1), configs=configs)
        wire = await cluster.wire(leader)
        offsets = []
        for r in range(ROUNDS):
            resp = produced(await wire.call(produce(keyed(r), acks=-1)))
            assert resp.error_code == 0
            offsets.append(resp.base_offset)
        await trio.sleep(60)  # a few cleaner backoffs (autojump clock)
        got = []
        offset = 0
        while True:
            part = fetched(await wire.call(fetch(offset)))
            assert part.error_code == 0
            rows = [(r.offset, r.key, r.value) for r in records_of(bytes_of(part))]
            if not rows:
                break
            got += rows
            offset = rows[-1][0] + 1
    produced_total = ROUNDS * KEYS
    assert len(got) < produced_total // 2, "nothing was compacted"
    assert [o for o, _, _ in got] == sorted({o for o, _, _ in got})  # offsets grow, no dupes
    last: dict[bytes, bytes] = {}
    for _o, key, value in got:
        assert key is not None and value is not None
        last[key] = value
    # Every key's latest value survived.
    assert last == {b"k%02d" % k: b"r%03d" % (ROUNDS - 1) for k in range(KEYS)}
    # The last round (in the active segment, or the last cleaned one) is whole.
    assert [o for o, _, _ in got[-KEYS:]] == list(range(offsets[-1], offsets[-1] + KEYS))
