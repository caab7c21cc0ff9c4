"""wire.py against arbitrary and damaged input (hypothesis).

The parser faces the open internet: whatever the bytes, it must return a
Segment or None (never raise), never accept a partial frame, and when it does
accept a damaged frame, every field it returns must be what the bytes say.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from aioxdp.tcp import wire
from aioxdp.tcp.segment import Segment

from .test_wire import (
    CLIENT4,
    CLIENT6,
    DST_MAC,
    SERVER4,
    SERVER6,
    SRC_MAC,
    icmp_error_frame,
    seg_fields,
)

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    v6 = draw(st.booleans())
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    ts = draw(st.none() | st.tuples(u32, u32))
    sack = tuple(draw(st.lists(st.tuples(u32, u32), max_size=5)))
    return Segment(
        src, dst, draw(u16), draw(u16), draw(u32), draw(u32), draw(st.integers(0, 255)),
        draw(u16), draw(st.binary(max_size=300)), urgent=draw(u16),
        mss=draw(st.none() | u16), wscale=draw(st.none() | st.integers(0, 255)),
        sack_permitted=draw(st.booleans()), sack=sack if not draw(st.booleans()) else (), ts=ts,
    )


def frame_of(seg: Segment) -> bytes:
    return wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, verify: bool) -> None:
    for parse in (wire.parse_frame, wire.parse_ip):
        seg = parse(data, verify_checksum=verify)
        assert seg is None or isinstance(seg, Segment)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\x08\x00\x45", b"\x86\xdd\x60", b"\x81\x00\x00\x01\x08\x00\x45"]),
       st.binary(max_size=120))
def test_arbitrary_bytes_behind_plausible_headers_never_raise(head: bytes, rest: bytes) -> None:
    frame = DST_MAC + SRC_MAC + head + rest
    seg = wire.parse_frame(frame, verify_checksum=False)
    assert seg is None or isinstance(seg, Segment)


def assert_same_up_to_sack(seg: Segment, back: Segment) -> None:
    """Equal fields, except that back.sack may be a prefix of seg.sack."""
    fields, fields_back = seg_fields(seg), seg_fields(back)
    sack, sack_back = seg.sack, back.sack
    del fields["sack"], fields_back["sack"]
    assert fields == fields_back
    assert sack[:len(sack_back)] == sack_back


@settings(max_examples=200, deadline=None)
@given(segments())
def test_build_parse_round_trip(seg: Segment) -> None:
    back = wire.parse_frame(frame_of(seg))
    assert back is not None
    assert_same_up_to_sack(seg, back)
    # Linux's layout: MSS 4, TS 12 (SACKOK rides in its padding) or NOP NOP SACKOK 4, NOP WS 4,
    # then NOP NOP SACK with 8 bytes a block in what is left of the 40
    used = 4 * (seg.mss is not None) + (12 if seg.ts else 4 * seg.sack_permitted) + \
        4 * (seg.wscale is not None)
    assert len(back.sack) == min(len(seg.sack), (40 - used - 4) // 8)


@settings(max_examples=60, deadline=None)
@given(segments())
def test_every_truncation_is_dropped(seg: Segment) -> None:
    frame = frame_of(seg)
    for k in range(len(frame)):
        assert wire.parse_frame(frame[:k], verify_checksum=False) is None
        assert wire.parse_frame(frame[:k]) is None


def tcp_offset(frame: bytes) -> tuple[int, int] | None:
    """Where the TCP header starts and the IP payload ends, read straight from the frame
    (None for the layouts this check does not follow: VLAN tags, IPv6 extension headers)."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00":
        return 14 + (frame[14] & 15) * 4, 14 + struct.unpack_from("!H", frame, 16)[0]
    if ethertype == b"\x86\xdd" and frame[20] == 6:
        return 54, 54 + struct.unpack_from("!H", frame, 18)[0]
    return None


def assert_consistent(seg: Segment, frame: bytes) -> None:
    """Every field of an accepted frame is what its bytes say."""
    where = tcp_offset(frame)
    if where is None:
        return
    t, end = where
    sport, dport, seq, ack, doff, flags, window, _, urgent = struct.unpack_from(
        "!HHIIBBHHH", frame, t)
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window, seg.urgent) == \
        (sport, dport, seq, ack, flags, window, urgent)
    assert seg.payload == frame[t + (doff >> 4) * 4:end]
    if frame[12:14] == b"\x08\x00":
        assert (seg.src, seg.dst) == (frame[26:30], frame[30:34])
    else:
        assert (seg.src, seg.dst) == (frame[22:38], frame[38:54])
    assert len(seg.sack) <= 4
    # the decoded options survive another build/parse (SACK blocks may be cut by option space)
    again = wire.parse_frame(frame_of(seg))
    assert again is not None
    assert_same_up_to_sack(seg, again)


