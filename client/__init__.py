"""minibroker's Python client: blocking clients here, trio ones in ``client.aio``.

Names and settings follow kafka-python. Errors live in ``client.errors``.
"""

from client.accumulator import FutureRecordMetadata
from client.sync import Admin, Consumer, Producer
from client.types import (
    BrokerDescription,
    ClusterDescription,
    ConsumerRecord,
    NewTopic,
    OffsetAndTimestamp,
    PartitionDescription,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "Consumer",
    "ConsumerRecord",
    "FutureRecordMetadata",
    "NewTopic",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
