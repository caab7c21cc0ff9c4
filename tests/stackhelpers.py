"""Run coroutines on an aioxdp loop inside a topology's server namespace, and
drive real Linux peers (python, curl, wrk) in the client namespace."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aioxdp
from aioxdp.loop import _XdpLoopMixin, loop_class
from aioxdp.topology import Topology

T = TypeVar("T")

BASE_LOOPS = ["asyncio", "uvloop"]


def run_on_stack(topo: Topology, main: Callable[[], Awaitable[T]], *, loop: str = "asyncio",
                 timeout: float = 120.0, **settings: Any) -> T:
    """Run ``main()`` on a fresh aioxdp loop bound to the topology's server interface.

    The loop fails the test on any call to its exception handler, as uvloop's
    test base does: an exception a callback swallowed is a bug.
    """
    errors: list[dict[str, Any]] = []

    async def guarded() -> T:
        running = asyncio.get_running_loop()
        assert isinstance(running, _XdpLoopMixin)
        assert isinstance(running, loop_class(loop))
        running.set_exception_handler(lambda _loop, context: errors.append(context))
        result = await asyncio.wait_for(main(), timeout)
        stack = running.xdp_stack
        assert stack is not None, "nothing went through the bypass stack"
        assert stack.program.counters()["redirected"] > 0, "XDP redirected nothing to the stack"
        return result

    with topo.server():
        result = aioxdp.run(guarded(), interface=topo.server_if, loop=loop, **settings)
    assert not errors, f"exception handler called: {errors}"
    return result


async def peer(topo: Topology, *cmd: str, stdin: bytes | None = None,
               timeout: float = 60.0, check: bool = True) -> tuple[int, bytes, bytes]:
    """Run a command in the client namespace; returns (returncode, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topo.client_ns, *cmd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {proc.returncode}: {err.decode(errors='replace')}")
    return proc.returncode, out, err


async def peer_python(topo: Topology, source: str, *args: str, stdin: bytes | None = None,
                      timeout: float = 60.0, check: bool = True) -> tuple[int, bytes, bytes]:
    """Run a Python snippet (kernel sockets, or aiohttp's client) in the client namespace."""
    return await peer(topo, sys.executable, "-c", textwrap.dedent(source), *args,
                      stdin=stdin, timeout=timeout, check=check)


async def peer_server(topo: Topology, source: str, port: int,
                      *args: str) -> asyncio.subprocess.Process:
    """Start a Python kernel server in the client namespace and wait until it listens."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", topo.client_ns, sys.executable, "-c", textwrap.dedent(source),
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    for _ in range(200):
        code, out, _err = await peer(topo, "ss", "-Hltn", f"sport = :{port}", check=False)
        if out.strip():
            return proc
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    proc.kill()
    _out, err = await proc.communicate()
    raise AssertionError(f"peer server on port {port} did not start: {err.decode()}")


# A kernel client in the peer namespace that reads a stream to its end and prints
# "<bytes> <sha256>" (argv: address, port)
HASHING_READER = """
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
h, n = hashlib.sha256(), 0
while data := s.recv(1 << 16):
    h.update(data)
    n += len(data)
print(n, h.hexdigest())
"""


class Held(asyncio.Protocol):
    """Hands its transport to the test, which writes."""

    def __init__(self, accepted: asyncio.Queue[asyncio.Transport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.accepted.put_nowait(transport)