mutation = st.tuples(st.integers(0, 10_000), st.integers(1, 255))


@settings(max_examples=300, deadline=None)
@given(segments(), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_frames_parse_consistently_or_drop(seg: Segment,
                                                   flips: list[tuple[int, int]]) -> None:
    frame = bytearray(frame_of(seg))
    for pos, xor in flips:
        frame[pos % len(frame)] ^= xor
    back = wire.parse_frame(bytes(frame), verify_checksum=False)
    if back is not None:
        assert_consistent(back, bytes(frame))


@settings(max_examples=300, deadline=None)
@given(segments(), st.integers(0, 10_000), st.integers(1, 255))
def test_single_byte_damage_to_tcp_is_caught_by_checksum(seg: Segment, pos: int,
                                                         xor: int) -> None:
    # a change of one byte moves the one's-complement sum by d or d*256, 0 < |d| < 256:
    # never a multiple of 0xFFFF, so the checksum always catches it
    frame = bytearray(frame_of(seg))
    t = 34 if len(seg.src) == 4 else 54
    frame[t + pos % (len(frame) - t)] ^= xor
    assert wire.parse_frame(bytes(frame)) is None


@settings(max_examples=200, deadline=None)
@given(segments(), st.integers(0, 60), st.binary(max_size=8))
def test_inserted_or_deleted_bytes_parse_consistently_or_drop(seg: Segment, pos: int,
                                                              insert: bytes) -> None:
    frame = frame_of(seg)
    pos = 14 + pos % (len(frame) - 14)
    for damaged in (frame[:pos] + insert + frame[pos:], frame[:pos] + frame[pos + 1:]):
        back = wire.parse_frame(damaged, verify_checksum=False)
        if back is not None:
            assert_consistent(back, damaged)


# --- ICMP errors (TCP-CHECKLIST 21): spoofable, so the parser must hold against anything ------

icmp_errors = st.sampled_from([(False, 3, 4, 1280), (False, 3, 3, 0), (False, 11, 0, 0),
                               (True, 2, 0, 1280), (True, 1, 4, 0), (True, 3, 0, 0)])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_never_raise_as_icmp(data: bytes, verify: bool) -> None:
    err = wire.parse_icmp_error(data, verify_checksum=verify)
    assert err is None or isinstance(err, wire.IcmpError)


@settings(max_examples=300, deadline=None)
@given(icmp_errors, st.integers(0, 600), st.lists(mutation, max_size=4), st.integers(0, 700))
def test_mutated_icmp_errors_parse_consistently_or_drop(
        error: tuple[bool, int, int, int], quoted_len: int, flips: list[tuple[int, int]],
        cut: int) -> None:
    v6, icmp_type, code, rest = error
    frame = bytearray(icmp_error_frame(v6, icmp_type, code, rest, quoted_len=quoted_len))
    for pos, xor in flips:
        frame[pos % len(frame)] ^= xor
    damaged = bytes(frame[:len(frame) - cut % len(frame)])
    err = wire.parse_icmp_error(damaged, verify_checksum=False)
    if err is not None:
        # what it names is what the bytes say: the quote's source is the frame's destination
        dst = damaged[38:54] if v6 else damaged[30:34]
        assert err.local_addr == dst and len(err.remote_addr) == len(dst)
        assert 0 <= err.seq <= 0xFFFFFFFF and (err.mtu is None) == (err.kind in (
            "unreachable", "time-exceeded"))


@settings(max_examples=200, deadline=None)
@given(icmp_errors, st.integers(0, 10_000), st.integers(1, 255))
def test_single_byte_damage_to_an_icmp_error_is_caught_by_checksum(
        error: tuple[bool, int, int, int], pos: int, xor: int) -> None:
    v6, icmp_type, code, rest = error
    frame = bytearray(icmp_error_frame(v6, icmp_type, code, rest))
    i = 54 if v6 else 34  # the ICMP message
    frame[i + pos % (len(frame) - i)] ^= xor
    assert wire.parse_icmp_error(bytes(frame)) is None
