"""An echo server written as an asyncio.Protocol, served by the bypass stack.

Run it (in the server namespace of ``aioxdp topo up``):

    python examples/echo_protocol.py --interface IF --host ADDR [--port 7007]

or ``aioxdp run examples.echo_protocol:main --interface IF --host ADDR``.
Every byte a client sends comes back; a client's EOF closes the connection.
From another host: ``python3 -c "import socket; s = socket.create_connection(
('ADDR', 7007)); s.sendall(b'hi'); print(s.recv(2))"``.
"""

import asyncio


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def main(host: str = "0.0.0.0", port: int = 7007) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, host, port)
    print(f"echo (Protocol) on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import sys

    from aioxdp.cli import run_app

    sys.exit(run_app(main, description=__doc__.splitlines()[0]))
