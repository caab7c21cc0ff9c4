"""wire.py: frames <-> Segment.

Frames here are written by hand with struct and a textbook RFC 1071 checksum
loop (``ref_checksum``), independently of wire.py, so that parse and build are
each checked against a second implementation and not only against each other.
test_wire_fuzz.py imports these helpers.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import Counter

import pytest

from aioxdp.tcp import wire
from aioxdp.tcp.segment import ACK, FIN, PSH, RST, SYN, Segment

SRC_MAC = bytes.fromhex("020000000002")
DST_MAC = bytes.fromhex("020000000001")
CLIENT4 = bytes([198, 18, 0, 2])
SERVER4 = bytes([198, 18, 0, 1])
CLIENT6 = bytes.fromhex("20010002000000000000000000000002")
SERVER6 = bytes.fromhex("20010002000000000000000000000001")


def ref_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_header(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
               options: bytes = b"", *, doff: int | None = None, urgent: int = 0) -> bytes:
    if doff is None:
        doff = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0,
                       urgent) + options


def with_tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> bytes:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(segment))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), 6)
    csum = ref_checksum(pseudo + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def ipv4_packet(src: bytes, dst: bytes, payload: bytes, *, proto: int = 6, frag: int = 0x4000,
                ident: int = 0, ttl: int = 64, ip_options: bytes = b"") -> bytes:
    ihl = 5 + len(ip_options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, frag,
                         ttl, proto, 0, src, dst) + ip_options
    csum = ref_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6_packet(src: bytes, dst: bytes, payload: bytes, *, nexthdr: int = 6,
                hop_limit: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nexthdr, hop_limit, src,
                       dst) + payload


def ethernet(packet: bytes, ethertype: int, *, vlan: int | None = None) -> bytes:
    head = DST_MAC + SRC_MAC
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + packet


def tcp4_frame(options: bytes = b"", payload: bytes = b"", *, flags: int = 0x10,
               seq: int = 1000, ack: int = 2000, window: int = 512, sport: int = 40000,
               dport: int = 8080, doff: int | None = None) -> bytes:
    """An IPv4 TCP frame with any option bytes, checksums right."""
    segment = tcp_header(sport, dport, seq, ack, flags, window, options, doff=doff) + payload
    segment = with_tcp_checksum(CLIENT4, SERVER4, segment)
    return ethernet(ipv4_packet(CLIENT4, SERVER4, segment), 0x0800)


# Segment's fields (a compiled class has no __slots__ to read them from)
SLOTS = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "window", "payload", "urgent",
         "mss", "wscale", "sack_permitted", "sack", "ts", "gso_size")


def seg_fields(seg: Segment) -> dict[str, object]:
    fields = {name: getattr(seg, name) for name in SLOTS}
    fields["payload"] = bytes(seg.payload)  # type: ignore[arg-type]
    return fields


def parse(frame: bytes | bytearray | memoryview, **kw: object) -> Segment:
    seg = wire.parse_frame(frame, **kw)  # type: ignore[arg-type]
    assert seg is not None
    return seg


def dropped(frame: bytes | bytearray, **kw: object) -> Counter[str]:
    drops: Counter[str] = Counter()
    assert wire.parse_frame(frame, drops=drops, **kw) is None  # type: ignore[arg-type]
    assert sum(drops.values()) == 1
    return drops


# --- checksum ----------------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert wire.checksum(data) == 0x220D == ref_checksum(data)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff", b"\xff\xff", b"\x00\x00\x00",
                                  b"\x12\x34\x56", bytes(range(256)) * 6, b"\xff" * 1481])
def test_checksum_matches_reference(data: bytes) -> None:
    assert wire.checksum(data) == ref_checksum(data)


def test_checksum_start_is_a_pseudo_header_sum() -> None:
    data = bytes(range(7, 77))
    pseudo = CLIENT4 + SERVER4 + struct.pack("!BBH", 0, 6, len(data))
    assert wire.checksum(data, wire.pseudo_header_sum(CLIENT4, SERVER4, len(data))) == \
        ref_checksum(pseudo + data)


# --- byte-exact against hand-written frames ----------------------------------------------

# A SYN as Linux 6.x sends it: MSS 1460, SACKOK+TS packed in one word, NOP WS 7.
LINUX_SYN_OPTIONS = bytes.fromhex("020405b4" "0402080a" "0001e240" "00000000" "01030307")


def linux_syn_frame() -> bytes:
    return tcp4_frame(LINUX_SYN_OPTIONS, flags=SYN, seq=0x12345678, ack=0, window=64240)


def test_parse_linux_syn() -> None:
    seg = parse(linux_syn_frame())
    assert (seg.src, seg.dst, seg.sport, seg.dport) == (CLIENT4, SERVER4, 40000, 8080)
    assert (seg.seq, seg.ack, seg.flags, seg.window) == (0x12345678, 0, SYN, 64240)
    assert (seg.mss, seg.wscale, seg.sack_permitted, seg.ts) == (1460, 7, True, (123456, 0))
    assert seg.sack == () and seg.payload == b"" and seg.seg_len == 1


def test_build_linux_syn_byte_exact() -> None:
    seg = Segment(CLIENT4, SERVER4, 40000, 8080, 0x12345678, 0, SYN, 64240, mss=1460, wscale=7,
                  sack_permitted=True, ts=(123456, 0))
    assert wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC) == linux_syn_frame()


@pytest.mark.parametrize(("fields", "options"), [
    ({}, b""),
    ({"ts": (1, 2)}, bytes.fromhex("0101080a0000000100000002")),
    ({"sack_permitted": True}, bytes.fromhex("01010402")),
    ({"mss": 1220, "sack_permitted": True, "wscale": 9},
     bytes.fromhex("020404c4" "01010402" "01030309")),
    ({"ts": (5, 6), "sack": ((100, 200), (300, 400))},
     bytes.fromhex("0101080a0000000500000006" "0101051200000064000000c80000012c00000190")),
    ({"sack": ((1, 2),)}, bytes.fromhex("0101050a0000000100000002")),
])
def test_build_options_linux_layout(fields: dict[str, object], options: bytes) -> None:
    seg = Segment(CLIENT4, SERVER4, 40000, 8080, 1000, 2000, ACK, 512, b"hi", **fields)  # type: ignore[arg-type]
    expected = tcp4_frame(options, b"hi")
    assert wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC) == expected


def test_build_sack_blocks_limited_by_option_space() -> None:
    blocks = tuple((i * 10, i * 10 + 5) for i in range(1, 6))
    with_ts = Segment(CLIENT4, SERVER4, 1, 2, 0, 0, ACK, 0, sack=blocks, ts=(1, 1))
    assert parse(wire.build_frame(with_ts, src_mac=SRC_MAC, dst_mac=DST_MAC)).sack == blocks[:3]
    without = Segment(CLIENT4, SERVER4, 1, 2, 0, 0, ACK, 0, sack=blocks)
    assert parse(wire.build_frame(without, src_mac=SRC_MAC, dst_mac=DST_MAC)).sack == blocks[:4]


def test_build_ipv4_header_fields() -> None:
    seg = Segment(CLIENT4, SERVER4, 1, 2, 0, 0, ACK, 0, b"abc")
    frame = wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC, ttl=17)
    vihl, tos, total, ident, frag, ttl, proto = struct.unpack_from("!BBHHHBB", frame, 14)
    assert (vihl, tos, total, ident, frag, ttl, proto) == (0x45, 0, 43, 0, 0x4000, 17, 6)
    assert ref_checksum(frame[14:34]) == 0


def test_build_ipv6_byte_exact() -> None:
    seg = Segment(CLIENT6, SERVER6, 40000, 443, 7, 9, ACK | PSH, 100, b"payload", ts=(10, 20))
    options = bytes.fromhex("0101080a0000000a00000014")
    tcp = with_tcp_checksum(CLIENT6, SERVER6,
                            tcp_header(40000, 443, 7, 9, ACK | PSH, 100, options) + b"payload")
    expected = ethernet(ipv6_packet(CLIENT6, SERVER6, tcp, hop_limit=33), 0x86DD)
    assert wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC, ttl=33) == expected


def test_build_without_checksums_leaves_fields_zero() -> None:
    seg = Segment(CLIENT4, SERVER4, 1, 2, 3, 4, ACK, 5, b"xyz")
    frame = wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC, checksum=False)
    assert frame[24:26] == b"\0\0" and frame[34 + 16:34 + 18] == b"\0\0"
    assert wire.parse_frame(frame) is None
    assert parse(frame, verify_checksum=False).payload == b"xyz"


def test_write_frame_in_place_at_offset() -> None:
    seg = Segment(CLIENT4, SERVER4, 1, 2, 3, 4, ACK, 5, memoryview(b"data"), ts=(1, 2))
    buf = bytearray(b"\xee" * 200)
    n = wire.write_frame(buf, 50, seg, src_mac=SRC_MAC, dst_mac=DST_MAC)
    assert n == wire.frame_length(seg) == 14 + 20 + 32 + 4
    assert bytes(buf[50:50 + n]) == wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC)
    assert buf[:50] == b"\xee" * 50 and buf[50 + n:] == b"\xee" * (150 - n)
    with pytest.raises(ValueError):
        wire.write_frame(buf, 200 - n + 1, seg, src_mac=SRC_MAC, dst_mac=DST_MAC)
    with pytest.raises(ValueError):
        wire.write_frame(buf, 0, seg, src_mac=SRC_MAC[:5], dst_mac=DST_MAC)
    mixed = Segment(CLIENT4, SERVER6, 1, 2, 3, 4, ACK, 5)
    with pytest.raises(ValueError):
        wire.write_frame(buf, 0, mixed, src_mac=SRC_MAC, dst_mac=DST_MAC)
    assert len(buf) == 200


# --- round trips -------------------------------------------------------------------------------

OPTION_SETS: list[dict[str, object]] = [
    {},
    {"ts": (0xFFFFFFFF, 0)},
    {"mss": 1460, "wscale": 7, "sack_permitted": True, "ts": (1, 2)},
    {"mss": 536, "wscale": 0, "sack_permitted": True},
    {"mss": 0, "wscale": 15},  # passed through as sent
    {"sack_permitted": True, "ts": (3, 4)},
    {"sack": ((1, 2), (3, 4), (5, 6), (0xFFFFFFF0, 0x10))},
    {"sack": ((1, 2), (3, 4), (5, 6)), "ts": (7, 8)},
]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 5 + b"odd"])
def test_round_trip(family: int, options: dict[str, object], payload: bytes) -> None:
    src, dst = (CLIENT4, SERVER4) if family == 4 else (CLIENT6, SERVER6)
    seg = Segment(src, dst, 65535, 1, 0xFFFFFFFF, 0x80000000, SYN | ACK | FIN | PSH | RST, 65535,
                  payload, urgent=7, **options)  # type: ignore[arg-type]
    frame = wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC)
    back = parse(frame)
    assert seg_fields(back) == seg_fields(seg)
    assert type(back.payload) is bytes
    assert seg_fields(parse(memoryview(bytearray(frame)))) == seg_fields(seg)
    assert seg_fields(parse(bytearray(frame))) == seg_fields(seg)
    packet = frame[14:]
    assert seg_fields(wire.parse_ip(packet)) == seg_fields(seg)  # type: ignore[arg-type]


def test_payload_is_a_copy_of_the_frame() -> None:
    frame = bytearray(tcp4_frame(payload=b"hello"))
    seg = parse(memoryview(frame))
    frame[-5:] = b"XXXXX"
    assert seg.payload == b"hello"


def test_ethernet_padding_ignored() -> None:
    frame = tcp4_frame()  # 54 bytes: a NIC pads it to 60
    seg = parse(frame + b"\xab" * 6)
    assert seg.payload == b""


def test_vlan_tagged() -> None:
    segment = with_tcp_checksum(CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5) + b"v")
    frame = ethernet(ipv4_packet(CLIENT4, SERVER4, segment), 0x0800, vlan=100)
    assert parse(frame).payload == b"v"


def test_ipv4_options_skipped() -> None:
    segment = with_tcp_checksum(CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5) + b"o")
    frame = ethernet(ipv4_packet(CLIENT4, SERVER4, segment, ip_options=b"\x01\x01\x01\x00"),
                     0x0800)
    seg = parse(frame)
    assert (seg.sport, seg.payload) == (1, b"o")


def _ext(nexthdr: int, body_len_units: int = 0) -> bytes:
    return bytes((nexthdr, body_len_units)) + bytes(6 + 8 * body_len_units)


def test_ipv6_extension_headers_skipped() -> None:
    tcp = with_tcp_checksum(CLIENT6, SERVER6, tcp_header(5, 6, 7, 8, ACK, 9) + b"six")
    chain = _ext(60, 1) + _ext(43) + _ext(6, 2)  # Hop-by-Hop -> Dest opts -> Routing -> TCP
    frame = ethernet(ipv6_packet(CLIENT6, SERVER6, chain + tcp, nexthdr=0), 0x86DD)
    seg = parse(frame)
    assert (seg.sport, seg.dport, seg.payload) == (5, 6, b"six")


# --- every drop reason -------------------------------------------------------------------------


def test_drop_truncated_ethernet_and_vlan() -> None:
    assert dropped(b"\x00" * 13) == {"truncated": 1}
    assert dropped(DST_MAC + SRC_MAC + b"\x81\x00\x00") == {"truncated": 1}


def test_drop_not_ip() -> None:
    assert dropped(ethernet(b"\x00" * 28, 0x0806)) == {"not-ip": 1}  # ARP
    assert dropped(ethernet(b"\x00" * 28, 0x88A8)) == {"not-ip": 1}  # QinQ outer tag: not handled


def test_drop_ip_truncated() -> None:
    frame = tcp4_frame(payload=b"abcdef")
    assert dropped(frame[:-1]) == {"truncated": 1}  # total length says more
    assert dropped(frame[:30]) == {"truncated": 1}  # not even an IP header
    assert dropped(frame[:14 + 20 + 19]) == {"truncated": 1}  # TCP header cut


def test_drop_bad_ip_header() -> None:
    frame = bytearray(tcp4_frame())
    frame[14] = 0x44  # IHL 4
    assert dropped(frame, verify_checksum=False) == {"bad-ip-header": 1}
    frame[14] = 0x55  # version 5
    assert dropped(frame, verify_checksum=False) == {"bad-ip-header": 1}
    frame = bytearray(tcp4_frame())
    frame[16:18] = b"\x00\x13"  # total length 19 < IHL
    assert dropped(frame, verify_checksum=False) == {"bad-ip-header": 1}
    v6 = bytearray(ethernet(ipv6_packet(CLIENT6, SERVER6, tcp_header(1, 2, 3, 4, ACK, 5)), 0x86DD))
    v6[14] = 0x40
    assert dropped(v6, verify_checksum=False) == {"bad-ip-header": 1}
    assert wire.parse_ip(b"\x50" + bytes(60)) is None
    assert wire.parse_ip(b"") is None


def test_drop_bad_checksums() -> None:
    frame = bytearray(tcp4_frame(payload=b"data"))
    frame[24] ^= 1
    assert dropped(frame) == {"bad-ip-checksum": 1}
    assert parse(frame, verify_checksum=False).payload == b"data"
    frame = bytearray(tcp4_frame(payload=b"data"))
    frame[-1] ^= 0x80  # payload byte
    assert dropped(frame) == {"bad-checksum": 1}
    frame = bytearray(tcp4_frame(payload=b"data"))
    frame[34 + 2] ^= 0x01  # port
    assert dropped(frame) == {"bad-checksum": 1}
    v6 = bytearray(wire.build_frame(Segment(CLIENT6, SERVER6, 1, 2, 3, 4, ACK, 5, b"z"),
                                    src_mac=SRC_MAC, dst_mac=DST_MAC))
    v6[22 + 15] ^= 1  # source address: covered by the pseudo-header
    assert dropped(v6) == {"bad-checksum": 1}


def test_drop_not_tcp() -> None:
    udp = ethernet(ipv4_packet(CLIENT4, SERVER4, bytes(8), proto=17), 0x0800)
    assert dropped(udp) == {"not-tcp": 1}
    assert dropped(ethernet(ipv6_packet(CLIENT6, SERVER6, bytes(8), nexthdr=58), 0x86DD)) == \
        {"not-tcp": 1}
    no_next = ethernet(ipv6_packet(CLIENT6, SERVER6, _ext(59), nexthdr=60), 0x86DD)
    assert dropped(no_next) == {"not-tcp": 1}


@pytest.mark.parametrize("frag", [0x2000, 0x6000, 0x0001, 0x4001, 0x1FFF])
def test_drop_ipv4_fragments(frag: int) -> None:
    segment = with_tcp_checksum(CLIENT4, SERVER4, tcp_header(1, 2, 3, 4, ACK, 5) + b"f")
    assert dropped(ethernet(ipv4_packet(CLIENT4, SERVER4, segment, frag=frag), 0x0800)) == \
        {"fragment": 1}


def test_drop_ipv6_fragment_header() -> None:
    tcp = with_tcp_checksum(CLIENT6, SERVER6, tcp_header(5, 6, 7, 8, ACK, 9))
    frag = bytes((6, 0, 0, 0, 0, 0, 0, 1))  # atomic fragment, still a Fragment header
    frame = ethernet(ipv6_packet(CLIENT6, SERVER6, _ext(44) + frag + tcp, nexthdr=0), 0x86DD)
    assert dropped(frame) == {"fragment": 1}


def test_drop_ipv6_bad_extension_chains() -> None:
    tcp = with_tcp_checksum(CLIENT6, SERVER6, tcp_header(5, 6, 7, 8, ACK, 9))
    late_hbh = ethernet(ipv6_packet(CLIENT6, SERVER6, _ext(0) + _ext(6) + tcp, nexthdr=60),
                        0x86DD)
    assert dropped(late_hbh) == {"bad-ip-header": 1}
    long_chain = b"".join(_ext(60) for _ in range(9)) + _ext(6) + tcp
    assert dropped(ethernet(ipv6_packet(CLIENT6, SERVER6, long_chain, nexthdr=60), 0x86DD)) == \
        {"bad-ip-header": 1}
    past_end = ethernet(ipv6_packet(CLIENT6, SERVER6, _ext(6, 1)[:12], nexthdr=60), 0x86DD)
    assert dropped(past_end) == {"truncated": 1}
    cut = ethernet(ipv6_packet(CLIENT6, SERVER6, b"\x06\x00\x00", nexthdr=60), 0x86DD)
    assert dropped(cut) == {"truncated": 1}


@pytest.mark.parametrize("doff", [0, 4, 7, 15])
def test_drop_bad_data_offset(doff: int) -> None:
    # 20 header bytes and 4 payload bytes: offsets below 5 words are illegal, 7+ run past the end
    assert dropped(tcp4_frame(payload=b"abcd", doff=doff)) == {"bad-offset": 1}


def test_data_offset_covering_the_whole_segment() -> None:
    # offset 6 words: the 4 bytes after the header are options (kind 0x61 with a length
    # running past the option area: ignored), and the payload is empty
    drops: Counter[str] = Counter()
    seg = wire.parse_frame(tcp4_frame(payload=b"abcd", doff=6), drops=drops)
    assert seg is not None and seg.payload == b"" and drops == {"bad-option": 1}


# --- TCP options (MUST-5/6/7, RFC 2018, RFC 7323) ------------------------------------------------


def parse_options(options: bytes, flags: int = ACK) -> tuple[Segment, Counter[str]]:
    drops: Counter[str] = Counter()
    seg = wire.parse_frame(tcp4_frame(options, b"pay", flags=flags), drops=drops)
    assert seg is not None and seg.payload == b"pay"
    return seg, drops


def test_unknown_options_skipped() -> None:
    seg, drops = parse_options(bytes.fromhex("1e06aabbccdd" "020405b4" "fe02" "0402" "0000"))
    assert (seg.mss, seg.sack_permitted, drops) == (1460, True, Counter())


def test_options_accepted_on_non_syn_segments() -> None:
    seg, _ = parse_options(bytes.fromhex("020405b4" "01030303"), flags=ACK)
    assert (seg.mss, seg.wscale) == (1460, 3)


def test_eol_ends_options() -> None:
    seg, drops = parse_options(bytes.fromhex("00" "020405b4" "000000"))
    assert seg.mss is None and not drops


@pytest.mark.parametrize("silly", [b"\x1e\x00", b"\x1e\x01", b"\x02\x00", b"\x08\x01"])
def test_option_length_below_two_ends_parsing(silly: bytes) -> None:
    seg, drops = parse_options(bytes.fromhex("01030305") + silly + bytes.fromhex("020405b4") +
                               b"\x00\x00")
    assert seg.wscale == 5  # decoded before the bad option: kept (Linux)
    assert seg.mss is None  # after it: never looked at
    assert drops == {"bad-option": 1}


def test_option_running_past_data_offset() -> None:
    # a timestamp option of length 10 starting 6 bytes before the end of the option area
    seg, drops = parse_options(bytes.fromhex("020405b4" "01" "01" "080a00000001"))
    assert (seg.mss, seg.ts, drops) == (1460, None, {"bad-option": 1})


def test_kind_without_length_byte_at_the_end() -> None:
    seg, drops = parse_options(bytes.fromhex("020405b4" "010101" "08"))
    assert (seg.mss, seg.ts, drops) == (1460, None, {"bad-option": 1})


def test_known_option_with_wrong_length_skipped() -> None:
    seg, drops = parse_options(bytes.fromhex("02050000ff" "030400aa" "01" "0402" "01010101"))
    assert (seg.mss, seg.wscale, seg.sack_permitted) == (None, None, True)
    assert drops == {"bad-option": 2}


@pytest.mark.parametrize("length", [2, 3, 9, 11, 17])
def test_malformed_sack_option_ignored(length: int) -> None:
    body = bytes(range(1, length - 1))
    options = bytes((5, length)) + body + bytes.fromhex("01010402")
    options += b"\x00" * (-len(options) % 4)
    seg, drops = parse_options(options)
    assert seg.sack == () and seg.sack_permitted  # the rest of the options still count
    assert drops == {"bad-option": 1}


def test_sack_blocks() -> None:
    blocks = ((1, 2), (0xFFFFFFFF, 5), (7, 8), (9, 10))
    options = b"\x01\x01\x05\x22" + b"".join(struct.pack("!II", *b) for b in blocks)
    seg, drops = parse_options(options)
    assert seg.sack == blocks and not drops


def test_last_duplicate_option_wins() -> None:
    seg, _ = parse_options(bytes.fromhex("020405b4" "02040218"))
    assert seg.mss == 536


def test_timestamp_fast_path_and_general_path_agree() -> None:
    fast, _ = parse_options(bytes.fromhex("0101080a0000000b0000000c"))
    general, _ = parse_options(bytes.fromhex("080a0000000b0000000c0101"))
    assert fast.ts == general.ts == (11, 12)


# --- the common frame: IPv4, NOP NOP TS, read and written with one struct call ----------------


def ts_frame(payload: bytes = b"ping") -> bytes:
    return tcp4_frame(bytes.fromhex("0101080a") + struct.pack("!II", 11, 12), payload,
                      flags=ACK | PSH)


@pytest.mark.parametrize("verify", [True, False])
def test_common_frame_parses_as_on_the_general_path(verify: bool) -> None:
    frame = ts_frame()
    fast = parse(frame, verify_checksum=verify)
    assert fast.ts == (11, 12) and fast.payload == b"ping" and fast.flags == ACK | PSH
    tagged = frame[:12] + struct.pack("!HH", 0x8100, 7) + frame[12:]  # the general path
    assert seg_fields(fast) == seg_fields(parse(tagged, verify_checksum=verify))
    assert seg_fields(parse(memoryview(bytearray(frame)), verify_checksum=verify)) == \
        seg_fields(fast)


def test_common_frame_shape_with_a_fault_is_a_counted_drop() -> None:
    frame = bytearray(ts_frame())
    frame[-1] ^= 1
    assert dropped(frame) == Counter({"bad-checksum": 1})
    frame = bytearray(ts_frame())
    frame[24] ^= 1  # the IPv4 header checksum
    assert dropped(frame) == Counter({"bad-ip-checksum": 1})
    assert dropped(ts_frame()[:-1], verify_checksum=False) == Counter({"truncated": 1})


def test_common_frame_built_byte_exact() -> None:
    seg = Segment(CLIENT4, SERVER4, 40000, 8080, 1000, 2000, ACK | PSH, 512, b"ping", ts=(11, 12))
    assert wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC) == ts_frame()
    bare = wire.build_frame(seg, src_mac=SRC_MAC, dst_mac=DST_MAC, checksum=False)
    assert bare[24:26] == b"\0\0" and bare[34 + 16:34 + 18] == b"\0\0"
    assert seg_fields(parse(bare, verify_checksum=False)) == seg_fields(seg)


# --- a real Linux frame ------------------------------------------------------------------------

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _capture_syn(sniffer: socket.socket, dport: int, deadline: float) -> bytes:
    while time.monotonic() < deadline:
        try:
            frame, addr = sniffer.recvfrom(65535)
        except TimeoutError:
            continue
        seg = wire.parse_frame(frame, verify_checksum=False)
        if addr[2] == PACKET_OUTGOING and seg is not None and seg.dport == dport and \
                seg.flags == SYN:
            return frame
    raise AssertionError("no SYN captured")


@pytest.mark.netns
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_parse_and_rebuild_a_linux_syn(topology, family: int) -> None:  # type: ignore[no-untyped-def]
    server = topology.server_ip if family == socket.AF_INET else topology.server_ip6
    with topology.server():
        listener = socket.socket(family, socket.SOCK_STREAM)
    with topology.client():
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        client = socket.socket(family, socket.SOCK_STREAM)
    with listener, sniffer, client:
        listener.bind((server, 0))
        listener.listen()
        port = listener.getsockname()[1]
        sniffer.bind((topology.client_if, ETH_P_ALL))
        sniffer.settimeout(0.2)
        client.setblocking(False)
        client.connect_ex((server, port))
        frame = _capture_syn(sniffer, port, time.monotonic() + 5)
    # client side has tx checksum offload off: the kernel's checksums are complete
    seg = parse(frame)
    assert seg.flags == SYN and seg.ack == 0 and seg.payload == b""
    assert seg.mss == (1460 if family == socket.AF_INET else 1440)
    assert seg.sack_permitted and seg.ts is not None and seg.ts[1] == 0
    assert seg.wscale is not None and 0 <= seg.wscale <= 14
    # Rebuilt from the parsed segment, the TCP part is byte-identical: same option order
    # and padding as tcp_options_write. (The IPv4 ID differs: Linux's is per-socket.)
    ip_len = 20 if family == socket.AF_INET else 40
    rebuilt = wire.build_frame(seg, src_mac=frame[6:12], dst_mac=frame[:6])
    assert len(rebuilt) == len(frame)
    assert rebuilt[14 + ip_len:] == frame[14 + ip_len:]
    if family == socket.AF_INET6:  # all but Linux's flow label (RFC 6437)
        assert rebuilt[:15] + rebuilt[18:] == frame[:15] + frame[18:]


# --- ICMP errors about our segments (RFC 792, RFC 4443, RFC 5927) ------------------------------

ROUTER4 = bytes([198, 18, 0, 254])
ROUTER6 = bytes.fromhex("200100020000000000000000000000fe")


def our_segment(v6: bool, seq: int = 7777) -> Segment:
    """A segment we sent: server port 8080 to the client's 40000."""
    src, dst = (SERVER6, CLIENT6) if v6 else (SERVER4, CLIENT4)
    return Segment(src, dst, 8080, 40000, seq, 1, ACK, 512, b"d" * 1400, ts=(1, 2))


