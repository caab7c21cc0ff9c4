"""Sockets a program made itself land on the bypass stack (Settings.adopt_sockets).

aiohttp's client connects through aiohappyeyeballs: a kernel socket, then
``loop.sock_connect``, then ``create_connection(sock=...)``. Servers started
for ``--fd`` or ``--workers`` pass a socket they bound themselves to
``create_server(sock=...)``. Both would go to the kernel unless the loop takes
them; each test shows where the bytes went from the kernel's side (``ss`` in
the server namespace) and from the stack's (its table and the XDP counters).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aioxdp.loop import _XdpLoopMixin
from aioxdp.stack import NetStack
from aioxdp.topology import Topology
from aioxdp.transport import XdpServer, XdpSocket, XdpTransport

from .stackhelpers import BASE_LOOPS, peer, peer_server, run_on_stack
from .test_loop import _tls_contexts

pytestmark = pytest.mark.netns

PORT = 8080
KERNEL_PORT = 9080

# a kernel HTTP/1.1 server in the client namespace, up for at most a minute
KERNEL_HTTP = """
    import http.server, os, threading
    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = b"hello from the kernel"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    threading.Timer(60, os._exit, (0,)).start()
    http.server.ThreadingHTTPServer(("0.0.0.0", 9080), Hello).serve_forever()
"""


def stack_of_running_loop() -> NetStack:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, _XdpLoopMixin)
    assert loop.xdp_stack is not None
    return loop.xdp_stack


def record_connections(loop: asyncio.AbstractEventLoop) -> list[asyncio.BaseTransport]:
    """The transports ``loop.create_connection`` returns from now on, for the test to look
    at: aiohttp releases a response's connection once its body is in, so
    ``response.connection`` may already be None when a small answer came whole."""
    made: list[asyncio.BaseTransport] = []
    create = loop.create_connection

    async def recording(*args: Any, **kwargs: Any) -> Any:
        transport, protocol = await create(*args, **kwargs)
        made.append(transport)
        return transport, protocol

    loop.create_connection = recording  # type: ignore[method-assign]
    return made


async def in_server_ns(topo: Topology, *cmd: str, **kwargs: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("ip", "netns", "exec", topo.server_ns, *cmd,
                                                **kwargs)


async def kernel_connections(topo: Topology, port: int) -> str:
    """The server namespace's kernel TCP sockets of ``port`` (listening or connected)."""
    proc = await in_server_ns(topo, "ss", "-Htan", f"( sport = :{port} or dport = :{port} )",
                              stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_aiohttp_default_client_reaches_kernel_server_through_the_stack(
        topology: Topology, base: str) -> None:
    url = f"http://{topology.client_ip}:{KERNEL_PORT}/"

    async def main() -> list[str]:
        proc = await peer_server(topology, KERNEL_HTTP, KERNEL_PORT)
        try:
            answers = []
            made = record_connections(asyncio.get_running_loop())
            async with aiohttp.ClientSession() as session:  # the default TCPConnector
                for _ in range(3):  # keep-alive: one connection, reused
                    async with session.get(url) as response:
                        answers.append(await response.text())
                assert len(made) == 1 and isinstance(made[0], XdpTransport), made
                stack = stack_of_running_loop()
                remotes = [conn.remote for conn in stack.table.connections.values()]
                assert remotes == [(socket.inet_aton(topology.client_ip), KERNEL_PORT)]
                assert await kernel_connections(topology, KERNEL_PORT) == ""
                assert stack.program.counters()["redirected"] >= 3  # SYN-ACK, answers
            return answers
        finally:
            proc.kill()
            await proc.wait()

    assert run_on_stack(topology, main, loop=base) == ["hello from the kernel"] * 3


def test_aiohttp_https_client_through_the_stack(topology: Topology, tmp_path: Path) -> None:
    """TLS over a connection sock_connect opened: create_connection(sock=, ssl=,
    server_hostname=) wraps it in asyncio's SSLProtocol."""
    _server_ctx, cert = _tls_contexts(tmp_path)
    key = str(Path(cert).with_name("key.pem"))
    https = KERNEL_HTTP.replace(
        '    http.server.ThreadingHTTPServer(("0.0.0.0", 9080), Hello).serve_forever()',
        """    import ssl, sys
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 9080), Hello)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()""")
    assert https != KERNEL_HTTP

    async def main() -> tuple[str, str]:
        proc = await peer_server(topology, https, KERNEL_PORT, cert, key)
        try:
            context = ssl.create_default_context(cafile=cert)
            context.check_hostname = False  # the certificate names aioxdp.test
            made = record_connections(asyncio.get_running_loop())
            async with aiohttp.ClientSession() as session, session.get(
                    f"https://{topology.client_ip}:{KERNEL_PORT}/", ssl=context) as response:
                (transport,) = made
                raw = transport.get_extra_info("ssl_object")
                # asyncio's SSL transport over the stack's connection
                assert isinstance(transport.get_extra_info("socket"), XdpSocket)
                return await response.text(), raw.version()
        finally:
            proc.kill()
            await proc.wait()

    text, version = run_on_stack(topology, main)
    assert text == "hello from the kernel"
    assert version.startswith("TLS")


def test_socket_connected_on_the_stack_and_dropped_takes_its_connection(
        topology: Topology) -> None:
    """A happy-eyeballs runner-up: connected, never handed to create_connection."""

    async def main() -> str:
        proc = await peer_server(topology, KERNEL_HTTP, KERNEL_PORT)
        try:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, (topology.client_ip, KERNEL_PORT))
            stack = stack_of_running_loop()
            (conn,) = stack.table.connections.values()
            assert conn.state.name == "ESTABLISHED"
            sock.close()
            del sock
            gc.collect()
            for _ in range(100):  # the close's FIN exchange, then TIME-WAIT
                if conn.state.name not in ("ESTABLISHED", "FIN_WAIT_1"):
                    break
                await asyncio.sleep(0.02)
            return str(conn.state.name)
        finally:
            proc.kill()
            await proc.wait()

    assert run_on_stack(topology, main) in ("FIN_WAIT_2", "TIME_WAIT", "CLOSED")


