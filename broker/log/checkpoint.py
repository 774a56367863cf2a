"""Offset checkpoint files of a log dir, in Kafka's text format, written atomically.

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
from collections.abc import Mapping
from pathlib import Path

from proto.errors import KafkaStorageError

__all__ = ["CHECKPOINT_VERSION", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_VERSION = 0


def write_checkpoint(path: Path, offsets: Mapping[tuple[str, int], int]) -> None:
    lines = [str(CHECKPOINT_VERSION), str(len(offsets))]
    lines += [f"{topic} {partition} {offset}" for (topic, partition), offset in offsets.items()]
    data = ("\n".join(lines) + "\n").encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KafkaStorageError(f"cannot write checkpoint {path}: {exc}") from exc


def read_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """The checkpoint's entries; {} if the file does not exist. A malformed file raises
    KafkaStorageError (callers treat it as "recover everything")."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KafkaStorageError(f"cannot read checkpoint {path}: {exc}") from exc
    lines = text.splitlines()
    try:
        if len(lines) < 2 or int(lines[0]) != CHECKPOINT_VERSION:
            raise ValueError(f"unknown version line {lines[:1]!r}")
        count = int(lines[1])
        entries = lines[2:]
        if count != len(entries):
            raise ValueError(f"header says {count} entries, found {len(entries)}")
        out: dict[tuple[str, int], int] = {}
        for line in entries:
            topic, partition, offset = line.split(" ")
            out[(topic, int(partition))] = int(offset)
    except ValueError as exc:
        raise KafkaStorageError(f"malformed checkpoint {path}: {exc}") from exc
    return out