def icmp_error_frame(v6: bool, icmp_type: int, code: int = 0, rest: int = 0, *,
                     quote: bytes | None = None, quoted_len: int = 548, vlan: int | None = None,
                     router: bytes | None = None) -> bytes:
    """An ICMP error from a router to us, quoting ``quote`` (default: the IP packet of
    ``our_segment``, cut to ``quoted_len`` bytes as a router cuts it), checksums right."""
    if quote is None:
        quote = wire.build_frame(our_segment(v6), src_mac=DST_MAC, dst_mac=SRC_MAC)[14:]
    quote = quote[:quoted_len]
    message = bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest) + quote)
    if v6:
        src = ROUTER6 if router is None else router
        pseudo = src + SERVER6 + struct.pack("!I3xB", len(message), 58)
        message[2:4] = struct.pack("!H", ref_checksum(pseudo + bytes(message)))
        return ethernet(ipv6_packet(src, SERVER6, bytes(message), nexthdr=58), 0x86DD,
                        vlan=vlan)
    message[2:4] = struct.pack("!H", ref_checksum(bytes(message)))
    src = ROUTER4 if router is None else router
    return ethernet(ipv4_packet(src, SERVER4, bytes(message), proto=1, frag=0), 0x0800,
                    vlan=vlan)


def icmp_dropped(frame: bytes, **kw: object) -> Counter[str]:
    drops: Counter[str] = Counter()
    assert wire.parse_icmp_error(frame, drops=drops, **kw) is None  # type: ignore[arg-type]
    assert sum(drops.values()) == 1
    return drops


