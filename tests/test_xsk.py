"""AF_XDP socket: checksums in C, RX/TX batches on a real veth pair, frame accounting.

The frame helpers here are also used by test_xdp_program.py: they build
frames with ``struct`` alone, so they check the C code against an
independent implementation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import struct
import time
from array import array
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest

from aioxdp._xsk import (
    MAX_DESCS,
    XdpProgram,
    XskSocket,
    checksum,
    fill_checksums,
    packed_address,
    verify_checksums,
)
from aioxdp.protect import load_program
from aioxdp.topology import Topology

MODES = ["skb", "native"]
SYN, RST, ACK = 0x02, 0x04, 0x10
ETH_IP, ETH_IPV6 = 0x0800, 0x86DD


# ---- frames, built and parsed independently of the C code -------------------

def ref_checksum(data: bytes) -> int:
    """RFC 1071, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_header(sport: int, dport: int, seq: int, ack: int = 0, flags: int = SYN,
               window: int = 65535, csum: int = 0) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, csum, 0)


def udp_header(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ip_packet(src: bytes, dst: bytes, proto: int, l4: bytes) -> bytes:
    """IPv4 or IPv6 (by address length) around ``l4``; checksums left zero."""
    if len(src) == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                           src, dst) + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src, dst) + l4


def ether(dst_mac: bytes, src_mac: bytes, packet: bytes) -> bytes:
    etype = ETH_IP if packet[0] >> 4 == 4 else ETH_IPV6
    return dst_mac + src_mac + struct.pack("!H", etype) + packet


def with_ref_checksums(frame: bytes) -> bytes:
    """Fill IPv4 header and TCP/UDP checksums with ref_checksum."""
    f = bytearray(frame)
    ip = 14
    if f[ip] >> 4 == 4:
        ihl = (f[ip] & 15) * 4
        f[ip + 10:ip + 12] = struct.pack("!H", ref_checksum(bytes(f[ip:ip + ihl])))
        proto, l4 = f[ip + 9], ip + ihl
        pseudo = bytes(f[ip + 12:ip + 20]) + struct.pack("!xBH", proto, len(f) - l4)
    else:
        proto, l4 = f[ip + 6], ip + 40
        pseudo = bytes(f[ip + 8:ip + 40]) + struct.pack("!I3xB", len(f) - l4, proto)
    field = l4 + (16 if proto == 6 else 6)
    f[field:field + 2] = b"\0\0"
    f[field:field + 2] = struct.pack("!H", ref_checksum(pseudo + bytes(f[l4:])))
    return bytes(f)


class Tcp(NamedTuple):
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int


def parse_tcp(frame: bytes | memoryview) -> Tcp | None:
    """The TCP header fields of an Ethernet/IPv4|IPv6/TCP frame, else None."""
    f = bytes(frame)
    etype = struct.unpack_from("!H", f, 12)[0]
    if etype == ETH_IP and f[23] == 6:
        src, dst, l4 = f[26:30], f[30:34], 14 + (f[14] & 15) * 4
    elif etype == ETH_IPV6 and f[20] == 6:
        src, dst, l4 = f[22:38], f[38:54], 54
    else:
        return None
    sport, dport, seq, ack, _, flags = struct.unpack_from("!HHIIBB", f, l4)
    return Tcp(src, dst, sport, dport, seq, ack, flags)


# ---- namespace plumbing ----------------------------------------------------

def mac_of(topo: Topology, ns: str, dev: str) -> bytes:
    link = json.loads(topo.ip(ns, "-j", "link", "show", "dev", dev).stdout)[0]
    return bytes.fromhex(link["address"].replace(":", ""))


class Stack(NamedTuple):
    topo: Topology
    prog: XdpProgram
    xsk: XskSocket
    server_mac: bytes
    client_mac: bytes


