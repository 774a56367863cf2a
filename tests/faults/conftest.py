"""Fixtures of the process-level fault tests: 3 brokers on a 3-member coordinator ensemble.

Each test gets its own data dirs and ports; every process is stopped at the end (paused
ones are continued first, cut links healed) whatever the test did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.workload import fault_cluster
from tests.integration.cluster import LocalCluster


@pytest.fixture
def ensemble_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """3 brokers, 3 coordinators, no proxies: faults by signal only."""
    c = fault_cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def proxied_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """As ``ensemble_cluster``, each broker behind proxies (``isolate_broker``)."""
    c = fault_cluster(tmp_path, proxies=True)
    try:
        c.start()
        yield c
    finally:
        c.stop()
