"""One asyncio server program, run as a real process on the kernel stack or on aioxdp.

    python -m tests.lifecycle_program kernel|aioxdp INTERFACE HOST PORT SCENARIO

The same code runs on both stacks (``asyncio.run`` or ``aioxdp.run``), so a test can
compare what a real Linux peer sees of each: EOF or a reset, a complete response,
how Ctrl-C ends it. It prints "ready" once it listens. Scenarios:

- ``serve``: ``async with server: await server.serve_forever()`` with a handler that
  says hello, then waits for the client to speak (an idle client keeps it waiting):
  ended by SIGINT;
- ``abort-read``: ``transport.abort()`` in data_received, the data read;
- ``abort-unread``: the first connection answers "paused" to its first bytes and pauses
  reading; its next bytes stay unread until a second connection's bytes abort it;
- ``abort-linger``: ``abort()`` after SO_LINGER on with a zero timeout;
- ``close-mid-request``: ``server.close()`` between the two lines of a request; the
  response (RESPONSE_BYTES) follows the second line, then ``writer.close()``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

RESPONSE_BYTES = 1 << 20


async def serve(host: str, port: int) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")  # accepted: the client may go idle now
        await reader.read()

    server = await asyncio.start_server(idle, host, port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


class _Abort(asyncio.Protocol):
    linger = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.linger:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # type: ignore[attr-defined]
        done.set_result(None)


class _AbortLinger(_Abort):
    linger = True


class _Paused(asyncio.Protocol):
    """The first connection of abort-unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        held.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"paused")  # type: ignore[attr-defined]
        self.transport.pause_reading()  # type: ignore[attr-defined]


class _Trigger(asyncio.Protocol):
    """The second connection of abort-unread: its bytes abort the first."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        held[0].abort()
        self.transport.close()
        done.set_result(None)


held: list[asyncio.BaseTransport] = []
done: asyncio.Future[None]


async def protocol_scenario(host: str, port: int, scenario: str) -> None:
    global done
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    if scenario == "abort-unread":
        protocols = iter([_Paused(), _Trigger()])
        server = await loop.create_server(lambda: next(protocols), host, port)
    else:
        factory = _AbortLinger if scenario == "abort-linger" else _Abort
        server = await loop.create_server(factory, host, port)
    print("ready", flush=True)
    await done
    server.close()
    await asyncio.sleep(0.5)  # the FIN or RST leaves before the process does


async def close_mid_request(host: str, port: int) -> None:
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        server.close()  # no more listening; this connection stays
        writer.write(b"closed\n")
        await reader.readline()  # sent by the client once it read "closed"
        writer.write(b"x" * RESPONSE_BYTES)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        finished.set()

    server = await asyncio.start_server(handle, host, port)
    print("ready", flush=True)
    await finished.wait()
    await asyncio.sleep(0.5)  # the FIN exchange ends before the process does


def main() -> None:
    stack, interface, host, port_text, scenario = sys.argv[1:6]
    port = int(port_text)
    if scenario == "serve":
        coro = serve(host, port)
    elif scenario == "close-mid-request":
        coro = close_mid_request(host, port)
    else:
        coro = protocol_scenario(host, port, scenario)
    if stack == "aioxdp":
        import aioxdp

        aioxdp.run(coro, interface=interface)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
