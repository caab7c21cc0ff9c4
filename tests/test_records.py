"""The C frame path without a socket: records.h against records.py, the C parser
against wire.parse_frame (the reference), the coalescing rules of Linux's
tcp_gro_receive, and the cutting of super-frames (tcp_gso_segment), each
piece checked by wire.parse_frame with checksum verification.

``parse_frames`` and ``cut_frame`` run the very C functions the socket runs
(offload.c) over plain buffers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioxdp._xsk import FrameRecords, cut_frame, ffi, fill_checksums, lib, parse_frames
from aioxdp.tcp import records, wire
from aioxdp.tcp.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment

from .tcp.test_wire import (
    CLIENT4,
    CLIENT6,
    DST_MAC,
    SERVER4,
    SERVER6,
    SRC_MAC,
    ethernet,
    icmp_error_frame,
    ipv4_packet,
    ipv6_packet,
    seg_fields,
    tcp_header,
    with_tcp_checksum,
)

TS = b"\x01\x01\x08\x0a" + struct.pack("!II", 77, 66)  # NOP NOP TS, as Linux sends data


def frame(payload: bytes = b"", *, seq: int = 1000, ack: int = 2000, flags: int = ACK,
          window: int = 512, options: bytes = TS, sport: int = 40000, dport: int = 8080,
          v6: bool = False, vlan: int | None = None, doff: int | None = None) -> bytes:
    """An Ethernet/IP/TCP frame with any options, checksums right."""
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    segment = with_tcp_checksum(src, dst, tcp_header(sport, dport, seq, ack, flags, window,
                                                     options, doff=doff) + payload)
    if v6:
        return ethernet(ipv6_packet(src, dst, segment), 0x86DD, vlan=vlan)
    return ethernet(ipv4_packet(src, dst, segment), 0x0800, vlan=vlan)


def run(frames: Sequence[bytes], size: int = 1448, **kw: object) -> list[bytes]:
    """``len(frames)`` frames, each ``size`` payload bytes, in sequence order."""
    return [frame(bytes([i]) * size, seq=1000 + i * size, **kw)  # type: ignore[arg-type]
            for i in range(len(frames))]


def decoded(frames: Sequence[bytes], **kw: object) -> tuple[list[Segment | None], FrameRecords]:
    out = parse_frames(frames, **kw)  # type: ignore[arg-type]
    return records.decode(out.records, memoryview(out.payloads), out.n), out


def field(out: FrameRecords, index: int, name: str) -> object:
    fmt = dict(records.LAYOUT)[name]
    return struct.unpack_from("=" + fmt, out.records,
                              index * records.RECORD_SIZE + records.OFFSETS[name])[0]


def through_c(frames: Sequence[bytes], **kw: object) -> list[Segment | None]:
    """What the stack gets: C records, and wire.parse_frame for the raw ones."""
    segs, out = decoded(frames, **kw)
    return [seg if seg is not None else wire.parse_frame(
        out.frames[slice(*records.frame_span(out.records, i))], verify_checksum=False)
        for i, seg in enumerate(segs)]


def wire_segments(segs: Sequence[Segment | None]) -> list[dict[str, object] | None]:
    """Coalesced segments back into the wire segments they stand for (Segment.split)."""
    return [None if seg is None else seg_fields(piece)
            for seg in segs for piece in ([seg] if seg is None else seg.split())]


def reference(frames: Sequence[bytes]) -> list[dict[str, object] | None]:
    return [None if (seg := wire.parse_frame(f, verify_checksum=False)) is None
            else seg_fields(seg) for f in frames]


def assert_same_as_wire(frames: Sequence[bytes], **kw: object) -> None:
    assert wire_segments(through_c(frames, **kw)) == reference(frames)


# ---- the layout, defined once in records.h ------------------------------------------

def test_records_py_mirrors_the_c_struct() -> None:
    assert records.RECORD_SIZE == ffi.sizeof("struct axsk_record") == 128
    c_fields = [name for name, _ in ffi.typeof("struct axsk_record").fields]
    assert c_fields == [name for name, _ in records.LAYOUT]
    for name, fmt in records.LAYOUT:
        assert records.OFFSETS[name] == ffi.offsetof("struct axsk_record", name), name
        assert struct.calcsize("=" + fmt) == ffi.sizeof(
            ffi.typeof("struct axsk_record").fields[c_fields.index(name)][1].type), name
    assert (records.KIND_TCP, records.KIND_RAW) == (lib.AXSK_REC_TCP, lib.AXSK_REC_RAW)
    for name in ("MSS", "WSCALE", "SACK_PERM", "TS"):
        assert getattr(records, "OPT_" + name) == getattr(lib, "AXSK_OPT_" + name)


# ---- parsing: every shape against wire.parse_frame ------------------------------------

SACK2 = b"\x01\x01\x05\x12" + struct.pack("!4I", 10, 20, 30, 40)
SYN_OPTIONS = struct.pack("!BBH", 2, 4, 1460) + b"\x04\x02\x08\x0a" + struct.pack(
    "!II", 5, 0) + b"\x01\x03\x03\x07"

PARSED_IN_C = {
    "ipv4 no options": frame(b"data", options=b""),
    "ipv4 timestamps": frame(b"x" * 1448),
    "ipv4 pure ack": frame(),
    "ipv6": frame(b"six", v6=True),
    "vlan": frame(b"tagged", vlan=7),
    "vlan ipv6": frame(b"tagged6", vlan=7, v6=True),
    "syn, all options": frame(flags=SYN, options=SYN_OPTIONS),
    "syn-ack ipv6": frame(flags=SYN | ACK, options=SYN_OPTIONS, v6=True),
    "sack blocks": frame(options=TS + SACK2),
    "four sack blocks": frame(options=b"\x01\x01\x05\x22" + bytes(range(32))),
    "urgent": frame(b"u", flags=ACK | URG),
    "fin rst psh": frame(b"z", flags=FIN | RST | PSH | ACK),
    "mss wrong length (skipped)": frame(options=b"\x02\x03\x05\x01" + TS),
    "wscale wrong length": frame(options=b"\x03\x04\x07\x00" + TS),
    "sackok wrong length": frame(options=b"\x04\x03\x00\x01" + TS),
    "ts wrong length": frame(options=b"\x08\x06" + bytes(6)),
    "sack bad length": frame(options=b"\x05\x0b" + bytes(10)),
    "silly length ends parsing": frame(options=TS + b"\x02\x01\x00\x00"),
    "option past the end": frame(options=TS + b"\x02\x08\x00\x00"),
    "lone kind at the end": frame(options=TS[:8] + b"\x01\x01\x01\x02"),
    "eol ends parsing": frame(options=b"\x00\x00\x00\x00" + TS),
    "unknown kind skipped": frame(options=b"\x1e\x06\x00\x00\x00\x00" + b"\x01\x01"),
    "two mss, the last wins": frame(options=b"\x02\x04\x01\x00\x02\x04\x02\x00"),
    "ethernet padding": frame(options=b"") + bytes(20),
    "doff covering the segment": frame(options=TS),
}

RAW = {
    "ipv4 options": ethernet(ipv4_packet(CLIENT4, SERVER4, with_tcp_checksum(
        CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5)), ip_options=b"\x01\x01\x01\x00"),
        0x0800),
    "ipv6 hop-by-hop": ethernet(ipv6_packet(CLIENT6, SERVER6, b"\x06\x00" + bytes(6) + tcp_header(
        1, 2, 3, 4, ACK, 5), nexthdr=0), 0x86DD),
    "ipv4 fragment": ethernet(ipv4_packet(CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5),
                                          frag=0x2000), 0x0800),
    "udp": ethernet(ipv4_packet(CLIENT4, SERVER4, bytes(8), proto=17), 0x0800),
    "icmp error": icmp_error_frame(False, 3, 4, 1400),
    "icmpv6 error": icmp_error_frame(True, 2, 0, 1280),
    "arp": ethernet(bytes(28), 0x0806),
    "802.1ad": DST_MAC + SRC_MAC + b"\x88\xa8\x00\x07\x08\x00" + ipv4_packet(
        CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5)),
    "doff below 5": frame(doff=4, options=b""),
    "doff beyond the segment": frame(doff=15, options=b""),
    "truncated ethernet": frame()[:13],
    "truncated vlan": frame(vlan=1)[:17],
    "truncated ip": frame()[:30],
    "truncated ipv6": frame(v6=True)[:50],
    "ip length beyond the frame": frame(b"abc")[:-1],
    "ipv4 total below header": (lambda f: f[:16] + b"\x00\x10" + f[18:])(frame()),
    "tcp header cut by ip length": (lambda f: f[:16] + b"\x00\x20" + f[18:])(frame()),
    "ipv6 version wrong": (lambda f: f[:14] + b"\x40" + f[15:])(frame(v6=True)),
}


@pytest.mark.parametrize("name", sorted(PARSED_IN_C))
def test_c_parses_common_shapes_as_wire_does(name: str) -> None:
    f = PARSED_IN_C[name]
    segs, _ = decoded([f], coalesce=False)
    assert segs[0] is not None, "left to Python"
    assert seg_fields(segs[0]) == reference([f])[0]


@pytest.mark.parametrize("name", sorted(RAW))
def test_c_leaves_the_rest_raw_and_wire_decides(name: str) -> None:
    f = RAW[name]
    segs, out = decoded([f])
    assert segs == [None]
    assert records.frame_span(out.records, 0) == (0, len(f))
    assert field(out, 0, "kind") == records.KIND_RAW
    assert_same_as_wire([f])


def test_source_mac_and_record_fields() -> None:
    segs, out = decoded([frame(b"abc"), frame(b"abcd", v6=True)], coalesce=False)
    assert records.source_mac(out.records, 0) == records.source_mac(out.records, 1) == SRC_MAC
    assert [field(out, i, "addr_len") for i in range(2)] == [4, 16]
    assert [field(out, i, "segs") for i in range(2)] == [1, 1]


@st.composite
def damaged_frames(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(list(PARSED_IN_C.values()) + list(RAW.values()))))
    for _ in range(draw(st.integers(0, 4))):
        if base:
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(base)))
    return bytes(base[:cut] if draw(st.booleans()) else base)


@settings(max_examples=3000, deadline=None)
@given(st.lists(damaged_frames(), min_size=1, max_size=6))
def test_damaged_frames_decode_as_wire_decodes(frames: list[bytes]) -> None:
    """Whatever the bytes: what the C path parses equals wire.parse_frame's
    segment, and what it leaves raw wire.parse_frame decides."""
    assert_same_as_wire(frames, coalesce=False)


# ---- coalescing: Linux's tcp_gro_receive rules ------------------------------------------

def sizes(segs: Sequence[Segment | None]) -> list[tuple[int, int]]:
    return [(len(s.payload), s.gso_size) if s is not None else (-1, -1) for s in segs]


def test_in_order_run_becomes_one_record() -> None:
    frames = run([b""] * 5)
    segs, out = decoded(frames)
    assert sizes(segs) == [(5 * 1448, 1448)]
    assert field(out, 0, "segs") == 5
    assert_same_as_wire(frames)


@pytest.mark.parametrize("v6", [False, True])
def test_run_ends_with_psh_which_it_carries(v6: bool) -> None:
    frames = run([b""] * 3, v6=v6)
    frames[1] = frame(b"\x01" * 1448, seq=1000 + 1448, flags=ACK | PSH, v6=v6)
    segs, _ = decoded(frames)
    assert sizes(segs) == [(2896, 1448), (1448, 0)]
    assert segs[0] is not None and segs[0].flags == ACK | PSH
    assert_same_as_wire(frames)


def test_psh_on_the_first_segment_stands_alone() -> None:
    frames = run([b""] * 3)
    frames[0] = frame(b"\x00" * 1448, flags=ACK | PSH)
    assert sizes(decoded(frames)[0]) == [(1448, 0), (2896, 1448)]
    assert_same_as_wire(frames)


def test_shorter_segment_joins_and_ends_the_run() -> None:
    frames = run([b""] * 2) + [frame(b"s" * 500, seq=1000 + 2 * 1448),
                                frame(b"t" * 1448, seq=1000 + 2 * 1448 + 500)]
    assert sizes(decoded(frames)[0]) == [(2 * 1448 + 500, 1448), (1448, 0)]
    assert_same_as_wire(frames)


def test_larger_segment_than_the_first_starts_a_new_run() -> None:
    frames = [frame(b"a" * 1000), frame(b"b" * 1448, seq=2000), frame(b"c" * 1448, seq=3448)]
    assert sizes(decoded(frames)[0]) == [(1000, 0), (2896, 1448)]
    assert_same_as_wire(frames)


@pytest.mark.parametrize("change", [
    {"seq": 1000 + 1448 + 1},  # a gap
    {"seq": 1000},  # a retransmission
    {"ack": 2001},
    {"window": 513},
    {"options": b"\x01\x01\x08\x0a" + struct.pack("!II", 78, 66)},  # another TSval
    {"options": b""},
    {"options": TS + SACK2},
    {"flags": ACK | FIN},
    {"flags": ACK | SYN},
    {"flags": ACK | RST},
    {"flags": ACK | URG},
    {"flags": ACK | ECE},
    {"flags": ACK | CWR},
    {"flags": PSH},  # no ACK
    {"sport": 40001},
    {"dport": 8081},
])
def test_segment_that_differs_is_not_merged(change: dict[str, object]) -> None:
    second = {"seq": 1000 + 1448, **change}
    frames = [frame(b"a" * 1448), frame(b"b" * 1448, **second)]  # type: ignore[arg-type]
    assert sizes(decoded(frames)[0]) == [(1448, 0), (1448, 0)]
    assert_same_as_wire(frames)


@pytest.mark.parametrize("size", [1448, 0])
def test_segments_with_sack_blocks_or_no_payload_never_start_a_run(size: int) -> None:
    first = frame(b"a" * size, options=TS + SACK2 if size else TS)
    frames = [first, frame(b"b" * 1448, seq=1000 + size), frame(b"c" * 1448, seq=2448 + size)]
    assert sizes(decoded(frames)[0]) == [(size, 0), (2896, 1448)]
    assert_same_as_wire(frames)


def test_pure_ack_of_the_flow_ends_the_run() -> None:
    frames = [frame(b"a" * 100), frame(seq=1100), frame(b"b" * 100, seq=1100)]
    assert sizes(decoded(frames)[0]) == [(100, 0), (0, 0), (100, 0)]
    assert_same_as_wire(frames)


def test_interleaved_flows_each_coalesce_in_order() -> None:
    a = run([b""] * 3, sport=1)
    b = run([b""] * 3, sport=2, v6=True)
    frames = [a[0], b[0], a[1], b[1], a[2], b[2]]
    segs = decoded(frames)[0]
    assert [(s.sport, len(s.payload)) for s in segs if s] == [(1, 3 * 1448), (2, 3 * 1448)]
    got = wire_segments(segs)
    want = reference(frames)
    for port in (1, 2):
        assert [s for s in got if s and s["sport"] == port] == \
            [s for s in want if s and s["sport"] == port]


def test_raw_frame_between_pieces_ends_the_runs() -> None:
    frames = run([b""] * 4)
    frames.insert(2, RAW["udp"])
    assert sizes(decoded(frames)[0]) == [(2896, 1448), (-1, -1), (2896, 1448)]
    assert_same_as_wire(frames)


def test_a_record_holds_at_most_64k_of_payload() -> None:
    frames = run([b""] * 100)
    segs = decoded(frames)[0]
    assert all(s is not None and len(s.payload) <= 65535 for s in segs)
    assert sizes(segs)[0] == (45 * 1448, 1448) and len(segs) == 3
    assert_same_as_wire(frames)


def test_coalescing_off() -> None:
    frames = run([b""] * 4)
    assert sizes(decoded(frames, coalesce=False)[0]) == [(1448, 0)] * 4


def test_raw_ports_stay_frames_unless_kept() -> None:
    frames = [frame(b"a", dport=61000), frame(b"b", dport=62000), frame(b"c", dport=8080)]
    segs, _ = decoded(frames, raw_ports=(61000, 64999), keep_ports=(62000, 62999))
    assert [s is None for s in segs] == [True, False, False]
    assert_same_as_wire(frames, raw_ports=(61000, 64999), keep_ports=(62000, 62999))


@st.composite
def flow_frames(draw: st.DrawFn) -> list[bytes]:
    """A few flows' segments as a bulk sender makes them, with the odd change."""
    out, seqs = [], {1: 1000, 2: 5000}
    for _ in range(draw(st.integers(1, 24))):
        port = draw(st.sampled_from([1, 2]))
        size = draw(st.sampled_from([1448, 1448, 1448, 700, 0]))
        kw: dict[str, object] = {}
        if draw(st.integers(0, 5)) == 0:
            kw = draw(st.sampled_from([{"flags": ACK | PSH}, {"flags": ACK | FIN}, {"ack": 9},
                                       {"window": 9}, {"options": b""}, {"seq_skip": 1}]))
        seq = seqs[port] + int(kw.pop("seq_skip", 0))  # type: ignore[call-overload]
        out.append(frame(bytes([port]) * size, seq=seq, sport=port, **kw))  # type: ignore[arg-type]
        seqs[port] = seq + size
    return out


