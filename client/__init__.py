"""minibroker's Python client: blocking clients here, trio ones in ``client.aio``.

Names and settings follow kafka-python. Errors live in ``client.errors``.
"""

from client.accumulator import FutureRecordMetadata
from client.group.listener import ConsumerRebalanceListener
from client.sync import Admin, Consumer, Producer
from client.types import (
    BrokerDescription,
    ClusterDescription,
    ConsumerGroupDescription,
    ConsumerGroupListing,
    ConsumerRecord,
    GroupMemberDescription,
    GroupPartitionOffsets,
    NewTopic,
    OffsetAndMetadata,
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
    "ConsumerGroupDescription",
    "ConsumerGroupListing",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "FutureRecordMetadata",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
    "NewTopic",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
