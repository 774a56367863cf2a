"""Validating and stamping the batches of one ``Log.append`` call, before any write. Sans-IO.

``plan_append`` walks the input batch by batch (length, magic, CRC, ``max.message.bytes``),
patches offsets and the leader epoch (leader) or checks offset continuity (follower), and
works out what the append does to the producer state and the leader-epoch cache. Nothing
is written and no state changes until ``Log`` has written the buffer and commits the plan:
an append is all or nothing.

Idempotent batches of a leader append are checked against the producer state as the
earlier batches of the same call leave it. If every batch is a retried duplicate the plan
is a ``Duplicate`` (the original offsets, nothing to write); duplicates mixed with new
batches in one call are refused (``InvalidRecordError``): one response cannot report both,
and Kafka's producer never sends more than one batch per partition per request.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import crc32c

from broker.log.config import LogConfig
from broker.log.producer_state import Duplicate, ProducerAppend, ProducerStateManager
from broker.log.segment import BatchMeta
from proto.batch import CRC_START, iter_batches, set_base_offset, set_leader_epoch
from proto.errors import InvalidRecordError, MessageSizeTooLargeError

__all__ = ["AppendPlan", "plan_append"]

_MAX_TIMESTAMP = struct.Struct(">q")
_MAX_TIMESTAMP_POS = 35
_CRC = struct.Struct(">I")
_CRC_POS = 17


@dataclass(slots=True)
class AppendPlan:
    metas: list[BatchMeta]
    next_offset: int  # the log end offset after the append
    producers: ProducerAppend
    epochs: list[tuple[int, int]] = field(default_factory=list)  # (epoch, start offset)
    duplicate: Duplicate | None = None


def plan_append(
    buf: bytearray,
    config: LogConfig,
    producers: ProducerStateManager,
    *,
    first_offset: int,
    leader_epoch: int,
    assign_offsets: bool,
    now_ms: int,
) -> AppendPlan:
    """Validate and patch ``buf`` in place; raises before anything is written."""
    next_offset = first_offset
    # A follower keeps the leader's bytes (and so its append times) unchanged.
    append_time = config.log_append_time and assign_offsets
    staged = producers.begin()
    plan = AppendPlan([], first_offset, staged)
    duplicates: list[Duplicate] = []
    if assign_offsets and leader_epoch >= 0:
        plan.epochs.append((leader_epoch, first_offset))
    for pos, h in iter_batches(buf):
        if h.size > config.max_message_bytes:
            raise MessageSizeTooLargeError(
                f"batch of {h.size} bytes exceeds max.message.bytes {config.max_message_bytes}"
            )
        max_ts = now_ms if append_time else h.max_timestamp
        idempotent = h.producer_id >= 0
        if assign_offsets:
            if idempotent:
                verdict = staged.check(
                    h.producer_id, h.producer_epoch, h.base_sequence, h.record_count
                )
                if isinstance(verdict, Duplicate):
                    duplicates.append(verdict)
                    continue
            elif duplicates:
                raise _mixed(len(duplicates), 1)
            set_base_offset(buf, next_offset, pos)
            set_leader_epoch(buf, leader_epoch, pos)
        else:
            # A compacted leader log has offset gaps: offsets must only grow.
            if h.base_offset < next_offset:
                raise InvalidRecordError(
                    f"batch base offset {h.base_offset} is below the next offset {next_offset}"
                )
            next_offset = h.base_offset
            if h.leader_epoch >= 0 and (not plan.epochs or h.leader_epoch > plan.epochs[-1][0]):
                plan.epochs.append((h.leader_epoch, next_offset))
        if idempotent:
            staged.update_from_header(h, next_offset, max_ts)
        if append_time:
            _set_max_timestamp(buf, pos, h.size, now_ms)
        plan.metas.append(BatchMeta(pos, next_offset, h.size, max_ts))
        next_offset += h.record_count
    if duplicates:
        if plan.metas:
            raise _mixed(len(duplicates), len(plan.metas))
        plan.duplicate = Duplicate(
            duplicates[0].first_offset, duplicates[-1].last_offset, duplicates[-1].timestamp
        )
        plan.epochs = []
    plan.next_offset = next_offset
    return plan


def _mixed(duplicates: int, new: int) -> InvalidRecordError:
    return InvalidRecordError(
        f"{duplicates} retried duplicate batches mixed with {new} new ones in one append"
    )


def _set_max_timestamp(buf: bytearray, pos: int, size: int, timestamp: int) -> None:
    """LogAppendTime: stamp the batch's max timestamp. It is inside the CRC, so (unlike
    offsets) this costs one CRC pass over the batch."""
    _MAX_TIMESTAMP.pack_into(buf, pos + _MAX_TIMESTAMP_POS, timestamp)
    crc = crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size])
    _CRC.pack_into(buf, pos + _CRC_POS, crc)
