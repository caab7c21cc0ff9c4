"""A client on the bypass stack: fetch a page from an ordinary (kernel) HTTP server.

With ``aioxdp topo up``, start a kernel server in the client namespace, then
fetch from it out of the server namespace, where the stack runs:

    ip netns exec aioxdp-cli python3 -m http.server 8000 --bind 198.18.0.2
    ip netns exec aioxdp-srv python examples/fetch_from_kernel.py \\
        --interface aioxdps --host 198.18.0.2 --port 8000

--host and --port name the server to fetch from. asyncio.open_connection
goes through the bypass stack because the kernel routes the server's address
out of the stack's interface; the reply is printed, status line first.
"""

import asyncio


async def main(host: str = "198.18.0.2", port: int = 8000, path: str = "/") -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()  # to EOF: Connection: close
    writer.close()
    await writer.wait_closed()
    print(response.decode(errors="replace"), end="", flush=True)


if __name__ == "__main__":
    import sys

    from aioxdp.cli import run_app

    sys.exit(run_app(main, description=__doc__.splitlines()[0]))