@pytest.mark.parametrize(("v6", "icmp_type", "code", "rest", "kind", "mtu"), [
    (False, 3, 4, 1280, "frag-needed", 1280),  # RFC 1191 §4: MTU in the low 16 bits
    (False, 3, 4, 0, "frag-needed", 0),  # a router older than RFC 1191
    (False, 3, 3, 0, "unreachable", None),
    (False, 3, 1, 0, "unreachable", None),
    (False, 11, 0, 0, "time-exceeded", None),
    (True, 2, 0, 1280, "packet-too-big", 1280),  # RFC 4443 §3.2: a 32-bit MTU
    (True, 1, 4, 0, "unreachable", None),
    (True, 3, 0, 0, "time-exceeded", None),
])
def test_icmp_error_names_our_connection(v6: bool, icmp_type: int, code: int, rest: int,
                                         kind: str, mtu: int | None) -> None:
    ours = our_segment(v6)
    for vlan in (None, 7):
        err = wire.parse_icmp_error(icmp_error_frame(v6, icmp_type, code, rest, vlan=vlan))
        assert err == wire.IcmpError(ours.src, 8080, ours.dst, 40000, 7777, kind, mtu)


@pytest.mark.parametrize("v6", [False, True])
def test_icmp_error_needs_only_eight_bytes_of_tcp(v6: bool) -> None:
    quoted_len = (40 if v6 else 20) + 8
    err = wire.parse_icmp_error(icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1300,
                                                 quoted_len=quoted_len))
    assert err is not None and err.seq == 7777 and err.mtu == 1300
    # one byte less and the sequence number is cut: a counted drop
    assert icmp_dropped(icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1300,
                                         quoted_len=quoted_len - 1)) == {"truncated": 1}


