"""Producer ids for InitProducerId, reserved in blocks through the coordinator.

Kafka's ``ZkProducerIdManager``: the znode ``/latest_producer_id_block`` holds the last
block any broker reserved, as JSON ``{"version":1,"broker":<id>,"block_start":"<first>",
"block_end":"<last>"}`` (the bounds are strings, as Kafka writes them). A broker that has
used up its block reads the znode and writes the next block with a compare-and-set on the
znode's version; a BadVersion (another broker took a block meanwhile) reads again. So
every id is handed out once in the whole cluster, whichever broker a producer asks, and a
broker that restarts or loses its session simply abandons the rest of its block.

``ProducerIdBlock`` and its JSON are pure; ``ProducerIdManager`` does the coordinator I/O
and never logs anything but the reservation of a block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
import trio

from broker import zk_layout as zl
from coordinator.client import CoordinatorClient
from proto.errors import (
    BadVersionError,
    ConnectionLossError,
    CoordinatorNotAvailableError,
    InvalidRequestError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    UnknownServerError,
)

__all__ = ["PRODUCER_ID_BLOCK_SIZE", "ProducerIdBlock", "ProducerIdManager"]

log = structlog.get_logger("broker.producer_ids")

PRODUCER_ID_BLOCK_SIZE = 1000  # Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE
MAX_PRODUCER_ID = 2**63 - 1
BLOCK_VERSION = 1

# The coordinator is unreachable for now: the producer should retry (COORDINATOR_NOT_AVAILABLE).
_UNAVAILABLE = (ConnectionLossError, OperationTimeoutError, SessionMovedError, SessionExpiredError)


@dataclass(frozen=True, slots=True)
class ProducerIdBlock:
    """Producer ids ``first..last`` (inclusive), reserved by ``broker_id``."""

    broker_id: int
    first: int
    last: int

    @classmethod
    def first_block(cls, broker_id: int, size: int = PRODUCER_ID_BLOCK_SIZE) -> ProducerIdBlock:
        return cls(broker_id, 0, size - 1)

    def next_block(self, broker_id: int, size: int = PRODUCER_ID_BLOCK_SIZE) -> ProducerIdBlock:
        if self.last > MAX_PRODUCER_ID - size:
            raise UnknownServerError(f"producer ids exhausted (last block ends at {self.last})")
        return ProducerIdBlock(broker_id, self.last + 1, self.last + size)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "version": BLOCK_VERSION,
                "broker": self.broker_id,
                "block_start": str(self.first),
                "block_end": str(self.last),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ProducerIdBlock | None:
        """The block in the znode; None when it is empty (Kafka creates it so)."""
        if not data:
            return None
        path = zl.LATEST_PRODUCER_ID_BLOCK
        try:
            obj = json.loads(data)
            first, last = int(obj["block_start"]), int(obj["block_end"])
            broker = int(obj["broker"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise InvalidRequestError(f"znode {path} holds no producer id block: {exc}") from exc
        if not 0 <= first <= last:
            raise InvalidRequestError(f"znode {path} holds the empty block {first}..{last}")
        return cls(broker, first, last)


class ProducerIdManager:
    """Hands out this broker's producer ids, reserving a new block when one runs out."""

    def __init__(
        self, broker_id: int, zk: CoordinatorClient, block_size: int = PRODUCER_ID_BLOCK_SIZE
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.broker_id = broker_id
        self.zk = zk
        self.block_size = block_size
        self._next = 0
        self._block: ProducerIdBlock | None = None
        self._lock = trio.Lock()  # one reservation at a time; callers queue behind it

    async def generate(self) -> int:
        """A producer id no broker has handed out before. Raises
        CoordinatorNotAvailableError while the coordinator is unreachable."""
        async with self._lock:
            if self._block is None or self._next > self._block.last:
                try:
                    self._block = await self._reserve_block()
                except _UNAVAILABLE as exc:
                    raise CoordinatorNotAvailableError(
                        f"cannot reserve producer ids: {exc}"
                    ) from exc
                self._next = self._block.first
            pid = self._next
            self._next += 1
            return pid

    async def _reserve_block(self) -> ProducerIdBlock:
        path = zl.LATEST_PRODUCER_ID_BLOCK
        while True:
            try:
                data, stat = await self.zk.get(path)
            except NoNodeError:
                block = ProducerIdBlock.first_block(self.broker_id, self.block_size)
                try:
                    await self.zk.create(path, block.encode())
                except NodeExistsError:
                    continue  # another broker created it first: read theirs
                break
            current = ProducerIdBlock.decode(data)
            if current is None:
                block = ProducerIdBlock.first_block(self.broker_id, self.block_size)
            else:
                block = current.next_block(self.broker_id, self.block_size)
            try:
                await self.zk.set(path, block.encode(), stat.version)
            except BadVersionError:
                continue  # another broker took the next block: take the one after
            break
        log.info(
            "producer_id_block_reserved",
            broker_id=self.broker_id,
            block_start=block.first,
            block_end=block.last,
        )
        return block
