"""pytest-asyncio support: run your own async tests on the aioxdp stack.

Enable it in a conftest.py (or with ``pytest -p aioxdp.pytest_plugin``)::

    pytest_plugins = ["aioxdp.pytest_plugin"]

Then every async test runs on an aioxdp loop (pytest-asyncio's
``pytest_asyncio_loop_factories`` hook; the base loop follows ``AIOXDP_LOOP``),
and the ``xdp_topology`` fixture gives a test a throwaway pair of network
namespaces joined by a veth, with the test itself running in the server
namespace and ``AIOXDP_INTERFACE`` pointing at its end::

    async def test_hello(xdp_topology):
        server = await asyncio.start_server(handle, xdp_topology.server_ip, 8080)
        ...  # drive it with xdp_topology.exec(xdp_topology.client_ns, "curl", ...)

With pytest-asyncio older than 1.1, which has no such hook, override the
``event_loop_policy`` fixture instead::

    @pytest.fixture(scope="session")
    def event_loop_policy():
        return aioxdp.EventLoopPolicy()

The fixture needs root (namespaces, XDP). Addresses are 198.18.0.0/15 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest

from .loop import new_event_loop
from .topology import Topology


def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], object]]:
    return {"aioxdp": new_event_loop}


@pytest.fixture
def xdp_topology(monkeypatch: pytest.MonkeyPatch) -> Iterator[Topology]:
    """A two-namespace veth topology; the test runs inside its server namespace."""
    with Topology() as topo, topo.server():
        monkeypatch.setenv("AIOXDP_INTERFACE", topo.server_if)
        yield topo
