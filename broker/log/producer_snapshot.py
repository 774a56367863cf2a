"""Producer-state snapshots and the producer state's recovery for one partition directory.

Like Kafka, a snapshot ``<offset>.snapshot`` (20 digits, as segments) holds the producer
state as of ``offset`` (the log end offset when it was taken): one at each segment roll
and one at close. Opening a log loads the newest snapshot at or below the log end offset
and at or above the log start offset, then replays batch headers from there, so restart
time is bounded by one segment's headers, not the log's. Without a usable snapshot the
state is rebuilt from every batch header of the log (one 61-byte ``pread`` per batch, no
record is read).

File format: CRC-32C (4 bytes, big-endian) of the rest, then msgpack
``[version, offset, [[producer_id, epoch, [[first_seq, last_seq, first_offset,
last_offset, timestamp], ...]], ...]]``. Roll-time snapshots are not fsynced (segments are
not either): a torn or empty one fails its CRC and is ignored in favour of an older one or
a rebuild. The one written at close is fsynced.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import crc32c
import msgpack

from broker.log.checkpoint import write_file_atomically
from broker.log.producer_state import BatchMetadata, ProducerEntry, ProducerStateManager
from proto.batch import BatchHeader
from proto.errors import KafkaStorageError

__all__ = [
    "SNAPSHOT_SUFFIX",
    "delete_snapshots",
    "load_producer_state",
    "read_snapshot",
    "snapshot_offsets",
    "snapshot_path",
    "write_snapshot",
]

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
_CRC = struct.Struct(">I")


def snapshot_path(dir: Path, offset: int) -> Path:
    return dir / f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offsets(dir: Path) -> list[int]:
    out = []
    for entry in os.scandir(dir):
        stem, _dot, suffix = entry.name.partition(".")
        if "." + suffix == SNAPSHOT_SUFFIX and len(stem) == 20 and stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def write_snapshot(
    dir: Path, offset: int, producers: Mapping[int, ProducerEntry], *, fsync: bool
) -> None:
    body = msgpack.packb(
        [
            SNAPSHOT_VERSION,
            offset,
            [
                [e.producer_id, e.producer_epoch, [list(_fields(b)) for b in e.batches]]
                for e in producers.values()
            ],
        ]
    )
    write_file_atomically(
        snapshot_path(dir, offset), _CRC.pack(crc32c.crc32c(body)) + body, fsync=fsync
    )


def _fields(b: BatchMetadata) -> tuple[int, int, int, int, int]:
    return b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp


def read_snapshot(path: Path) -> list[ProducerEntry]:
    """The producers of a snapshot file; KafkaStorageError if it is unreadable or corrupt."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KafkaStorageError(f"cannot read {path}: {exc}") from exc
    if len(data) < _CRC.size or _CRC.unpack_from(data)[0] != crc32c.crc32c(data[_CRC.size :]):
        raise KafkaStorageError(f"producer snapshot {path} fails its CRC")
    try:
        version, offset, producers = msgpack.unpackb(data[_CRC.size :])
        if version != SNAPSHOT_VERSION or offset != int(path.name[:20]):
            raise ValueError(f"version {version}, offset {offset}")
        return [_entry(p) for p in producers]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise KafkaStorageError(f"malformed producer snapshot {path}: {exc}") from exc


def _entry(raw: Any) -> ProducerEntry:
    pid, epoch, batches = raw
    if any(len(fields) != 5 for fields in batches):
        raise ValueError(f"producer {pid}: batch entries need 5 fields")
    metas = tuple(BatchMetadata(*(int(f) for f in fields)) for fields in batches)
    if not metas:
        raise ValueError(f"producer {pid} without batches")
    return ProducerEntry(int(pid), int(epoch), metas)


def delete_snapshots(dir: Path, *, below: int | None = None, above: int | None = None) -> int:
    """Unlink snapshots whose offset is < ``below`` or > ``above``; returns how many."""
    gone = 0
    for offset in snapshot_offsets(dir):
        if (below is not None and offset < below) or (above is not None and offset > above):
            snapshot_path(dir, offset).unlink(missing_ok=True)
            gone += 1
    return gone


def load_producer_state(
    dir: Path,
    *,
    log_start_offset: int,
    log_end_offset: int,
    headers_from: Callable[[int], Iterable[BatchHeader]],
    log: Any,
) -> tuple[ProducerStateManager, int]:
    """The producer state at ``log_end_offset``: the newest usable snapshot plus a replay
    of the headers after it, or a replay of the whole log. Snapshots past the log end
    (a truncated tail) and corrupt ones are deleted. Returns the state and the offset the
    replay started from. ``log`` is a bound structlog logger."""
    delete_snapshots(dir, above=log_end_offset)
    for offset in reversed(snapshot_offsets(dir)):
        if offset < log_start_offset:
            break
        try:
            entries = read_snapshot(snapshot_path(dir, offset))
        except KafkaStorageError as exc:
            log.warning("producer_snapshot_ignored", offset=offset, error=str(exc))
            snapshot_path(dir, offset).unlink(missing_ok=True)
            continue
        state = ProducerStateManager(entries)
        state.truncate_head(log_start_offset)
        state.replay(headers_from(offset))
        return state, offset
    state = ProducerStateManager()
    state.replay(headers_from(log_start_offset))
    return state, log_start_offset