@pytest.mark.parametrize("v6", [False, True])
def test_every_cut_of_an_icmp_error_is_a_counted_drop(v6: bool) -> None:
    frame = icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1280)
    for n in range(len(frame)):
        icmp_dropped(frame[:n])  # the IP length claims more than is left
    # a frame cut together with its IP length (a shorter quote) still parses down to 8
    # bytes of TCP; below that it is a counted drop, never an exception
    ip_hlen = 40 if v6 else 20
    for quoted in range(0, ip_hlen + 8):
        icmp_dropped(icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1280,
                                      quoted_len=quoted))


@pytest.mark.parametrize("v6", [False, True])
def test_icmp_checksum_is_verified_when_asked(v6: bool) -> None:
    frame = bytearray(icmp_error_frame(v6, 2 if v6 else 3, 0 if v6 else 4, 1280))
    frame[-1] ^= 0x40  # a byte of the quote
    assert icmp_dropped(bytes(frame)) == {"bad-checksum": 1}
    assert wire.parse_icmp_error(frame, verify_checksum=False) is not None


def test_ipv4_header_checksum_of_an_icmp_error_is_verified() -> None:
    frame = bytearray(icmp_error_frame(False, 3, 4, 1280))
    frame[14 + 8] ^= 1  # TTL
    assert icmp_dropped(bytes(frame)) == {"bad-ip-checksum": 1}


