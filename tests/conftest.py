"""Shared fixtures: a fresh two-namespace topology per test, and a clear skip
for namespace tests where they cannot run (the markers live in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from aioxdp.topology import Topology


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and veth pairs"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command (scripts/setup.sh installs it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _netns_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def topology() -> Iterator[Topology]:
    """Namespaces, veth and addresses up for the test; all removed afterwards."""
    with Topology() as topo:
        yield topo
