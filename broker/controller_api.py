"""The controller's requests on the wire: ControlledShutdown (api 7) and ElectLeaders (43).

Any broker receives them; only the controller serves them (the others answer
NOT_CONTROLLER, as Kafka's ZooKeeper-mode brokers do, and the sender finds the controller in
metadata). These functions turn a request into ``Controller`` calls and the outcome into a
response; request-level failures become the response's error code, never an exception.
"""

from __future__ import annotations

from broker.controller import Controller
from proto import messages as m
from proto.errors import (
    BrokerResponseError,
    InvalidRequestError,
    NotControllerError,
)


def _not_controller() -> NotControllerError:
    return NotControllerError("this broker is not the controller")


async def controlled_shutdown(
    controller: Controller | None, req: m.ControlledShutdownRequest
) -> m.ControlledShutdownResponse:
    try:
        if controller is None:
            raise _not_controller()
        remaining = await controller.controlled_shutdown(req.broker_id, req.broker_epoch)
    except BrokerResponseError as exc:
        return m.ControlledShutdownResponse(exc.code, [], exc.message)
    return m.ControlledShutdownResponse(0, [m.TopicPartitionRef(t, p) for t, p in remaining])


async def elect_leaders(
    controller: Controller | None, req: m.ElectLeadersRequest
) -> m.ElectLeadersResponse:
    try:
        if controller is None:
            raise _not_controller()
        if req.election_type != m.PREFERRED_ELECTION:
            raise InvalidRequestError(
                f"election type {req.election_type} is not supported (only 0, preferred)"
            )
        keys = (
            None
            if req.topic_partitions is None
            else [(t.topic, p) for t in req.topic_partitions for p in t.partitions]
        )
        results = await controller.elect_preferred(keys, max(req.timeout_ms, 0) / 1000)
    except BrokerResponseError as exc:
        return m.ElectLeadersResponse(exc.code, [], error_message=exc.message)
    by_topic: dict[str, list[m.PartitionElectionResult]] = {}
    for (topic, partition), error in results.items():
        by_topic.setdefault(topic, []).append(
            m.PartitionElectionResult(partition, 0, None)
            if error is None
            else m.PartitionElectionResult(partition, error.code, error.message)
        )
    return m.ElectLeadersResponse(
        0, [m.ReplicaElectionResult(t, parts) for t, parts in sorted(by_topic.items())]
    )
