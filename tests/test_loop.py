"""The event loop and transports over real veth pairs, against a real Linux TCP peer.

Every test runs the aioxdp stack in the server namespace and an ordinary
Linux program (python with kernel sockets, curl, aiohttp's client) in the
client namespace, on both base loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import subprocess

import pytest

from aioxdp.loop import _XdpLoopMixin
from aioxdp.settings import KernelSocket, Settings
from aioxdp.topology import Topology
from aioxdp.transport import XdpTransport

from .stackhelpers import BASE_LOOPS, peer, peer_python, peer_server, run_on_stack

pytestmark = pytest.mark.netns

PORT = 8000


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.transport.close()
        return True


ECHO_CLIENT = """
    import socket, sys
    payload = bytes(range(256)) * int(sys.argv[3])
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = bytearray()
    while chunk := s.recv(65536):
        got += chunk
    assert got == payload, (len(got), len(payload))
    print(len(got))
"""


def test_settings_from_environment() -> None:
    env = {"AIOXDP_INTERFACE": "veth7", "AIOXDP_QUEUE": "3", "AIOXDP_MODE": "native",
           "AIOXDP_PORT_RANGE": "50000-50999", "AIOXDP_POLL": "busy", "AIOXDP_ZEROCOPY": "yes"}
    s = Settings.from_env(env)
    assert (s.interface, s.queue, s.mode, s.port_range, s.poll, s.zerocopy) == (
        "veth7", 3, "native", (50000, 50999), "busy", True)
    assert Settings.from_env(env, mode="skb").mode == "skb"
    with pytest.raises(ValueError, match="mode"):
        Settings.from_env({"AIOXDP_MODE": "turbo"})
    with pytest.raises(ValueError, match="port range"):
        Settings.from_env({"AIOXDP_PORT_RANGE": "80-90"})


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_echo_server_serves_kernel_client(topology: Topology, base: str) -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, topology.server_ip, PORT)
        assert server.is_serving()
        (sock,) = server.sockets
        assert sock.getsockname() == (topology.server_ip, PORT)
        assert sock.family == socket.AF_INET
        async with server:
            _, out, _ = await peer_python(topology, ECHO_CLIENT, topology.server_ip,
                                          str(PORT), "400")
        return out

    assert run_on_stack(topology, main, loop=base).strip() == str(256 * 400).encode()


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_streams_server_and_transport_details(topology: Topology, base: str) -> None:
    seen: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        seen["type"] = type(transport)
        seen["peername"] = writer.get_extra_info("peername")
        seen["sockname"] = writer.get_extra_info("sockname")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> bytes:
        server = await asyncio.start_server(handle, topology.server_ip, PORT)
        async with server:
            _, out, _ = await peer_python(topology, """
                import socket, sys
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
                s.sendall(b"hello aioxdp\\n")
                print(s.recv(100).decode().strip(), s.getsockname()[1])
            """, topology.server_ip, str(PORT))
        return out

    out = run_on_stack(topology, main, loop=base).decode().split()
    assert out[:2] == ["HELLO", "AIOXDP"]
    assert seen["type"] is XdpTransport
    assert seen["peername"] == (topology.client_ip, int(out[2]))
    assert seen["sockname"] == (topology.server_ip, PORT)
    assert seen["nodelay"] == 1


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_client_fetches_100mb_from_kernel_server_and_back(topology: Topology, base: str) -> None:
    size = 100 * 1024 * 1024
    source = """
        import hashlib, socket, sys
        size = int(sys.argv[1])
        srv = socket.create_server(("0.0.0.0", 9000))
        # 1: send `size` pseudo-random bytes; 2: receive and report their digest
        for mode in ("send", "recv"):
            c, _ = srv.accept()
            if mode == "send":
                block = hashlib.sha256(b"seed").digest() * 2048
                sent = 0
                while sent < size:
                    c.sendall(block[: size - sent])
                    sent += min(len(block), size - sent)
                c.close()
            else:
                h, n = hashlib.sha256(), 0
                while chunk := c.recv(1 << 20):
                    h.update(chunk); n += len(chunk)
                c.sendall(f"{n} {h.hexdigest()}".encode())
                c.close()
    """
    block = hashlib.sha256(b"seed").digest() * 2048

    async def main() -> tuple[str, str]:
        proc = await peer_server(topology, source, 9000, str(size))
        reader, writer = await asyncio.open_connection(topology.client_ip, 9000)
        assert isinstance(writer.transport, XdpTransport)
        h = hashlib.sha256()
        n = 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        writer.close()
        assert n == size
        expected = hashlib.sha256()
        for off in range(0, size, len(block)):
            expected.update(block[: size - off])
        assert h.hexdigest() == expected.hexdigest()

        reader, writer = await asyncio.open_connection(topology.client_ip, 9000)
        sent = hashlib.sha256()
        for off in range(0, size, len(block)):
            piece = block[: size - off]
            sent.update(piece)
            writer.write(piece)
            await writer.drain()
        writer.write_eof()
        answer = (await reader.read()).decode()
        writer.close()
        await proc.wait()
        return answer, f"{size} {sent.hexdigest()}"

    answer, expected = run_on_stack(topology, main, loop=base, timeout=300)
    assert answer == expected


def test_thousand_concurrent_connections(topology: Topology) -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, topology.server_ip, PORT, backlog=2048)
        async with server:
            _, out, _ = await peer_python(topology, """
                import asyncio, sys
                async def one(i):
                    r, w = await asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
                    return r, w
                async def main():
                    conns = await asyncio.gather(*(one(i) for i in range(1000)))
                    for i, (r, w) in enumerate(conns):
                        w.write(f"{i}\\n".encode())
                    got = [await r.readline() for r, w in conns]
                    assert got == [f"{i}\\n".encode() for i in range(1000)]
                    for r, w in conns:
                        w.close()
                    print("ok", len(conns))
                asyncio.run(main())
            """, topology.server_ip, str(PORT), timeout=120)
        return out

    assert run_on_stack(topology, main).split() == [b"ok", b"1000"]


def test_slow_reader_pauses_writer_and_nothing_is_lost(topology: Topology) -> None:
    total = 8 * 1024 * 1024
    events: list[str] = []

    class Pusher(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.transport.set_write_buffer_limits(high=64 * 1024)
            self.sent = 0
            self.resumed: asyncio.Future[None] | None = None
            asyncio.get_running_loop().create_task(self.push())

        async def push(self) -> None:
            chunk = bytes(range(256)) * 256
            while self.sent < total:
                self.transport.write(chunk)
                self.sent += len(chunk)
                if self.resumed is not None:
                    await self.resumed
            self.transport.close()

        def pause_writing(self) -> None:
            events.append("pause")
            self.resumed = asyncio.get_running_loop().create_future()

        def resume_writing(self) -> None:
            events.append("resume")
            assert self.resumed is not None
            self.resumed.set_result(None)
            self.resumed = None

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Pusher, topology.server_ip, PORT)
        async with server:
            _, out, _ = await peer_python(topology, """
                import socket, sys, time
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                got = bytearray()
                time.sleep(0.5)                      # the reader is slow to start
                while chunk := s.recv(16384):
                    got += chunk
                    time.sleep(0.0002)
                assert got == (bytes(range(256)) * 256) * (len(got) // 65536)
                print(len(got))
            """, topology.server_ip, str(PORT), timeout=120)
        return out

    assert int(run_on_stack(topology, main)) == total
    assert "pause" in events and "resume" in events


def test_peer_reset_gives_connection_reset_error(topology: Topology) -> None:
    async def main() -> BaseException | None:
        lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        class Watch(asyncio.Protocol):
            def connection_lost(self, exc: BaseException | None) -> None:
                lost.set_result(exc)

        proc = await peer_server(topology, """
            import socket, struct
            srv = socket.create_server(("0.0.0.0", 9001))
            c, _ = srv.accept()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()   # linger 0: RST
        """, 9001)
        await asyncio.get_running_loop().create_connection(Watch, topology.client_ip, 9001)
        exc = await asyncio.wait_for(lost, 10)
        await proc.wait()
        return exc

    assert isinstance(run_on_stack(topology, main), ConnectionResetError)


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_half_close_both_ways(topology: Topology, base: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()           # until the peer's FIN
        writer.write(b"got " + str(len(data)).encode())
        writer.write_eof()                   # our FIN after the answer
        await writer.wait_closed()

    async def main() -> tuple[bytes, bytes]:
        server = await asyncio.start_server(handle, topology.server_ip, PORT)
        async with server:
            _, out, _ = await peer_python(topology, """
                import socket, sys
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
                s.sendall(b"a" * 100000)
                s.shutdown(socket.SHUT_WR)            # client -> server closed, reading still works
                got = b""
                while chunk := s.recv(100):
                    got += chunk
                print(got.decode())
            """, topology.server_ip, str(PORT))
        # the other way: a kernel server half-closes first, we keep sending afterwards
        proc = await peer_server(topology, """
            import socket
            srv = socket.create_server(("0.0.0.0", 9002))
            c, _ = srv.accept()
            c.sendall(b"banner")
            c.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := c.recv(100):
                got += chunk
            print(got.decode())
        """, 9002)
        reader, writer = await asyncio.open_connection(topology.client_ip, 9002)
        banner = await reader.read()          # EOF after the banner
        writer.write(b"still writing after your FIN")
        writer.close()
        stdout, _ = await proc.communicate()
        assert banner == b"banner"
        return out, stdout

    out, stdout = run_on_stack(topology, main, loop=base)
    assert out.strip() == b"got 100000"
    assert stdout.strip() == b"still writing after your FIN"


def _tls_contexts(tmp_path: object) -> tuple[ssl.SSLContext, str]:
    from pathlib import Path

    d = Path(str(tmp_path))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=aioxdp.test", "-keyout", d / "key.pem", "-out", d / "cert.pem"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx, str(d / "cert.pem")


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_tls_echo(topology: Topology, base: str, tmp_path: object) -> None:
    server_ctx, cert = _tls_contexts(tmp_path)

    async def main() -> bytes:
        server = await asyncio.get_running_loop().create_server(
            Echo, topology.server_ip, PORT, ssl=server_ctx)
        async with server:
            _, out, _ = await peer_python(topology, """
                import socket, ssl, sys
                ctx = ssl.create_default_context(cafile=sys.argv[3])
                ctx.check_hostname = False
                raw = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
                s = ctx.wrap_socket(raw)
                s.sendall(b"secret " * 1000)
                got = b""
                while len(got) < 7000:
                    got += s.recv(65536)
                print(got[:7].decode(), len(got), s.version())
            """, topology.server_ip, str(PORT), cert)
        return out

    words = run_on_stack(topology, main, loop=base).split()
    assert words[:2] == [b"secret", b"7000"]
    assert words[2].startswith(b"TLS")


def test_kernel_traffic_keeps_working_while_stack_runs(topology: Topology) -> None:
    async def main() -> tuple[bytes, bytes, bytes]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, _XdpLoopMixin)
        bypass = await loop.create_server(Echo, topology.server_ip, PORT)
        # a kernel server on another port of the same interface, in the same namespace: a
        # KernelSocket, which the loop leaves to the kernel (a plain one would be adopted)
        kernel_sock = KernelSocket(socket.AF_INET, socket.SOCK_STREAM)
        kernel_sock.bind((topology.server_ip, PORT + 1))
        kernel_sock.listen()
        kernel = await loop.create_server(Echo, sock=kernel_sock)
        assert not isinstance(kernel, type(bypass))
        async with bypass, kernel:
            _, via_kernel, _ = await peer_python(topology, ECHO_CLIENT, topology.server_ip,
                                                 str(PORT + 1), "10")
            _, via_xdp, _ = await peer_python(topology, ECHO_CLIENT, topology.server_ip,
                                              str(PORT), "10")
            _, ping, _ = await peer(topology, "ping", "-c", "2", "-i", "0.2", "-W", "2",
                                    topology.server_ip)
        counters = loop.xdp_stack.program.counters()  # type: ignore[union-attr]
        assert counters["redirected"] > 0 and counters["passed_not_ours"] > 0
        return via_kernel, via_xdp, ping

    via_kernel, via_xdp, ping = run_on_stack(topology, main)
    assert via_kernel.strip() == via_xdp.strip() == b"2560"
    assert b" 0% packet loss" in ping


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_tls_client_start_tls_and_sendfile(topology: Topology, base: str,
                                            tmp_path: object) -> None:
    """ssl= on create_connection, loop.start_tls on a plain bypass connection, and
    loop.sendfile (its fallback path) towards kernel servers in the peer namespace.

    Each upload starts with its length on a line (TLS has no half-close), and
    the server answers with what it got."""
    from pathlib import Path

    _server_ctx, cert = _tls_contexts(tmp_path)
    key = str(Path(cert).with_name("key.pem"))
    blob = Path(str(tmp_path)) / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    size = blob.stat().st_size
    source = """
        import hashlib, socket, ssl, sys
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])
        srv = socket.create_server(("0.0.0.0", 9443))
        for mode in ("tls", "starttls", "plain"):
            c, _ = srv.accept()
            if mode == "starttls":
                assert c.recv(9) == b"STARTTLS\\n"
                c.sendall(b"GO\\n")
            if mode != "plain":
                c = ctx.wrap_socket(c, server_side=True)
            f = c.makefile("rb")
            n = int(f.readline())
            data = f.read(n)
            c.sendall(f"{mode} {len(data)} {hashlib.sha256(data).hexdigest()}\\n".encode())
            f.close()
            c.close()
    """

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        proc = await peer_server(topology, source, 9443, cert, key)
        client_ctx = ssl.create_default_context(cafile=cert)
        client_ctx.check_hostname = False
        answers = []
        # 1. TLS from the start
        reader, writer = await asyncio.open_connection(topology.client_ip, 9443, ssl=client_ctx)
        assert writer.get_extra_info("ssl_object").version().startswith("TLS")
        writer.write(b"%d\n" % size + blob.read_bytes())
        answers.append(await reader.readline())
        writer.close()
        # 2. plain, then STARTTLS through loop.start_tls
        reader, writer = await asyncio.open_connection(topology.client_ip, 9443)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(client_ctx)
        writer.write(b"%d\n" % size + blob.read_bytes())
        answers.append(await reader.readline())
        writer.close()
        # 3. loop.sendfile on a bypass transport
        reader, writer = await asyncio.open_connection(topology.client_ip, 9443)
        assert isinstance(writer.transport, XdpTransport)
        writer.write(b"%d\n" % size)
        with blob.open("rb") as f:
            assert await loop.sendfile(writer.transport, f) == size
        answers.append(await reader.readline())
        writer.close()
        await proc.wait()
        return answers

    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert run_on_stack(topology, main, loop=base) == [
        f"{mode} {size} {digest}\n".encode() for mode in ("tls", "starttls", "plain")]
