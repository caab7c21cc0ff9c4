"""ICMP errors reach the bypass stack's connections (TCP-CHECKLIST 21): the XDP
program hands over exactly the errors about our own segments, and through a
router with a 1280-byte link the stack finds the path MTU (RFC 1191, RFC 8201)
instead of black-holing, while spoofed errors (RFC 5927) are ignored and ping
still reaches Linux.
"""

from __future__ import annotations

import asyncio
import hashlib
import select
import socket
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from aioxdp._xsk import XskSocket, fill_checksums, verify_checksums
from aioxdp.protect import Protection
from aioxdp.stack import NetStack
from aioxdp.tcp import wire
from aioxdp.tcp.segment import ACK, Segment
from aioxdp.topology import RoutedTopology, Topology
from aioxdp.transport import XdpTransport

from .stackhelpers import peer, peer_python, peer_server, run_on_stack
from .tcp.test_wire import CLIENT4, CLIENT6, SERVER4, SERVER6, icmp_error_frame
from .test_xsk import MODES, Stack, inject, open_stack, packed_address

pytestmark = pytest.mark.netns

PORT = 8080  # the port of test_wire's our_segment
TOTAL = 2 * 1024 * 1024
PATTERN = bytes(range(256)) * 256
SHA = hashlib.sha256(PATTERN * (TOTAL // len(PATTERN))).hexdigest()


# ---- the C RX path checks ICMP checksums -------------------------------------------------------

@pytest.mark.parametrize("v6", [False, True])
def test_c_checksums_of_icmp_errors_agree_with_the_reference(v6: bool) -> None:
    frame = icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1280)  # reference checksums
    assert verify_checksums(frame)
    blank = bytearray(frame)
    icmp = 54 if v6 else 34
    blank[icmp + 2:icmp + 4] = b"\0\0"
    if not v6:
        blank[24:26] = b"\0\0"  # the IPv4 header checksum
    assert not verify_checksums(bytes(blank))
    fill_checksums(blank)
    assert bytes(blank) == frame
    damaged = bytearray(frame)
    damaged[-3] ^= 0x10  # in the quote
    assert not verify_checksums(bytes(damaged))


# ---- the XDP program: which ICMP goes where ----------------------------------------------------

@pytest.fixture(params=MODES)
def stack(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Stack]:
    with open_stack(topology, request.param) as s:
        yield s


def drain(xsk: XskSocket, until: float = 1.0) -> list[bytes]:
    """Every frame the socket receives within ``until`` seconds."""
    got: list[bytes] = []
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        select.select([xsk], [], [], 0.05)
        got += [bytes(f) for f in xsk.recv()]
    return got


def quote(src: bytes, dst: bytes, sport: int, seq: int = 7777) -> bytes:
    """The IP packet of a segment from (src, sport) to (dst, 40000)."""
    seg = Segment(src, dst, sport, 40000, seq, 1, ACK, 512, b"q" * 64)
    return wire.build_frame(seg, src_mac=bytes(6), dst_mac=bytes(6))[14:]


def test_only_errors_about_our_segments_are_redirected(stack: Stack) -> None:
    t, prog, xsk = stack.topo, stack.prog, stack.xsk
    assert (packed_address(t.server_ip), packed_address(t.server_ip6)) == (SERVER4, SERVER6)
    for addr in (SERVER4, SERVER6):
        prog.add_local_address(addr)
        prog.add_listener(addr, PORT)
    prog.set_port_range(40000, 40100)

    def to_server(frame: bytes) -> bytes:
        return stack.server_mac + stack.client_mac + frame[12:]

    ours = [
        icmp_error_frame(False, 3, 4, 1280),  # fragmentation needed, listener port
        icmp_error_frame(True, 2, 0, 1280),  # packet too big
        icmp_error_frame(False, 3, 3, quote=quote(SERVER4, CLIENT4, 40050)),  # port range
        icmp_error_frame(True, 1, 4, quote=quote(SERVER6, CLIENT6, 40050)),
        icmp_error_frame(False, 11, 0, quoted_len=28),  # only 8 bytes of TCP quoted
    ]
    bad_checksum = bytearray(icmp_error_frame(False, 3, 4, 1000))
    bad_checksum[-1] ^= 1
    not_ours = [
        icmp_error_frame(False, 3, 4, 1280, quote=quote(SERVER4, CLIENT4, 9999)),
        icmp_error_frame(True, 2, 0, 1280, quote=quote(SERVER6, CLIENT6, 9999)),
        # a quote of a packet the server did not send
        icmp_error_frame(False, 3, 4, 1280, quote=quote(CLIENT4, SERVER4, PORT)),
        icmp_error_frame(False, 3, 4, 1280, quoted_len=27),  # the sequence number cut
        icmp_error_frame(False, 5, 0),  # redirect: not an error about a segment
        icmp_error_frame(True, 4, 0),  # parameter problem
    ]
    inject(t, [to_server(f) for f in ours + [bytes(bad_checksum)] + not_ours])
    t.exec(t.client_ns, "ping", "-c1", "-W2", t.server_ip)  # echo: still Linux's
    t.exec(t.client_ns, "ping", "-6", "-c1", "-W2", t.server_ip6)
    got = drain(xsk)
    assert sorted(got) == sorted(to_server(f) for f in ours)
    counters = prog.counters()
    assert counters["redirected_icmp"] == len(ours) + 1
    assert counters["redirected"] == counters["redirect_no_socket"] == 0
    assert counters["passed_not_tcp"] >= len(not_ours) + 2
    assert xsk.stats()["rx_dropped_checksum"] == 1  # the C RX path checks ICMP checksums


def test_icmp_errors_pass_the_source_stages(stack: Stack) -> None:
    """A denied source is denied for ICMP errors too (aioxdp.protect)."""
    t, prog = stack.topo, stack.prog
    prog.add_local_address(SERVER4)
    prog.add_listener(SERVER4, PORT)
    Protection(prog).deny("198.18.0.254/32")  # test_wire's router
    inject(t, [stack.server_mac + stack.client_mac + icmp_error_frame(False, 3, 4, 1280)[12:]])
    t.exec(t.client_ns, "ping", "-c1", "-W2", t.server_ip)
    assert drain(stack.xsk, 0.3) == []
    counters = prog.counters()
    assert counters["dropped_denied"] == 1 and counters["redirected_icmp"] == 0


# ---- the stack through a router with a small MTU ---------------------------------------------

@pytest.fixture
def routed() -> Iterator[RoutedTopology]:
    with RoutedTopology(router_mtu=1280) as topo:
        yield topo


FAMILIES = [socket.AF_INET, socket.AF_INET6]
# the largest MSS that fits a 1280-byte path: 1280 - IP - TCP headers
FITTING_MSS: dict[int, int] = {socket.AF_INET: 1240, socket.AF_INET6: 1220}


def addresses(topo: RoutedTopology, family: int) -> tuple[str, str]:
    if family == socket.AF_INET:
        return topo.server_ip, topo.client_ip
    return topo.server_ip6, topo.client_ip6


def current_stack() -> NetStack:
    stack = asyncio.get_running_loop().xdp_stack  # type: ignore[attr-defined]
    assert stack is not None
    return stack


def assert_path_mtu_found(stack: NetStack, mss: int, family: int) -> None:
    assert stack.program.counters()["redirected_icmp"] > 0
    assert stack.table.stats["icmp-path-mtu"] > 0
    assert mss <= FITTING_MSS[family]


DOWNLOAD = """
    import hashlib, socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
    h, n = hashlib.sha256(), 0
    while chunk := s.recv(65536):
        h.update(chunk)
        n += len(chunk)
    print(n, h.hexdigest())
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_server_finds_the_path_mtu_to_a_kernel_client(routed: RoutedTopology,
                                                      family: int) -> None:
    server_ip, _ = addresses(routed, family)

    transports: list[XdpTransport] = []

    class Sender(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, XdpTransport)
            transports.append(transport)
            for _ in range(TOTAL // len(PATTERN)):
                transport.write(PATTERN)
            transport.close()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Sender, server_ip, PORT)
        async with server:
            _, out, _ = await peer_python(routed, DOWNLOAD, server_ip, str(PORT))
        (transport,) = transports
        assert_path_mtu_found(current_stack(), transport._conn.mss, family)
        return out

    out = run_on_stack(routed, main)
    assert out.split() == [str(TOTAL).encode(), SHA.encode()]


KERNEL_SERVER = """
    import hashlib, socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    srv = socket.create_server((sys.argv[1], int(sys.argv[2])), family=family)
    pattern = bytes(range(256)) * 256
    for _ in range(2):
        c, _ = srv.accept()
        with c:
            command = c.recv(4)
            if command == b"get ":
                for _ in range(int(sys.argv[3]) // len(pattern)):
                    c.sendall(pattern)
            else:  # "put ": the upload's length and hash
                h, n = hashlib.sha256(), 0
                while chunk := c.recv(65536):
                    h.update(chunk)
                    n += len(chunk)
                c.sendall(f"{n} {h.hexdigest()}".encode())
"""


@pytest.mark.parametrize("family", FAMILIES)
def test_client_finds_the_path_mtu_to_a_kernel_server(routed: RoutedTopology,
                                                      family: int) -> None:
    _, client_ip = addresses(routed, family)

    async def main() -> tuple[int, str, bytes]:
        proc = await peer_server(routed, KERNEL_SERVER, 9000, client_ip, "9000", str(TOTAL))
        try:
            reader, writer = await asyncio.open_connection(client_ip, 9000)
            writer.write(b"get ")
            h, n = hashlib.sha256(), 0
            while chunk := await reader.read(65536):
                h.update(chunk)
                n += len(chunk)
            writer.close()

            reader, writer = await asyncio.open_connection(client_ip, 9000)
            writer.write(b"put ")
            for _ in range(TOTAL // len(PATTERN)):
                writer.write(PATTERN)
                await writer.drain()
            writer.write_eof()
            reply = await reader.read()
            transport = writer.transport
            assert isinstance(transport, XdpTransport)
            assert_path_mtu_found(current_stack(), transport._conn.mss, family)
            writer.close()
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return n, h.hexdigest(), reply

    n, digest, reply = run_on_stack(routed, main)
    assert (n, digest) == (TOTAL, SHA)  # download
    assert reply.split() == [str(TOTAL).encode(), SHA.encode()]  # upload


# a kernel client that connects, then sends an ICMP "fragmentation needed" (MTU 576)
# quoting the server's segment with the sequence number given on stdin, then reads
SPOOF = """
    import socket, struct, sys
    server, port = sys.argv[1], int(sys.argv[2])
    s = socket.create_connection((server, port), timeout=20)
    me, cport = s.getsockname()[:2]
    print(cport, flush=True)
    seq = int(sys.stdin.readline())

    def csum(b):
        b += bytes(len(b) & 1)
        t = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while t >> 16:
            t = (t & 0xFFFF) + (t >> 16)
        return ~t & 0xFFFF

    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 40, 0, 0x4000, 64, 6, 0,
                     socket.inet_aton(server), socket.inet_aton(me))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    quote = ip + struct.pack("!HHI", port, cport, seq)
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 576) + quote
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.sendto(icmp, (server, 0))
    s.sendall(b"ping")
    print(s.recv(4).decode(), flush=True)
