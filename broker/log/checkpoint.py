"""Checkpoint files (recovery points, leader epochs), in Kafka's text format, written atomically.

Format (Kafka's ``OffsetCheckpointFile``)::

    0                   version
    2                   number of entries
    orders 0 1234       topic partition offset
    orders 1 99

A write goes to ``<name>.tmp``, is fsynced, renamed over the file and the directory is
fsynced, so a crash leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from proto.errors import KafkaStorageError

__all__ = [
    "CHECKPOINT_VERSION",
    "fsync_dir",
    "read_checkpoint",
    "read_checkpoint_entries",
    "write_checkpoint",
    "write_checkpoint_entries",
    "write_file_atomically",
]

CHECKPOINT_VERSION = 0


def write_checkpoint(path: Path, offsets: Mapping[tuple[str, int], int]) -> None:
    lines = [f"{topic} {partition} {offset}" for (topic, partition), offset in offsets.items()]
    write_checkpoint_entries(path, lines)


def write_checkpoint_entries(path: Path, entries: Sequence[str]) -> None:
    """Kafka's checkpoint text format (version, count, one entry per line), atomically."""
    lines = [str(CHECKPOINT_VERSION), str(len(entries)), *entries]
    write_file_atomically(path, ("\n".join(lines) + "\n").encode())


def write_file_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``<path>.tmp`` and rename it over ``path``. With ``fsync`` the
    file and the directory are fsynced: a crash leaves the old or the new file. Without,
    a crash may leave an empty or torn file: only for files a reader can validate."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except OSError as exc:
        raise KafkaStorageError(f"cannot write checkpoint {path}: {exc}") from exc


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that entries created, renamed or removed in it persist."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint_entries(path: Path) -> list[str] | None:
    """The entry lines of a checkpoint file; None if it does not exist. A malformed file
    (version, count) raises KafkaStorageError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaStorageError(f"cannot read checkpoint {path}: {exc}") from exc
    lines = text.splitlines()
    try:
        if len(lines) < 2 or int(lines[0]) != CHECKPOINT_VERSION:
            raise ValueError(f"unknown version line {lines[:1]!r}")
        count = int(lines[1])
        if count != len(lines) - 2:
            raise ValueError(f"header says {count} entries, found {len(lines) - 2}")
    except ValueError as exc:
        raise KafkaStorageError(f"malformed checkpoint {path}: {exc}") from exc
    return lines[2:]


def read_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """The checkpoint's entries; {} if the file does not exist. A malformed file raises
    KafkaStorageError (callers treat it as "recover everything")."""
    entries = read_checkpoint_entries(path)
    out: dict[tuple[str, int], int] = {}
    try:
        for line in entries or ():
            topic, partition, offset = line.split(" ")
            out[(topic, int(partition))] = int(offset)
    except ValueError as exc:
        raise KafkaStorageError(f"malformed checkpoint {path}: {exc}") from exc
    return out