@contextlib.contextmanager
def open_stack(topo: Topology, mode: str, **xsk_options: object) -> Iterator[Stack]:
    """Program (with the protection a stack starts with) and socket on the server veth;
    the calling thread stays in the server namespace for the block."""
    server_mac = mac_of(topo, topo.server_ns, topo.server_if)
    client_mac = mac_of(topo, topo.client_ns, topo.client_if)
    with topo.server():
        ifindex = socket.if_nametoindex(topo.server_if)
        with load_program(ifindex, mode=mode) as prog, \
                XskSocket(topo.server_if, 0, prog, mode=mode, **xsk_options) as xsk:  # type: ignore[arg-type]
            yield Stack(topo, prog, xsk, server_mac, client_mac)


@pytest.fixture(params=MODES)
def stack(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Stack]:
    with open_stack(topology, request.param) as s:
        yield s


def wait_for(xsk: XskSocket, match: Callable[[bytes], bool], timeout: float = 5.0) -> list[bytes]:
    """Receive until a frame matches; returns copies of every frame received."""
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([xsk], [], [], 0.1)
        batch = [bytes(f) for f in xsk.recv()]
        seen += batch
        if any(match(f) for f in batch):
            return seen
    raise AssertionError(f"no matching frame within {timeout}s; got {len(seen)} others")


def inject(topo: Topology, frames: list[bytes]) -> None:
    """Send raw frames from the client end of the veth (they cross XDP)."""
    with topo.client():
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with raw:
        raw.bind((topo.client_if, 0))
        for f in frames:
            raw.send(f)