@pytest.mark.parametrize("v6", [False, True])
def test_other_icmp_and_other_quotes_are_not_ours(v6: bool) -> None:
    echo = 128 if v6 else 8
    assert icmp_dropped(icmp_error_frame(v6, echo)) == {"not-icmp-error": 1}
    assert icmp_dropped(tcp4_frame()) == {"not-icmp": 1}
    # a quote of a packet another host sent (its source is not the error's destination)
    other = Segment(CLIENT6 if v6 else CLIENT4, SERVER6 if v6 else SERVER4, 1, 2, 3, 4, ACK, 5)
    quote = wire.build_frame(other, src_mac=SRC_MAC, dst_mac=DST_MAC)[14:]
    assert icmp_dropped(icmp_error_frame(v6, 1 if v6 else 3, 3, quote=quote)) == {"bad-quote": 1}
    # a quoted UDP datagram
    udp = bytearray(wire.build_frame(our_segment(v6), src_mac=SRC_MAC, dst_mac=DST_MAC)[14:])
    udp[6 if v6 else 9] = 17
    assert icmp_dropped(icmp_error_frame(v6, 1 if v6 else 3, 3, quote=bytes(udp))) == \
        {"bad-quote": 1}


def test_icmp_errors_in_fragments_are_dropped() -> None:
    frame = bytearray(icmp_error_frame(False, 3, 4, 1280))
    frame[14 + 6] = 0x20  # more fragments
    assert icmp_dropped(bytes(frame), verify_checksum=False) == {"fragment": 1}
    # a quoted later fragment carries no TCP header
    quote = bytearray(wire.build_frame(our_segment(False), src_mac=SRC_MAC, dst_mac=DST_MAC)[14:])
    quote[7] = 1
    assert icmp_dropped(icmp_error_frame(False, 3, 4, 1280, quote=bytes(quote))) == \
        {"bad-quote": 1}
