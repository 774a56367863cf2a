"""The admin client: topic lifecycle, descriptions, and per-topic errors."""

from __future__ import annotations

import pytest
import trio

from client import Admin, NewTopic, PartitionDescription
from client.aio import AsyncAdmin
from client.errors import (
    InvalidPartitionsError,
    NotControllerError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from client.types import BrokerDescription
from tests.client.fakebroker import running_cluster


async def test_topic_lifecycle() -> None:
    async with running_cluster(brokers=2) as cluster, AsyncAdmin(cluster.bootstrap) as admin:
        await admin.create_topics(
            [NewTopic("a", 3, 1, topic_configs={"retention.ms": "1000"}), NewTopic("b", 1, 2)]
        )
        assert await admin.list_topics() == ["a", "b"]
        (desc,) = await admin.describe_topics(["a"])
        assert desc.name == "a"
        assert desc.partitions[1] == PartitionDescription(1, 1, [1], [1])
        assert [d.name for d in await admin.describe_topics()] == ["a", "b"]
        configs = await admin.describe_configs(["a"])
        assert configs["a"]["retention.ms"] == "1000"
        assert "segment.bytes" in configs["a"]
        cluster_desc = await admin.describe_cluster()
        assert cluster_desc.cluster_id == "fake-cluster"
        assert cluster_desc.controller_id == 0
        assert [b.node_id for b in cluster_desc.brokers] == [0, 1]
        assert isinstance(cluster_desc.brokers[0], BrokerDescription)
        await admin.delete_topics(["a"])
        assert await admin.list_topics() == ["b"]


async def test_validate_only_creates_nothing() -> None:
    async with running_cluster() as cluster, AsyncAdmin(cluster.bootstrap) as admin:
        await admin.create_topics([NewTopic("a", 1, 1)], validate_only=True)
        assert await admin.list_topics() == []


async def test_errors_are_typed_and_name_the_topic() -> None:
    async with running_cluster(topics={"x": 1}) as cluster, AsyncAdmin(cluster.bootstrap) as admin:
        with pytest.raises(TopicAlreadyExistsError, match="'x'"):
            await admin.create_topics([NewTopic("x", 1, 1)])
        # several topics: all are tried, the first error is raised, the others are named
        with pytest.raises(InvalidPartitionsError, match="'bad'") as info:
            await admin.create_topics([NewTopic("ok", 1, 1), NewTopic("bad", 0, 1), NewTopic("x")])
        assert "'x'" in str(info.value)
        assert "ok" in await admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError, match="'nope'"):
            await admin.delete_topics(["nope"])
        with pytest.raises(UnknownTopicOrPartitionError, match="'nope'"):
            await admin.describe_topics(["nope"])
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.describe_configs(["nope"])


async def test_not_controller_is_retried() -> None:
    async with (
        running_cluster(brokers=2) as cluster,
        AsyncAdmin(cluster.bootstrap, retry_backoff_ms=1) as admin,
    ):
        real = cluster._create

        calls = []

        def first_refuses(req):  # type: ignore[no-untyped-def]
            calls.append(req)
            if len(calls) == 1:
                from proto.messages import CreatableTopicResult, CreateTopicsResponse

                return CreateTopicsResponse(
                    [CreatableTopicResult(t.name, NotControllerError.code) for t in req.topics]
                )
            return real(req)

        cluster._create = first_refuses  # type: ignore[method-assign]
        await admin.create_topics([NewTopic("a", 1, 1)])
        assert len(calls) == 2
        assert await admin.list_topics() == ["a"]


async def test_blocking_admin() -> None:
    async with running_cluster() as cluster:

        def work() -> list[str]:
            with Admin(bootstrap_servers=cluster.bootstrap) as admin:
                admin.create_topics([NewTopic("t", 2, 1)])
                with pytest.raises(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic("t", 2, 1)])
                assert len(admin.describe_topics(["t"])[0].partitions) == 2
                return admin.list_topics()

        assert await trio.to_thread.run_sync(work) == ["t"]