def test_kernel_connected_socket_is_named_once(topology: Topology,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A socket the kernel connected stays the kernel's, with one warning per destination."""

    async def main() -> list[str]:
        proc = await peer_server(topology, KERNEL_HTTP, KERNEL_PORT)
        try:
            loop = asyncio.get_running_loop()
            kinds = []
            for _ in range(2):
                sock = socket.create_connection((topology.client_ip, KERNEL_PORT), timeout=5)
                sock.setblocking(False)
                transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
                kinds.append(type(transport).__name__)
                transport.close()
            # something must go through the stack for run_on_stack's own check
            reader, writer = await asyncio.open_connection(topology.client_ip, KERNEL_PORT)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await reader.read()).endswith(b"hello from the kernel")
            writer.close()
            return kinds
        finally:
            proc.kill()
            await proc.wait()

    with caplog.at_level("WARNING", logger="aioxdp"):
        kinds = run_on_stack(topology, main)
    assert "XdpTransport" not in kinds
    warnings = [r.getMessage() for r in caplog.records if "sock_connect" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"{topology.client_ip} port {KERNEL_PORT}" in warnings[0]


# one request on one connection, held open until stdin closes
HELD_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    got = b""
    while not got.endswith(b"socket"):
        got += s.recv(4096)
    print(got.split(b"\\r\\n\\r\\n")[1].decode(), flush=True)
    sys.stdin.read()
""")


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello from a pre-bound socket")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


@pytest.mark.parametrize(("base", "host"), [("asyncio", "server"), ("uvloop", "wildcard")])
def test_prebound_listening_socket_is_served_by_the_stack(topology: Topology, base: str,
                                                         host: str) -> None:
    """aiohttp's SockSite, as ASGI servers pass the socket of --fd or --workers."""
    address = topology.server_ip if host == "server" else "0.0.0.0"

    async def main() -> tuple[str, str, str]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, PORT))
        sock.listen(128)
        runner = web.AppRunner(hello_app())
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        try:
            assert isinstance(site._server, XdpServer)
            client = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", topology.client_ns, sys.executable, "-c", HELD_CLIENT,
                topology.server_ip, str(PORT), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            assert client.stdin is not None and client.stdout is not None
            body = await asyncio.wait_for(client.stdout.readline(), 30)
            # while the client holds its connection open: the stack's, not the kernel's
            kernel = await kernel_connections(topology, PORT)
            stack = stack_of_running_loop()
            ports = [conn.local[1] for conn in stack.table.connections.values()]
            client.stdin.close()
            assert await asyncio.wait_for(client.wait(), 30) == 0
            assert ports == [PORT]
            # no listener left in the kernel: a client inside the namespace (through lo,
            # which XDP never sees) is refused at once instead of waiting in a backlog
            local = socket.socket()
            try:
                with pytest.raises(ConnectionRefusedError):
                    local.connect((topology.server_ip, PORT))
            finally:
                local.close()
            # and the port is still held against other kernel sockets
            other = socket.socket()
            try:
                with pytest.raises(OSError, match="in use"):
                    other.bind((address, PORT))
            finally:
                other.close()
            return body.decode().strip(), kernel, sock.getsockname()[0]
        finally:
            await runner.cleanup()

    body, kernel, bound = run_on_stack(topology, main, loop=base)
    assert body == "Hello from a pre-bound socket"
    assert kernel == "", f"the kernel had sockets of port {PORT}: {kernel}"
    assert bound == address