"""


def test_spoofed_error_is_ignored_and_ping_still_works(routed: RoutedTopology) -> None:
    conns: list[XdpTransport] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, XdpTransport)
            conns.append(transport)

        def data_received(self, data: bytes) -> None:
            conns[0].write(data)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, routed.server_ip, PORT)
        stack = current_stack()
        async with server:
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", routed.client_ns, sys.executable, "-c",
                textwrap.dedent(SPOOF), routed.server_ip, str(PORT),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert proc.stdin is not None and proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 10)
            for _ in range(100):
                if conns:
                    break
                await asyncio.sleep(0.02)
            conn = conns[0]._conn
            mss = conn.mss
            # nothing is in flight: SND.UNA == SND.NXT, so no sequence number is
            proc.stdin.write(f"{(conn.snd_una + 1000) % 2**32}\n".encode())
            await proc.stdin.drain()
            for _ in range(250):
                if stack.table.stats["icmp-not-in-flight"]:
                    break
                await asyncio.sleep(0.02)
            echoed = await asyncio.wait_for(proc.stdout.readline(), 10)
            await asyncio.wait_for(proc.wait(), 10)
            assert stack.table.stats["icmp-not-in-flight"] == 1
            assert stack.table.stats["icmp-path-mtu"] == 0
            assert conn.mss == mss == 1460
            assert stack.program.counters()["redirected_icmp"] == 1
            # ICMP echo is still Linux's while the stack runs
            for addr, flag in ((routed.server_ip, "-4"), (routed.server_ip6, "-6")):
                await peer(routed, "ping", flag, "-c1", "-W2", addr)
        return echoed

    assert run_on_stack(routed, main).strip() == b"ping"