def connect_nonblocking(topo: Topology, addr: str, port: int) -> socket.socket:
    """Start a kernel TCP connect from the client namespace (its SYN crosses XDP)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with topo.client():
        s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        s.connect((addr, port))
    return s


# ---- checksums (no namespace needed) ----------------------------------------

def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: these bytes sum to ddf2, so the checksum is ~ddf2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    for data in (b"", b"\x01", b"\xff" * 3, bytes(range(256)) * 7 + b"\x17"):
        assert checksum(data) == ref_checksum(data)


@pytest.mark.parametrize("src,dst", [(b"\xc6\x12\0\x01", b"\xc6\x12\0\x02"),
                                     (packed_address("2001:2::1"), packed_address("2001:2::2"))])
@pytest.mark.parametrize("proto", [6, 17])
def test_fill_checksums_agrees_with_reference(src: bytes, dst: bytes, proto: int) -> None:
    payload = bytes(range(37))
    l4 = tcp_header(1234, 80, 7) + payload if proto == 6 else udp_header(1234, 53, payload)
    frame = ether(b"\x02" * 6, b"\x04" * 6, ip_packet(src, dst, proto, l4))
    filled = bytearray(frame)
    fill_checksums(filled)
    assert bytes(filled) == with_ref_checksums(frame)
    assert verify_checksums(filled)
    filled[-1] ^= 0x40
    assert not verify_checksums(filled)


def test_bad_ipv4_header_checksum_fails_verification() -> None:
    frame = with_ref_checksums(ether(b"\x02" * 6, b"\x04" * 6, ip_packet(
        b"\xc6\x12\0\x01", b"\xc6\x12\0\x02", 6, tcp_header(1, 2, 3))))
    bad = bytearray(frame)
    bad[14 + 8] -= 1  # TTL: not covered by the TCP checksum
    assert verify_checksums(frame) and not verify_checksums(bad)


# ---- on a veth pair ------------------------------------------------------------

@pytest.mark.netns
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_sent_syn_is_answered_by_peer_kernel(stack: Stack, family: str) -> None:
    """A SYN written to TX with zero checksum fields reaches the client's
    kernel, which only answers a SYN whose checksums verify."""
    t = stack.topo
    srv, cli = (t.server_ip, t.client_ip) if family == "ipv4" else (t.server_ip6, t.client_ip6)
    with t.client():
        listener = socket.socket(socket.AF_INET if family == "ipv4" else socket.AF_INET6)
    with listener:
        listener.bind((cli, 0))
        listener.listen()
        peer_port = listener.getsockname()[1]
        stack.prog.add_listener(packed_address(srv), 40001)
        if family == "ipv6":  # the client must resolve our address through ND first
            t.exec(t.client_ns, "ping", "-6", "-c1", "-W2", srv)
        syn = ether(stack.client_mac, stack.server_mac, ip_packet(
            packed_address(srv), packed_address(cli), 6, tcp_header(40001, peer_port, 1000)))
        assert stack.xsk.send(syn, [len(syn)]) == 1

        def is_synack(f: bytes) -> bool:
            seg = parse_tcp(f)
            return seg is not None and seg.flags & (SYN | ACK) == SYN | ACK and \
                seg.sport == peer_port and seg.dport == 40001 and seg.ack == 1001

        wait_for(stack.xsk, is_synack)
    stats = stack.xsk.stats()
    assert stats["tx"] == 1 and stats["held_frames"] >= 1
    stack.xsk.release()
    assert stack.xsk.stats()["held_frames"] == 0
    assert stack.xsk.flush() == 0


@pytest.mark.netns
def test_bad_checksums_are_dropped_and_counted(stack: Stack) -> None:
    t = stack.topo
    stack.prog.add_listener(packed_address(t.server_ip), 7000)
    stack.prog.add_listener(packed_address(t.server_ip6), 7000)

    def syn(src: str, dst: str, seq: int) -> bytearray:
        return bytearray(with_ref_checksums(ether(stack.server_mac, stack.client_mac, ip_packet(
            packed_address(src), packed_address(dst), 6, tcp_header(5555, 7000, seq)))))

    bad_tcp4 = syn(t.client_ip, t.server_ip, 1)
    bad_tcp4[14 + 20 + 16] ^= 0xFF
    bad_ip4 = syn(t.client_ip, t.server_ip, 2)
    bad_ip4[14 + 10] ^= 0xFF
    bad_tcp6 = syn(t.client_ip6, t.server_ip6, 3)
    bad_tcp6[14 + 40 + 16] ^= 0xFF
    good6 = syn(t.client_ip6, t.server_ip6, 4)
    good4 = syn(t.client_ip, t.server_ip, 5)
    inject(t, [bytes(f) for f in (bad_tcp4, bad_ip4, bad_tcp6, good6, good4)])

    seen = wait_for(stack.xsk, lambda f: (s := parse_tcp(f)) is not None and s.seq == 5)
    assert sorted(s.seq for f in seen if (s := parse_tcp(f)) and s.dport == 7000) == [4, 5]
    assert stack.xsk.stats()["rx_dropped_checksum"] == 3
    assert stack.prog.counters()["redirected"] == 5


@pytest.mark.netns
def test_send_rejects_bad_lengths_without_queueing(stack: Stack) -> None:
    frame = bytes(60)
    with pytest.raises(ValueError):
        stack.xsk.send(frame, [0])
    with pytest.raises(ValueError):
        stack.xsk.send(frame, [61])
    with pytest.raises(ValueError):
        stack.xsk.send(bytes(5000), [5000])
    assert stack.xsk.stats()["tx"] == 0


def junk_frames(count: int, size: int = 64) -> bytes:
    """UDP frames to a MAC nobody has: the peer drops them cheaply (otherhost)."""
    one = ether(b"\x02\0\0\0\0\x99", b"\x02\0\0\0\0\x98", ip_packet(
        b"\xc6\x12\0\x01", b"\xc6\x12\0\x63", 17, udp_header(9, 9, bytes(size - 42))))
    return one * count


@pytest.mark.netns
@pytest.mark.parametrize("need_wakeup,frame_size", [(True, 2048), (False, 4096)])
def test_send_queues_only_what_fits_then_recycles(
        topology: Topology, need_wakeup: bool, frame_size: int) -> None:
    with open_stack(topology, "skb", num_frames=64, rx_size=32, tx_size=64,
                    need_wakeup=need_wakeup, frame_size=frame_size) as s:
        initial = s.xsk.free_frames
        assert initial == 32  # half the frames wait in the fill ring
        queued = s.xsk.send(junk_frames(100), array("H", [64] * 100))
        assert 0 < queued <= initial
        deadline = time.monotonic() + 5
        while s.xsk.flush() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.xsk.stats()["tx"] == queued
        assert s.xsk.free_frames == initial


@pytest.mark.netns
def test_a_million_frames_leak_no_umem_frame(topology: Topology) -> None:
    """Completion frames go back to the free list: after 10^6 frames sent in
    batches the free count is back where it started."""
    total, batch = 1_000_000, 256
    frames, lengths = junk_frames(batch), array("H", [64] * batch)
    with open_stack(topology, "skb") as s:
        initial = s.xsk.free_frames
        sent = 0
        deadline = time.monotonic() + 60  # a bound, not a timing assertion
        while sent < total and time.monotonic() < deadline:
            n = min(batch, total - sent)
            sent += s.xsk.send(memoryview(frames)[: n * 64], lengths[:n])
        while s.xsk.flush() and time.monotonic() < deadline:
            time.sleep(0.001)
        stats = s.xsk.stats()
        assert sent == total == stats["tx"]
        assert stats["tx_outstanding"] == 0 and stats["tx_invalid_descs"] == 0
        assert s.xsk.free_frames == initial


@pytest.mark.netns
def test_zerocopy_on_veth_falls_back_to_copy_mode(
        topology: Topology, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aioxdp.xsk")
    with open_stack(topology, "native", zerocopy=True) as s:
        assert not s.xsk.zerocopy
        assert "falling back to copy mode" in caplog.text
        # and it still receives
        s.prog.add_listener(packed_address(topology.server_ip), 7100)
        with connect_nonblocking(topology, topology.server_ip, 7100):
            wait_for(s.xsk, lambda f: (seg := parse_tcp(f)) is not None and seg.dport == 7100)


@pytest.mark.netns
def test_recv_spans_point_into_the_umem_and_close_is_final(stack: Stack) -> None:
    t = stack.topo
    stack.prog.add_listener(packed_address(t.server_ip), 7000)
    syn = with_ref_checksums(ether(stack.server_mac, stack.client_mac, ip_packet(
        packed_address(t.client_ip), packed_address(t.server_ip), 6, tcp_header(5555, 7000, 77))))
    inject(t, [syn])
    spans: list[int] = []
    for _ in range(50):
        select.select([stack.xsk], [], [], 0.1)
        spans = stack.xsk.recv_spans()
        if spans:
            break
    assert len(spans) == 2
    assert bytes(stack.xsk.umem[spans[0]:spans[1]]) == syn
    assert stack.xsk.stats()["held_frames"] == 1
    stack.xsk.close()
    stack.xsk.close()
    with pytest.raises(ValueError):
        stack.xsk.recv()
    with pytest.raises(ValueError):
        stack.xsk.send(syn, [len(syn)])


@pytest.mark.netns
@pytest.mark.parametrize("mode", MODES)
def test_one_socket_per_queue_on_a_multiqueue_link(mode: str) -> None:
    """Frames reach the socket of the queue they arrived on; with a socket
    on every queue, none is left to the kernel."""
    with Topology(queues=2) as t, t.server():
        ifindex = socket.if_nametoindex(t.server_if)
        with XdpProgram.load(ifindex, mode=mode) as prog, \
                XskSocket(t.server_if, 0, prog, mode=mode) as q0, \
                XskSocket(t.server_if, 1, prog, mode=mode) as q1:
            prog.add_listener(packed_address(t.server_ip), 7500)
            clients = [connect_nonblocking(t, t.server_ip, 7500) for _ in range(16)]
            ports = {c.getsockname()[1] for c in clients}
            seen: set[int] = set()
            deadline = time.monotonic() + 5
            while seen != ports and time.monotonic() < deadline:
                select.select([q0, q1], [], [], 0.1)
                for q in (q0, q1):
                    seen |= {seg.sport for f in q.recv() if (seg := parse_tcp(f))}
            for c in clients:
                c.close()
            assert seen == ports
            assert prog.counters()["redirect_no_socket"] == 0
            assert q0.stats()["rx"] + q1.stats()["rx"] >= len(ports)


def super_frame(payload: int, gso: int = 1000) -> bytes:
    """One TCP segment of ``payload`` bytes to a MAC nobody has, to be cut by ``send``."""
    return ether(b"\x02\0\0\0\0\x99", b"\x02\0\0\0\0\x98", ip_packet(
        b"\xc6\x12\0\x01", b"\xc6\x12\0\x63", 6, tcp_header(9, 9, 1, 0, ACK) + bytes(payload)))


@pytest.mark.netns
def test_super_frames_are_queued_whole_or_not_at_all(topology: Topology) -> None:
    with open_stack(topology, "skb", num_frames=64, rx_size=32, tx_size=64) as s:
        assert s.xsk.tx_capacity == s.xsk.free_frames == 32
        with pytest.raises(ValueError, match="more pieces"):
            s.xsk.send(super_frame(33 * 1000), [33 * 1000 + 54], array("H", [1000]))
        with pytest.raises(ValueError, match="exceed the longest frame"):
            s.xsk.send(super_frame(5000), [5054], [2000])
        # 12 + 12 pieces fit in 32 free frames, the third super-frame's 12 do not
        frames = super_frame(12 * 1000) * 3
        assert s.xsk.send(frames, array("I", [12054] * 3), array("H", [1000] * 3)) == 2
        stats = s.xsk.stats()
        assert (stats["tx"], stats["tx_gso_frames"], stats["tx_gso_pieces"]) == (24, 2, 24)
        deadline = time.monotonic() + 5
        while s.xsk.flush() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.xsk.free_frames == 32


@pytest.mark.netns
def test_a_frame_the_device_refuses_is_counted_and_the_rest_go_on(stack: Stack) -> None:
    """A frame above the MTU is dropped by veth and the TX kick says EBUSY (MACHINE-NOTES):
    it is counted in tx_refused, and the frames queued behind it still leave, in the same
    send and in later ones (the TX path never wedges on it)."""
    t = stack.topo
    with t.client():
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sink:
        sink.bind((t.client_ip, 0))
        sink.settimeout(5)
        port = sink.getsockname()[1]

        def udp(payload: bytes) -> bytes:
            header = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0)
            return ether(stack.client_mac, stack.server_mac, ip_packet(
                packed_address(t.server_ip), packed_address(t.client_ip), 17,
                header + payload))

        for round_ in range(3):
            frames = [udp(bytes(1600)), *(udp(b"%d.%d" % (round_, i)) for i in range(3))]
            assert len(frames[0]) > 14 + 1500
            assert stack.xsk.send(b"".join(frames), [len(f) for f in frames]) == 4
            assert [sink.recv(2048) for _ in range(3)] == [b"%d.%d" % (round_, i)
                                                          for i in range(3)]
        assert stack.xsk.flush() == 0
    stats = stack.xsk.stats()
    assert stats["tx_refused"] == 3 and stats["tx_kick_errors"] == 0
    assert stats["tx"] == 12 and stats["tx_ring"] == 0


# ---- jumbo frames: AF_XDP multi-buffer ---------------------------------------------

JUMBO_MTU = 9000
JUMBO = 14 + JUMBO_MTU


@pytest.mark.netns
@pytest.mark.parametrize("mode", MODES)
def test_jumbo_frames_cross_whole_as_several_umem_frames(mode: str) -> None:
    """MTU 9000 on both veths, 4 KB UMEM frames, frames up to 9014 bytes: a jumbo
    segment the peer sends arrives as one frame, byte for byte (the kernel wrote it as
    three descriptors, joined in C), and one with a bad checksum is dropped and
    counted; a jumbo UDP frame sent reaches a kernel socket whole; a frame longer than
    the socket's longest is refused without queueing."""
    with Topology(mtu=JUMBO_MTU) as t, open_stack(t, mode, frame_size=4096,
                                                  max_frame=JUMBO) as s:
        assert s.xsk.max_frame == JUMBO
        s.prog.add_listener(packed_address(t.server_ip), 7000)
        payload = bytes(i * 7 % 251 for i in range(JUMBO - 54))

        def syn(seq: int) -> bytes:
            return with_ref_checksums(ether(s.server_mac, s.client_mac, ip_packet(
                packed_address(t.client_ip), packed_address(t.server_ip), 6,
                tcp_header(5555, 7000, seq) + payload)))

        bad = bytearray(syn(1))
        bad[-1] ^= 0xFF
        good = syn(2)
        assert len(good) == JUMBO
        inject(t, [bytes(bad), good])
        seen = wait_for(s.xsk, lambda f: (p := parse_tcp(f)) is not None and p.seq == 2)
        assert [f for f in seen if parse_tcp(f)] == [good]
        stats = s.xsk.stats()
        assert stats["rx_dropped_checksum"] == 1 and stats["rx_multi"] == 2

        with t.client():
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sink:
            sink.bind((t.client_ip, 0))
            sink.settimeout(5)
            data = (payload * 2)[:JUMBO - 42]
            frame = ether(s.client_mac, s.server_mac, ip_packet(
                packed_address(t.server_ip), packed_address(t.client_ip), 17,
                udp_header(40000, sink.getsockname()[1], data)))
            assert len(frame) == JUMBO
            with pytest.raises(ValueError):
                s.xsk.send(frame + b"\0", [JUMBO + 1])
            assert s.xsk.send(frame, [JUMBO]) == 1
            assert sink.recv(65536) == data
        stats = s.xsk.stats()
        assert stats["tx"] == 1 and stats["tx_multi"] == 1 and stats["tx_refused"] == 0
        deadline = time.monotonic() + 5
        while s.xsk.flush() and time.monotonic() < deadline:
            time.sleep(0.01)
        s.xsk.release()
        assert s.xsk.stats()["free_frames"] + s.xsk.stats()["fill_ring"] == s.xsk.num_frames


