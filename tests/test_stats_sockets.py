"""Every stack serves its stats socket, however its loop was made, and two stacks on
interfaces of one name in two network namespaces are both seen by ``aioxdp stats``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioxdp import statsserver
from aioxdp.topology import Topology

from .stackhelpers import peer_python, run_on_stack

pytestmark = pytest.mark.netns

PORT = 8000

# a stack on AIOXDP_INTERFACE, its loop made the way argv[1] says, serving an echo on
# argv[2]; it says "ready", then runs until its stdin closes (at most a minute)
STACK_PROCESS = textwrap.dedent("""
    import asyncio, sys
    import aioxdp

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, sys.argv[2], 8000)
        print("ready", flush=True)
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        await asyncio.wait_for(stdin.read(), 60)
        server.close()

    if sys.argv[1] == "install":
        aioxdp.install()
        asyncio.run(main())
    else:
        loop = aioxdp.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
""")

ECHO_ONCE = """
    import socket, sys
    s = socket.create_connection((sys.argv[1], 8000), timeout=10)
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    print("ok")
"""

CONNECT_ONCE = """
    import socket, sys
    socket.create_connection((sys.argv[1], 8000), timeout=10).close()
"""


@dataclasses.dataclass
class SameNameTopology(Topology):
    """A topology whose server interface has a given name, not one of its own prefix."""

    server_name: str = "axstats0"

    @property
    def server_if(self) -> str:
        return self.server_name


@pytest.fixture
def two_namespaces() -> Iterator[tuple[Topology, Topology]]:
    name = f"axst{os.getpid() % 100000}"
    with SameNameTopology(server_name=name) as one, SameNameTopology(server_name=name) as two:
        assert one.server_if == two.server_if and one.server_ns != two.server_ns
        yield one, two


def test_two_namespaces_same_interface_name_both_served(
        two_namespaces: tuple[Topology, Topology]) -> None:
    topologies = two_namespaces
    name = topologies[0].server_if
    procs = [subprocess.Popen(["ip", "netns", "exec", topo.server_ns, sys.executable, "-c",
                               STACK_PROCESS, how, topo.server_ip],
                              env={**os.environ, "AIOXDP_INTERFACE": name},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for topo, how in zip(topologies, ("install", "new_event_loop"), strict=True)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for topo in topologies:  # something for the counters
            out = subprocess.run(["ip", "netns", "exec", topo.client_ns, sys.executable, "-c",
                                  textwrap.dedent(ECHO_ONCE), topo.server_ip],
                                 capture_output=True, text=True, timeout=30)
            assert out.stdout == "ok\n", out.stderr
        snapshots, problems = statsserver.query_all(name)
        assert problems == []
        by_netns = {snap["netns"]: snap for snap in snapshots}
        assert set(by_netns) == {topo.server_ns for topo in topologies}
        for topo, proc in zip(topologies, procs, strict=True):
            snap = by_netns[topo.server_ns]
            assert snap["pid"] == proc.pid and snap["running"]
            assert snap["xdp"]["redirected"] > 0
            path = statsserver.socket_path(name, 0, netns=topo.server_ns)
            assert statsserver.query(path)["pid"] == proc.pid
        listed = subprocess.run([sys.executable, "-m", "aioxdp", "stats", "--json",
                                 "--interface", name], capture_output=True, text=True,
                                timeout=30)
        assert sorted(snap["pid"] for snap in json.loads(listed.stdout)) == sorted(
            proc.pid for proc in procs)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        statuses = [proc.wait(timeout=30) for proc in procs]
    assert statuses == [0, 0]
    assert statsserver.stats_sockets(name) == []  # each removed its own on the way out


@pytest.mark.parametrize("stats", [True, False])
def test_stats_socket_of_aioxdp_run_and_its_opt_out(topology: Topology, stats: bool) -> None:
    async def main() -> tuple[Path, bool]:
        server = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, topology.server_ip, PORT)
        async with server:
            path = statsserver.socket_path(topology.server_if, 0)  # this thread's namespace
            served = path.exists()
            if served:
                snap = await asyncio.to_thread(statsserver.query, path)
                assert snap["pid"] == os.getpid() and snap["netns"] == topology.server_ns
            await peer_python(topology, """
                import socket, sys
                socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
            """, topology.server_ip, str(PORT))
        return path, served

    path, served = run_on_stack(topology, main, stats=stats)
    assert served is stats
    assert not path.exists()  # removed when the loop closed


def test_a_new_stack_sweeps_stats_sockets_nothing_listens_on(topology: Topology) -> None:
    """Sockets left by stacks that are gone (SIGKILL, or a signal raised inside a running
    loop, as uvicorn does after its graceful shutdown) are removed by the next stack;
    a live one, and one too young to tell from a socket being set up, stay."""
    stats_dir = statsserver.STATS_DIR
    stats_dir.mkdir(parents=True, exist_ok=True)
    tag = f"axsweep{os.getpid()}"
    dead, young, live = (stats_dir / f"{tag}{n}-0@1.sock" for n in ("d", "y", "l"))
    for path in (dead, young):  # bound and closed: the file stays, nobody listens
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(path))
    old = time.time() - 2 * statsserver.STALE_AFTER
    os.utime(dead, (old, old))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(live))
        listener.listen(1)
        os.utime(live, (old, old))

        async def main() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(asyncio.Protocol, topology.server_ip, PORT)
            async with server:  # one connection, so that the stack is seen in use
                await peer_python(topology, CONNECT_ONCE, topology.server_ip)

        run_on_stack(topology, main)
        assert not dead.exists()
        assert young.exists() and live.exists()
    finally:
        listener.close()
        for path in (dead, young, live):
            path.unlink(missing_ok=True)
