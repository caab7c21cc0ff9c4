"""aioxdp.pytest_plugin: a user's own async tests run on the aioxdp loop, on a topology."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.netns

USER_TESTS = '''
import asyncio
import sys

from aioxdp.loop import _XdpLoopMixin
from aioxdp.transport import XdpServer

pytest_plugins = ["aioxdp.pytest_plugin"]


async def handle(reader, writer):
    writer.write((await reader.readline()).upper())
    await writer.drain()
    writer.close()


async def test_served_on_the_bypass_stack(xdp_topology):
    loop = asyncio.get_running_loop()
    assert isinstance(loop, _XdpLoopMixin)
    server = await asyncio.start_server(handle, xdp_topology.server_ip, 7000)
    assert isinstance(server, XdpServer)
    async with server:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", xdp_topology.client_ns, sys.executable, "-c",
            "import socket; s = socket.create_connection(('198.18.0.1', 7000), timeout=10);"
            "s.sendall(b'ping\\\\n'); print(s.recv(100).decode().strip())",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
    assert out.strip() == b"PING"
    assert loop.xdp_stack.program.counters()["redirected"] > 0
'''


def test_user_async_tests_run_on_aioxdp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto", "-q")
    result.assert_outcomes(passed=1)