def test_longest_frame_is_bounded_by_the_descriptors_of_one_frame() -> None:
    """A frame may take at most MAX_DESCS (16) UMEM frames (copy mode builds one skb of
    them), and the longest frame is no shorter than a UMEM frame; refused before any
    socket or interface is touched."""
    assert MAX_DESCS == 16
    for frame_size, max_frame in ((4096, 16 * 4096 + 1), (2048, 16 * 2048 + 1), (2048, 1500)):
        with pytest.raises(ValueError, match="max_frame must be"):
            XskSocket("no-such-if", 0, None, frame_size=frame_size,  # type: ignore[arg-type]
                      max_frame=max_frame)


@pytest.mark.netns
def test_jumbo_frames_wait_whole_for_the_next_batch() -> None:
    """100 jumbo frames (300 descriptors) wait in the RX ring. A batch whose view of the
    ring ends inside a frame stops before it (recv(10) looks at 26 descriptors: 8 whole
    frames), one that fills every linear slot stops there (64), and the next takes the
    rest: every frame once, whole and in order."""
    with Topology(mtu=JUMBO_MTU) as t, open_stack(t, "skb", frame_size=4096,
                                                  max_frame=JUMBO) as s:
        s.prog.add_listener(packed_address(t.server_ip), 7000)
        frames = [with_ref_checksums(ether(s.server_mac, s.client_mac, ip_packet(
            packed_address(t.client_ip), packed_address(t.server_ip), 6,
            tcp_header(5555, 7000, seq) + bytes([seq]) * (JUMBO - 54)))) for seq in range(100)]
        inject(t, frames)
        deadline = time.monotonic() + 5
        while s.xsk.stats()["rx_ring"] < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.xsk.stats()["rx_ring"] == 300
        got = [[bytes(f) for f in s.xsk.recv(n)] for n in (10, 256, 256)]
        assert [len(batch) for batch in got] == [8, 64, 28]
        assert [f for batch in got for f in batch] == frames
        assert s.xsk.stats()["rx_multi"] == 100
