"""The echo server of echo_protocol.py written with streams (asyncio.start_server).

Run it (in the server namespace of ``aioxdp topo up``):

    python examples/echo_streams.py --interface IF --host ADDR [--port 7008]

or ``aioxdp run examples.echo_streams:main --interface IF --host ADDR``.
Every byte a client sends comes back; a client's EOF closes the connection.
"""

import asyncio


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main(host: str = "0.0.0.0", port: int = 7008) -> None:
    server = await asyncio.start_server(echo, host, port)
    print(f"echo (streams) on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import sys

    from aioxdp.cli import run_app

    sys.exit(run_app(main, description=__doc__.splitlines()[0]))