@settings(max_examples=1000, deadline=None)
@given(flow_frames())
def test_coalesced_records_split_back_into_the_wire_segments(frames: list[bytes]) -> None:
    segs = through_c(frames)
    got, want = wire_segments(segs), reference(frames)
    for port in (1, 2):
        assert [s for s in got if s and s["sport"] == port] == \
            [s for s in want if s and s["sport"] == port]


# ---- transmit: cutting a super-frame -------------------------------------------------------

def super_frame(payload: bytes, *, v6: bool = False, flags: int = ACK | PSH | FIN,
                gso_size: int = 1448) -> tuple[Segment, bytes]:
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    seg = Segment(src, dst, 8080, 40000, 0xFFFFF000, 77, flags, 1000, payload, ts=(1, 2),
                  gso_size=gso_size)
    return seg, wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC, checksum=False)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("length", [1449, 2 * 1448, 10000, 65000])
def test_super_frame_is_cut_like_linux_gso(v6: bool, length: int) -> None:
    payload = bytes(i * 7 % 251 for i in range(length))
    seg, f = super_frame(payload, v6=v6)
    pieces = cut_frame(f, 1448)
    assert len(pieces) == -(-length // 1448)
    parsed = [wire.parse_frame(p, verify_checksum=True) for p in pieces]
    assert all(p is not None for p in parsed), "a piece's checksums do not verify"
    # sequence numbers wrap (seq starts 4 KB below 2**32), FIN and PSH on the last only
    assert [seg_fields(p) for p in parsed if p] == [seg_fields(s) for s in seg.split()]
    assert b"".join(bytes(p.payload) for p in parsed if p) == payload
    assert max(len(p) for p in pieces) == len(f) - length + 1448


def test_cwr_only_on_the_first_piece() -> None:
    seg, f = super_frame(bytes(5000), flags=ACK | CWR | PSH)
    flags = [p.flags for p in (wire.parse_frame(x) for x in cut_frame(f, 1448)) if p]
    assert flags == [ACK | CWR, ACK, ACK, ACK | PSH] == [s.flags for s in seg.split()]


def test_frame_no_longer_than_gso_goes_whole() -> None:
    seg, f = super_frame(bytes(1448))
    filled = bytearray(f)
    fill_checksums(filled)
    assert cut_frame(f, 1448) == [bytes(filled)]
    assert cut_frame(f, 0) == [bytes(filled)]


def test_ipv4_id_advances_per_piece_without_df() -> None:
    _, f = super_frame(bytes(3000))
    f = f[:18] + b"\x12\x34\x00\x00" + f[22:]  # ID 0x1234, no DF
    ids = [struct.unpack_from("!H", p, 18)[0] for p in cut_frame(f, 1448)]
    assert ids == [0x1234, 0x1235, 0x1236]


@pytest.mark.parametrize("bad", ["piece too big", "not tcp", "trailing bytes", "bad doff",
                                 "ipv6 extension header", "truncated"])
def test_cutting_refuses_what_it_cannot_cut(bad: str) -> None:
    _, f = super_frame(bytes(5000))
    gso = 1448
    if bad == "piece too big":
        gso = 2048 - 66 + 1
    elif bad == "not tcp":
        f = f[:23] + b"\x11" + f[24:]
    elif bad == "trailing bytes":
        f += b"\0"
    elif bad == "bad doff":
        f = f[:46] + b"\x40" + f[47:]
    elif bad == "ipv6 extension header":
        _, f = super_frame(bytes(5000), v6=True)
        f = f[:20] + b"\x00" + f[21:]
    elif bad == "truncated":
        f = f[:-1]
    with pytest.raises(ValueError):
        cut_frame(f, gso)


# ---- transmit: jumbo frames (a socket with AF_XDP multi-buffer) -------------------------

JUMBO = 14 + 9000  # the longest frame of a 9000-byte MTU


@pytest.mark.parametrize("v6", [False, True])
def test_super_frame_is_cut_into_jumbo_frames(v6: bool) -> None:
    """With a longest frame of 9014 bytes (MTU 9000) the pieces are 8948-byte segments
    (MSS 8960 less 12 of timestamps), each longer than any UMEM frame, checksums right."""
    payload = bytes(i * 13 % 251 for i in range(60000))
    gso = 8960 - 12 - (20 if v6 else 0)
    seg, f = super_frame(payload, v6=v6, gso_size=gso)
    pieces = cut_frame(f, gso, max_frame=JUMBO)
    assert len(pieces) == -(-len(payload) // gso)
    assert max(len(p) for p in pieces) == len(f) - len(payload) + gso <= JUMBO
    assert min(len(p) for p in pieces[:-1]) > 4096
    parsed = [wire.parse_frame(p, verify_checksum=True) for p in pieces]
    assert all(p is not None for p in parsed), "a piece's checksums do not verify"
    assert [seg_fields(p) for p in parsed if p] == [seg_fields(s) for s in seg.split()]
    assert b"".join(bytes(p.payload) for p in parsed if p) == payload


def test_jumbo_pieces_are_bounded_by_the_longest_frame() -> None:
    """A piece one byte longer than the socket's longest frame is refused, whole frames
    too; one that fits exactly is cut."""
    _, f = super_frame(bytes(30000))
    headers = len(f) - 30000
    assert len(cut_frame(f, JUMBO - headers, max_frame=JUMBO)) == 4
    with pytest.raises(ValueError, match="exceed the longest frame 9014"):
        cut_frame(f, JUMBO - headers + 1, max_frame=JUMBO)
    _, whole = super_frame(bytes(JUMBO - headers), gso_size=0)
    assert cut_frame(whole, 0, max_frame=JUMBO)[0][-100:] == whole[-100:]
    with pytest.raises(ValueError, match="exceed the longest frame"):
        cut_frame(whole + b"\0", 0, max_frame=JUMBO)
