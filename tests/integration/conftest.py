from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=1).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, brokers=3).start()
    try:
        yield c
    finally:
        c.stop()