def test_second_process_on_a_shared_socket_names_the_workers(topology: Topology) -> None:
    """Two processes serving one inherited listening socket (a server's own --workers):
    the second cannot run a stack on the same interface and says what to use instead,
    and the first keeps serving."""
    second = textwrap.dedent("""
        import asyncio, socket, sys
        import aioxdp
        async def main():
            sock = socket.socket(fileno=int(sys.argv[1]))
            await asyncio.get_running_loop().create_server(asyncio.Protocol, sock=sock)
        aioxdp.run(main(), interface=sys.argv[2])
    """)

    async def main() -> tuple[int | None, str, str]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((topology.server_ip, PORT))
        sock.listen(128)
        runner = web.AppRunner(hello_app())
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            proc = await in_server_ns(
                topology, sys.executable, "-c", second, str(sock.fileno()), topology.server_if,
                pass_fds=(sock.fileno(),), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), 60)
            _, body, _ = await peer(topology, "curl", "-sS", "-m", "5",
                                    f"http://{topology.server_ip}:{PORT}/")
            return proc.returncode, err.decode(), body.decode()
        finally:
            await runner.cleanup()

    status, err, body = run_on_stack(topology, main)
    assert status != 0
    assert "aioxdp run MODULE:APP --workers N" in err, err
    assert body == "Hello from a pre-bound socket"


# a kernel echo server in the client namespace: a thread per connection, up for a minute
KERNEL_ECHO = """
    import os, socket, threading
    def echo(conn):
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.close()
    threading.Timer(60, os._exit, (0,)).start()
    srv = socket.create_server(("0.0.0.0", 9000))
    while True:
        threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""


@pytest.mark.parametrize("adopt", [True, False])
def test_loop_reads_and_writes_of_a_socket_sock_connect_adopted(topology: Topology,
                                                               adopt: bool) -> None:
    """A program that reads and writes its socket through the loop (sock_sendall,
    sock_recv) after sock_connect: told precisely what happened when the stack took
    the connection, and served by the kernel as before with adopt_sockets off."""

    async def main() -> str:
        proc = await peer_server(topology, KERNEL_ECHO, 9000)
        try:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, (topology.client_ip, 9000))
            try:
                await loop.sock_sendall(sock, b"ping")
                answer = (await loop.sock_recv(sock, 4)).decode()
            except OSError as exc:
                answer = str(exc)
            finally:
                sock.close()
            # and the stack's own way keeps working beside it
            reader, writer = await asyncio.open_connection(topology.client_ip, 9000)
            writer.write(b"pong")
            assert await reader.readexactly(4) == b"pong"
            writer.close()
            return answer
        finally:
            proc.kill()
            await proc.wait()

    answer = run_on_stack(topology, main, adopt_sockets=adopt)
    if adopt:
        assert "loop.sock_sendall() on a socket that loop.sock_connect connected on" in answer
        assert "create_connection(sock=...)" in answer and "AIOXDP_ADOPT_SOCKETS=0" in answer
    else:
        assert answer == "ping"
