"""The XDP protection stage on a real veth pair: malformed segments, allow/deny
lists, per-source rate limits and SYN cookies answered by XDP, changed at run time
in-process and from another process (aioxdp/protect.py, aioxdp/protect_cli.py).

Crafted frames come from a raw socket in the client namespace, spoofed sources
only inside 198.18.0.0/15 and 2001:2::/48; replies are captured there too. Real
Linux peers (curl, Python sockets) check the paths a real client takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import select
import socket
import struct
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioxdp import stack as stack_module
from aioxdp._xsk import XdpProgram, packed_address
from aioxdp.protect import Protection, Rule
from aioxdp.protect_cli import main as filter_main
from aioxdp.tcp import wire
from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import receive_window_scale
from aioxdp.tcp.cookies import MSS_TABLE_V4, MSS_TABLE_V6, check_cookie, ts_clock
from aioxdp.tcp.options import local_mss
from aioxdp.tcp.segment import ACK, FIN, PSH, RST, SYN, Segment
from aioxdp.tcp.table import ConnectionTable
from aioxdp.topology import Topology

from .stackhelpers import peer, peer_python, peer_server, run_on_stack
from .test_workers import ask, running_workers
from .test_xsk import (
    MODES,
    Stack,
    ether,
    inject,
    ip_packet,
    mac_of,
    open_stack,
    wait_for,
    with_ref_checksums,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from flood import Flood  # noqa: E402

pytestmark = pytest.mark.netns

PORT = 7000
SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID = 263, 8, 1 << 4  # linux/if_packet.h


@pytest.fixture
def stack(topology: Topology) -> Iterator[Stack]:
    """Program + AF_XDP socket (SKB mode), with a listener on the server's port."""
    with open_stack(topology, "skb") as s:
        listen_on(s.prog, topology)
        yield s


def listen_on(prog: XdpProgram, t: Topology) -> None:
    for addr in (t.server_ip, t.server_ip6):
        prog.add_local_address(packed_address(addr))
        prog.add_listener(packed_address(addr), PORT)


def segment(src: str, dst: str, *, sport: int = 40000, flags: int = SYN, seq: int = 1000,
            ack: int = 0, **options: object) -> Segment:
    return Segment(packed_address(src), packed_address(dst), sport, PORT, seq, ack, flags,
                   65535, **options)  # type: ignore[arg-type]


def frame(s: Stack, seg: Segment) -> bytes:
    return wire.build_frame(seg, src_mac=s.client_mac, dst_mac=s.server_mac)


def arrived(s: Stack, frames: list[bytes], marker: Segment) -> list[Segment]:
    """Inject ``frames`` then ``marker`` (which must get through); returns the
    segments that reached the AF_XDP socket, the marker included."""
    def is_marker(f: bytes) -> bool:
        seg = wire.parse_frame(f)
        return seg is not None and seg.sport == marker.sport

    inject(s.topo, [*frames, frame(s, marker)])
    got = [wire.parse_frame(f) for f in wait_for(s.xsk, is_marker)]
    return [seg for seg in got if seg is not None]


@contextlib.contextmanager
def capture(t: Topology) -> Iterator[socket.socket]:
    """A raw socket on the client's veth: sees the frames the server sends back."""
    with t.client():
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    with raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # room for a batch
        raw.bind((t.client_if, 0))
        yield raw


def replies(raw: socket.socket, count: int, timeout: float = 5.0) -> list[Segment]:
    """The first ``count`` TCP segments the client end receives, checksums verified."""
    out: list[Segment] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        if not select.select([raw], [], [], 0.1)[0]:
            continue
        data, addr = raw.recvfrom(4096)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        seg = wire.parse_frame(data, verify_checksum=True)
        if seg is not None:
            out.append(seg)
    return out


# ---- 1. malformed ----------------------------------------------------------------------------

def test_malformed_segments_are_dropped_and_counted(stack: Stack) -> None:
    t, prog = stack.topo, stack.prog
    c, sv = t.client_ip, t.server_ip
    bad_flags = [frame(stack, segment(c, sv, flags=f)) for f in (SYN | FIN, SYN | RST, FIN | RST)]
    good = frame(stack, segment(c, sv))
    too_long = bytearray(good)
    too_long[16:18] = struct.pack("!H", len(good) - 14 + 1)  # IPv4 total length past the frame
    too_short = bytearray(good)
    too_short[16:18] = struct.pack("!H", 20 + 19)  # shorter than IP + TCP headers
    v6 = frame(stack, segment(t.client_ip6, t.server_ip6))
    v6_long = bytearray(v6)
    v6_long[18:20] = struct.pack("!H", len(v6) - 54 + 1)  # payload length past the frame
    # IPv6 first fragment (offset 0, more fragments) carrying a TCP header to our port
    fragment = bytearray(v6[:54]) + struct.pack("!BBHI", 6, 0, 1, 7) + v6[54:]
    fragment[20] = 44  # next header: fragment
    fragment[18:20] = struct.pack("!H", len(fragment) - 54)
    frames = [*bad_flags, bytes(too_long), bytes(too_short), bytes(v6_long), bytes(fragment)]
    got = arrived(stack, frames, segment(c, sv, sport=40001))
    assert [seg.sport for seg in got] == [40001]
    counters = prog.counters()
    assert counters["dropped_bad_flags"] == 3
    assert counters["dropped_bad_length"] == 3
    assert counters["dropped_fragment"] == 1
    assert counters["redirected"] == 1


def test_segments_without_ack_go_on_unless_the_setting_drops_them(stack: Stack) -> None:
    """No SYN, ACK or RST (FIN alone, no flags, PSH alone with data) is no malformed
    segment: it goes on as an unknown flow (a closed port answers it with RST,ACK); with
    ``drop_no_ack`` XDP drops it and counts it."""
    c, sv = stack.topo.client_ip, stack.topo.server_ip
    protection = Protection(stack.prog)
    assert protection.settings().drop_no_ack is False
    probes = [frame(stack, segment(c, sv, sport=40100 + i, flags=f, payload=data))
              for i, (f, data) in enumerate([(FIN, b""), (0, b""), (PSH, b"data")])]
    got = arrived(stack, probes, segment(c, sv, sport=40001))
    assert [seg.sport for seg in got] == [40100, 40101, 40102, 40001]
    counters = stack.prog.counters()
    assert (counters["unknown_flow_passed"], counters["dropped_no_ack"]) == (3, 0)
    protection.drop_no_ack(True)
    assert protection.settings().drop_no_ack is True
    got = arrived(stack, probes, segment(c, sv, sport=40002))
    assert [seg.sport for seg in got] == [40002]
    counters = stack.prog.counters()
    assert (counters["unknown_flow_passed"], counters["dropped_no_ack"]) == (3, 3)
    assert counters["dropped_bad_flags"] == 0


# ---- 2. allow/deny lists ----------------------------------------------------------------------

def test_deny_list_drops_prefixes_and_counts_hits(stack: Stack) -> None:
    t = stack.topo
    protection = Protection(stack.prog)
    protection.deny("198.18.5.0/24")
    protection.deny("2001:2::5:0/112")
    assert sorted(protection.rules(), key=lambda r: r.prefix) == [
        Rule("deny", "198.18.5.0/24", 0), Rule("deny", "2001:2::5:0/112", 0)]
    frames = [frame(stack, segment("198.18.5.7", t.server_ip, sport=40000 + i)) for i in range(3)]
    frames.append(frame(stack, segment("2001:2::5:9", t.server_ip6, sport=40003)))
    frames.append(frame(stack, segment("198.18.6.7", t.server_ip, sport=40004)))
    got = arrived(stack, frames, segment(t.client_ip, t.server_ip, sport=40010))
    assert [seg.sport for seg in got] == [40004, 40010]
    assert stack.prog.counters()["dropped_denied"] == 4
    assert {r.prefix: r.hits for r in protection.rules()} == {
        "198.18.5.0/24": 3, "2001:2::5:0/112": 1}

    assert protection.remove("198.18.5.0/24")
    assert not protection.remove("198.18.5.0/24")
    got = arrived(stack, [frame(stack, segment("198.18.5.7", t.server_ip, sport=40020))],
                  segment(t.client_ip, t.server_ip, sport=40021))
    assert [seg.sport for seg in got] == [40020, 40021]


def test_allow_only_mode_lets_only_allowed_prefixes_through(stack: Stack) -> None:
    t = stack.topo
    protection = Protection(stack.prog)
    protection.allow("198.18.0.0/24")
    protection.allow("198.18.9.9")
    protection.deny("198.18.0.66")  # a deny rule wins over an allow rule
    protection.allow_only(True)
    assert protection.settings().allow_only
    frames = [frame(stack, segment(src, t.server_ip, sport=40000 + i))
              for i, src in enumerate(["198.18.0.9", "198.19.0.9", "198.18.9.9", "198.18.0.66",
                                       "198.18.9.10"])]
    frames.append(frame(stack, segment(t.client_ip6, t.server_ip6, sport=40005)))
    got = arrived(stack, frames, segment(t.client_ip, t.server_ip, sport=40010))
    assert [seg.sport for seg in got] == [40000, 40002, 40010]
    counters = stack.prog.counters()
    assert counters["dropped_not_allowed"] == 3
    assert counters["dropped_denied"] == 1

    protection.allow_only(False)
    got = arrived(stack, [frame(stack, segment("198.19.0.9", t.server_ip, sport=40020))],
                  segment(t.client_ip, t.server_ip, sport=40021))
    assert [seg.sport for seg in got] == [40020, 40021]


# ---- 3. rate limit ----------------------------------------------------------------------------

def test_rate_limit_drops_a_source_above_its_bucket(stack: Stack) -> None:
    t = stack.topo
    protection = Protection(stack.prog)
    # one packet per 10 s after a burst of 5: the 20 frames below arrive well within 10 s
    protection.rate_limit(0.1, burst=5)
    assert (protection.settings().rate_pps, protection.settings().rate_burst) == (0.1, 5)
    flood = [frame(stack, segment("198.18.3.3", t.server_ip, sport=41000 + i)) for i in range(20)]
    got = arrived(stack, flood, segment(t.client_ip, t.server_ip, sport=40010))
    assert [seg.sport for seg in got] == [41000, 41001, 41002, 41003, 41004, 40010]
    assert stack.prog.counters()["dropped_rate_limited"] == 15

    protection.rate_limit(0)
    got = arrived(stack, flood[5:7], segment(t.client_ip, t.server_ip, sport=40011))
    assert [seg.sport for seg in got] == [41005, 41006, 40011]


# ---- 4. SYN cookies from XDP ------------------------------------------------------------------

def cookie_table() -> ConnectionTable:
    return ConnectionTable(config=TcpConfig(), secret=bytes(range(32)), now=0.0)


@pytest.mark.parametrize("mode", MODES)
def test_spoofed_syns_are_answered_with_cookies_the_table_accepts(
        topology: Topology, mode: str) -> None:
    t = topology
    table = cookie_table()
    with contextlib.ExitStack() as stack, open_stack(t, mode) as s:
        if mode == "native":
            # veth hands native XDP_TX frames only to a peer running NAPI, which an XDP
            # program there turns on (ours, with no listeners, passes everything)
            with t.client():
                ifindex = socket.if_nametoindex(t.client_if)
                stack.enter_context(XdpProgram.load(ifindex, mode="native"))
        listen_on(s.prog, t)
        Protection(s.prog).use_table(table)
        Protection(s.prog).syn_cookies(0)  # always
        syns = []
        for i in range(60):
            src = f"198.18.{1 + i // 20}.{1 + i % 20}"
            dst = t.server_ip
            if i % 3 == 1:
                src, dst = f"2001:2::7:{i}", t.server_ip6
            options: dict[str, object] = {"mss": (536, 1300, 1460, 9000)[i % 4]}
            if i % 3 != 2:  # every third SYN without timestamps: nothing but the MSS
                options.update(ts=(1_000_000 + i, 0), wscale=i % 16, sack_permitted=i % 2 == 0)
            syns.append(segment(src, dst, sport=42000 + i, seq=0xFFFFFF00 + i, **options))  # type: ignore[arg-type]
        with capture(t) as raw:
            before = ts_clock(time.monotonic())
            inject(t, [frame(s, syn) for syn in syns])
            got = {seg.dport: seg for seg in replies(raw, len(syns))}
            after = ts_clock(time.monotonic())
        assert sorted(got) == [syn.sport for syn in syns]
        for syn in syns:
            synack = got[syn.sport]
            assert (synack.src, synack.dst, synack.sport) == (syn.dst, syn.src, PORT)
            assert synack.flags == SYN | ACK and synack.ack == (syn.seq + 1) & 0xFFFFFFFF
            # the MTU less 40 over IPv4, less 60 over IPv6 (options.local_mss)
            assert synack.mss == local_mss(table.config.mss, syn.dst) and synack.window == 65535
            ack = Segment(syn.src, syn.dst, syn.sport, PORT, synack.ack, synack.seq + 1, ACK,
                          1000, ts=None if synack.ts is None else (syn.ts[0] + 1, synack.ts[0]))  # type: ignore[index]
            info = check_cookie(table.cookie_secrets, ack, now=time.monotonic())
            assert info is not None, f"XDP cookie for {syn.sport} fails cookies.check_cookie"
            table_mss = MSS_TABLE_V4 if len(syn.src) == 4 else MSS_TABLE_V6
            assert info.mss == max(m for m in table_mss if m <= syn.mss or m == table_mss[0])  # type: ignore[operator]
            if syn.ts is None:
                assert synack.ts is None and synack.wscale is None and not synack.sack_permitted
                continue
            # our TSval: the loop's ms clock (CLOCK_MONOTONIC), low 6 bits replaced
            assert synack.ts is not None and synack.ts[1] == syn.ts[0]
            assert before - 64 <= synack.ts[0] <= after
            # RFC 7323 §2.3: a shift above 14 is taken as 14
            assert (info.wscale, info.sack_permitted) == (min(syn.wscale, 14), syn.sack_permitted)  # type: ignore[type-var]
            assert synack.wscale == (None if syn.wscale is None else
                                     receive_window_scale(table.config.rcv_buf))
            assert synack.sack_permitted == syn.sack_permitted
        counters = s.prog.counters()
        assert counters["syn_cookie_sent"] == len(syns)
        assert counters["redirected"] == counters["syn_passed"] == 0
        assert s.xsk.stats()["rx"] == 0  # none reached userspace


def test_xdp_checks_cookie_acks_under_the_current_and_previous_keys(stack: Stack) -> None:
    """A cookie made before a key rotation still validates, in XDP (counted) and in
    the table. ACKs of no known flow are checked and counted; the invalid ones are
    unknown flows, within the budget here (the default's burst)."""
    t = stack.topo
    table = cookie_table()
    protection = Protection(stack.prog)
    protection.use_table(table)
    protection.syn_cookies(0)

    def handshake(sport: int) -> tuple[Segment, Segment]:
        syn = segment("198.18.4.4", t.server_ip, sport=sport, mss=1460, ts=(7, 0), wscale=7,
                      sack_permitted=True)
        with capture(t) as raw:
            inject(t, [frame(stack, syn)])
            (synack,) = replies(raw, 1)
        assert synack.ts is not None
        ack = segment("198.18.4.4", t.server_ip, sport=sport, flags=ACK, seq=syn.seq + 1,
                      ack=synack.seq + 1, ts=(8, synack.ts[0]))
        return synack, ack

    _old_synack, old_ack = handshake(45000)
    table.cookie_secrets.rotate(bytes(32))
    protection.set_cookie_secrets(table.cookie_secrets)
    _new_synack, new_ack = handshake(45001)
    forged = segment("198.18.4.4", t.server_ip, sport=45002, flags=ACK, seq=old_ack.seq,
                     ack=old_ack.ack, ts=old_ack.ts)  # another port: not its cookie
    got = arrived(stack, [frame(stack, old_ack), frame(stack, new_ack), frame(stack, forged)],
                  segment(t.client_ip, t.server_ip, sport=40010, flags=ACK))
    assert [seg.sport for seg in got] == [45000, 45001, 45002, 40010]
    counters = stack.prog.counters()
    assert (counters["cookie_ack_valid"], counters["cookie_ack_invalid"]) == (2, 2)
    now = time.monotonic()
    assert check_cookie(table.cookie_secrets, old_ack, now=now) is not None
    assert check_cookie(table.cookie_secrets, new_ack, now=now) is not None
    assert check_cookie(table.cookie_secrets, forged, now=now) is None


def random_options(rng: random.Random) -> bytes:
    """A SYN's option bytes in any order: known kinds (some with a wrong length),
    unknown kinds, NOPs, sometimes a broken last option; padded to 4 octets."""
    pieces = [struct.pack("!BBH", 2, 4, rng.randrange(65536)),
              bytes((3, 3, rng.randrange(256))),
              bytes((4, 2)),
              struct.pack("!BBII", 8, 10, rng.randrange(1 << 32), 0),
              bytes((rng.choice((30, 34, 253)), 4, 1, 2)),
              bytes((4, 3, 0)),  # SACK-permitted with a wrong length: ignored
              b"\x01"]
    out = b"".join(rng.sample(pieces, rng.randrange(len(pieces) + 1)))[:36]
    if rng.random() < 0.2:
        out += bytes((rng.choice((2, 3, 8)), rng.choice((0, 1, 40))))  # stops the walk
    return out + bytes(-len(out) % 4)


def test_xdp_reads_syn_options_as_the_userspace_parser_does(stack: Stack) -> None:
    """Differential: for random option layouts, what the XDP cookie encodes (MSS
    index, window scale, SACK, timestamps) is what wire.py parses from the SYN."""
    t = stack.topo
    table = cookie_table()
    Protection(stack.prog).use_table(table)
    Protection(stack.prog).syn_cookies(0)
    rng = random.Random(5)
    frames, syns = [], {}
    for i in range(150):
        options = random_options(rng)
        tcp = struct.pack("!HHIIBBHHH", 30000 + i, PORT, rng.randrange(1 << 32), 0,
                          (5 + len(options) // 4) << 4, SYN, 65535, 0, 0) + options
        f = with_ref_checksums(ether(stack.server_mac, stack.client_mac, ip_packet(
            packed_address("198.18.3.9"), packed_address(t.server_ip), 6, tcp)))
        syn = wire.parse_frame(f)
        assert syn is not None
        frames.append(f)
        syns[syn.sport] = syn
    with capture(t) as raw:
        inject(t, frames)
        got = {seg.dport: seg for seg in replies(raw, len(frames))}
    assert sorted(got) == sorted(syns)
    for port, syn in syns.items():
        synack = got[port]
        assert (synack.ts is None) == (syn.ts is None)
        ack = Segment(syn.src, syn.dst, port, PORT, synack.ack, synack.seq + 1, ACK, 1000,
                      ts=None if synack.ts is None else (1, synack.ts[0]))
        info = check_cookie(table.cookie_secrets, ack, now=time.monotonic())
        assert info is not None
        mss = syn.mss or 0
        assert info.mss == max([m for m in MSS_TABLE_V4 if m <= mss] or [MSS_TABLE_V4[0]])
        if syn.ts is not None:
            wscale = None if syn.wscale is None else min(syn.wscale, 14)
            assert (info.wscale, info.sack_permitted) == (wscale, syn.sack_permitted), port


def test_a_vlan_tagged_syn_gets_its_cookie_on_the_same_vlan(stack: Stack) -> None:
    t = stack.topo
    table = cookie_table()
    Protection(stack.prog).use_table(table)
    Protection(stack.prog).syn_cookies(0)
    syn = segment("198.18.1.1", t.server_ip, mss=1460, ts=(5, 0), wscale=7, sack_permitted=True)
    untagged = frame(stack, syn)
    tagged = untagged[:12] + struct.pack("!HH", 0x8100, 5) + untagged[12:]
    with capture(t) as raw:
        raw.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        inject(t, [tagged])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and select.select([raw], [], [], 0.1)[0]:
            data, ancillary, _flags, addr = raw.recvmsg(4096, socket.CMSG_SPACE(20))
            seg = wire.parse_frame(data)
            if addr[2] != socket.PACKET_OUTGOING and seg is not None:
                break
        else:
            raise AssertionError("no SYN-ACK")
    # the receiving kernel moved the tag out of the frame into the packet's metadata
    status, *_lengths, tci, _tpid = struct.unpack("IIIHHHH", ancillary[0][2][:20])
    assert status & TP_STATUS_VLAN_VALID and tci == 5
    assert seg.flags == SYN | ACK and seg.ts is not None and seg.wscale is not None
    ack = Segment(syn.src, syn.dst, syn.sport, PORT, seg.ack, seg.seq + 1, ACK, 1000,
                  ts=(6, seg.ts[0]))
    assert check_cookie(table.cookie_secrets, ack, now=time.monotonic()) is not None


def test_syn_cookies_switch_on_above_the_threshold(stack: Stack) -> None:
    t = stack.topo
    protection = Protection(stack.prog)
    protection.use_table(cookie_table())
    protection.syn_cookies(1000)  # 100 SYNs per 100 ms window
    assert protection.settings().syn_cookie_threshold_pps == 1000
    few = [frame(stack, segment("198.18.2.1", t.server_ip, sport=43000 + i)) for i in range(20)]
    arrived(stack, few, segment(t.client_ip, t.server_ip, sport=40010, flags=ACK))
    counters = stack.prog.counters()
    assert (counters["syn_passed"], counters["syn_cookie_sent"]) == (20, 0)
    # a burst well above 100 SYNs in one window (a few ms to send): cookie mode,
    # which then holds for a second, so the marker SYN after it gets a cookie too
    flood = [frame(stack, segment("198.18.2.2", t.server_ip, sport=44000 + i % 1000, seq=i))
             for i in range(400)]
    with capture(t) as raw:
        inject(t, flood)
        assert replies(raw, 1)
    counters = stack.prog.counters()
    assert counters["syn_cookie_sent"] > 0
    assert counters["syn_passed"] + counters["syn_cookie_sent"] == 420
    assert protection.settings().syn_cookies_active

    protection.syn_cookies(None)
    assert not protection.settings().syn_cookies_active
    got = arrived(stack, [], segment(t.client_ip, t.server_ip, sport=40011))
    assert got[-1].sport == 40011


# ---- 5. established flows and the unknown-flow budget -------------------------------------------

def test_segments_of_no_known_flow_are_dropped_beyond_the_budget(stack: Stack) -> None:
    """Stage 5 in isolation, the `flows` map written by hand: segments of a connection in
    the map always pass; other non-SYN segments to a listener pass within the budget."""
    t, prog = stack.topo, stack.prog
    protection = Protection(prog)
    # what every loaded program starts with
    assert (protection.settings().unknown_flow_pps,
            protection.settings().unknown_flow_burst) == (1000.0, 50)
    known = (packed_address(t.server_ip), PORT, packed_address(t.client_ip), 40100)
    known6 = (packed_address(t.server_ip6), PORT, packed_address(t.client_ip6), 40101)
    assert prog.add_flows([known, known6]) == 0
    assert sorted(prog.flows()) == sorted([known, known6])
    protection.unknown_flow_rate(0)
    assert protection.settings().unknown_flow_pps == 0
    c, sv = t.client_ip, t.server_ip
    frames = [frame(stack, segment(c, sv, sport=40100, flags=ACK, seq=1, ack=1)),
              frame(stack, segment(t.client_ip6, t.server_ip6, sport=40101, flags=ACK | FIN)),
              frame(stack, segment(c, sv, sport=40102, flags=ACK)),  # not in the map
              frame(stack, segment("198.18.200.1", sv, sport=40100, flags=ACK)),  # other source
              frame(stack, segment(c, sv, sport=40103, flags=RST)),
              frame(stack, segment(c, sv, sport=40104, flags=SYN | ACK))]
    # a SYN is not an unknown flow: it goes on (below the cookie threshold) as the marker
    got = arrived(stack, frames, segment(c, sv, sport=40010))
    assert [seg.sport for seg in got] == [40100, 40101, 40010]
    counters = prog.counters()
    assert counters["flow_hit"] == 2
    assert counters["dropped_unknown_flow"] == 4
    assert counters["cookie_ack_invalid"] == 2  # only the ACKs are worth a cookie check
    assert counters["unknown_flow_passed"] == 0

    prog.remove_flows([known, known])  # twice: a missing key is no error
    assert prog.flows() == [known6]
    got = arrived(stack, frames[:1], segment(c, sv, sport=40011))
    assert [seg.sport for seg in got] == [40011]
    assert prog.counters()["dropped_unknown_flow"] == 5

    # a budget: one segment per 1000 s after a burst of 2, per CPU (the injecting thread
    # may move between the CPUs)
    protection.unknown_flow_rate(0.001, burst=2)
    assert protection.settings().unknown_flow_burst == 2
    strays = [frame(stack, segment(c, sv, sport=41000 + i, flags=ACK)) for i in range(20)]
    got = arrived(stack, strays, segment(c, sv, sport=40012))
    passed = prog.counters()["unknown_flow_passed"]
    assert 2 <= passed <= 2 * (os.cpu_count() or 1) and len(got) == passed + 1
    assert prog.counters()["dropped_unknown_flow"] == 5 + 20 - passed

    protection.unknown_flow_rate(None)  # no budget: everything reaches the stack
    got = arrived(stack, strays, segment(c, sv, sport=40013))
    assert len(got) == len(strays) + 1


# ---- 6. another process ----------------------------------------------------------------------

def test_rules_from_another_process_through_the_cli(stack: Stack) -> None:
    """``aioxdp filter`` in a separate ``ip netns exec`` process (its own /sys: no
    shared bpffs) finds the program by id and edits the same maps."""
    t = stack.topo

    def cli(*args: str) -> str:
        return t.exec(t.server_ns, sys.executable, "-m", "aioxdp.protect_cli", "filter",
                      *args, "--interface", t.server_if).stdout

    cli("deny", "198.18.7.0/24", "2001:2::7:0/112")
    cli("rate-limit", "50", "--burst", "10")
    cli("syn-cookies", "5000")
    cli("unknown-rate", "200", "--burst", "7")
    cli("drop-no-ack", "on")
    listing = json.loads(cli("list", "--json"))
    assert listing["settings"]["drop_no_ack"] is True
    assert "drop no-ACK segments: on" in cli("list")
    cli("drop-no-ack", "off")
    assert Protection(stack.prog).settings().drop_no_ack is False
    assert [(r["list"], r["prefix"]) for r in listing["rules"]] == [
        ("deny", "198.18.7.0/24"), ("deny", "2001:2::7:0/112")]
    assert listing["settings"]["rate_pps"] == 50 and listing["settings"]["rate_burst"] == 10
    assert listing["settings"]["syn_cookie_threshold_pps"] == 5000
    assert (listing["settings"]["unknown_flow_pps"],
            listing["settings"]["unknown_flow_burst"]) == (200, 7)
    assert "unknown flows: 200/s per CPU, burst 7" in cli("list")
    # the in-process view is the same program
    assert Protection(stack.prog).settings().syn_cookie_threshold_pps == 5000
    got = arrived(stack, [frame(stack, segment("198.18.7.1", t.server_ip, sport=40001))],
                  segment(t.client_ip, t.server_ip, sport=40002))
    assert [seg.sport for seg in got] == [40002]
    assert "1 hits" in cli("list")
    cli("remove", "198.18.7.0/24")
    cli("syn-cookies", "off")
    cli("rate-limit", "0")
    cli("unknown-rate", "off")
    settings = Protection(stack.prog).settings()
    assert (settings.rate_pps, settings.syn_cookie_threshold_pps) == (0, None)
    assert settings.unknown_flow_pps is None
    cli("unknown-rate", "0")
    assert Protection(stack.prog).settings().unknown_flow_pps == 0
    assert "unknown flows: all dropped" in cli("list")
    assert [r.prefix for r in Protection(stack.prog).rules()] == ["2001:2::7:0/112"]


def test_a_closed_port_answers_segments_without_ack_with_rst_ack(topology: Topology) -> None:
    """RFC 9293 §3.10.7.1 on the whole stack: data alone, FIN alone and no flags, sent
    from a raw socket in the peer namespace to a port of the stack's range that has no
    connection, come back as <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, as Linux answers;
    with ``aioxdp filter drop-no-ack on`` nothing comes back and XDP counts them."""
    t = topology
    server_mac = mac_of(t, t.server_ns, t.server_if)
    client_mac = mac_of(t, t.client_ns, t.client_if)
    port = 62000  # in the stack's port range (61000-64999), no connection there
    probes = [(t.client_ip, t.server_ip, 40100, PSH, 5000, b"hello"),  # ACK 5005
              (t.client_ip, t.server_ip, 40101, FIN, 7000, b""),  # FIN counts one: 7001
              (t.client_ip, t.server_ip, 40102, 0, 0xFFFFFFFF, b"xy"),  # wraps: 1
              (t.client_ip6, t.server_ip6, 40103, FIN | PSH, 100, b"abc")]  # 104
    frames = [wire.build_frame(Segment(packed_address(src), packed_address(dst), sport, port,
                                       seq, 0, flags, 65535, data),
                               src_mac=client_mac, dst_mac=server_mac)
              for src, dst, sport, flags, seq, data in probes]
    # an ACK to the same port: always answered (<SEQ=SEG.ACK><CTL=RST>), and after the
    # probes' answers, which come back in order
    marker = wire.build_frame(Segment(packed_address(t.client_ip), packed_address(t.server_ip),
                                      40199, port, 1, 4242, ACK, 65535),
                              src_mac=client_mac, dst_mac=server_mac)

    def exchange() -> list[Segment]:
        """The probes' answers, up to the marker's RST."""
        with capture(t) as raw:
            inject(t, [*frames, marker])
            out: list[Segment] = []
            while not out or out[-1].dport != 40199:
                got = replies(raw, 1, timeout=10.0)
                assert got, f"no RST for the marker; so far {out}"
                out.extend(seg for seg in got if seg.sport == port)
            return out[:-1]

    def cli(*args: str) -> None:
        t.exec(t.server_ns, sys.executable, "-m", "aioxdp.protect_cli", "filter", *args,
               "--interface", t.server_if)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        answers = await asyncio.to_thread(exchange)
        assert sorted((seg.dport, seg.seq, seg.ack, seg.flags, len(seg.payload))
                      for seg in answers) == [(40100, 0, 5005, RST | ACK, 0),
                                              (40101, 0, 7001, RST | ACK, 0),
                                              (40102, 0, 1, RST | ACK, 0),
                                              (40103, 0, 104, RST | ACK, 0)]
        counters = stack.program.counters()
        assert counters["unknown_flow_passed"] == len(probes) + 1
        assert counters["dropped_bad_flags"] == counters["dropped_no_ack"] == 0
        assert stack.table.stats["rst-sent:no-connection"] == len(probes) + 1

        await asyncio.to_thread(cli, "drop-no-ack", "on")
        assert await asyncio.to_thread(exchange) == []
        counters = stack.program.counters()
        assert counters["dropped_no_ack"] == len(probes)
        assert counters["unknown_flow_passed"] == len(probes) + 2  # the second marker
        assert stack.table.stats["rst-sent:no-connection"] == len(probes) + 2

    run_on_stack(t, main, timeout=60)


def test_attach_finds_the_program_behind_libxdps_dispatcher(topology: Topology) -> None:
    t = topology
    with t.server():
        ifindex = socket.if_nametoindex(t.server_if)
        with XdpProgram.load(ifindex, attach="dispatcher") as prog:
            with Protection.attach(t.server_if) as found:
                assert (found.program.attach, found.program.mode) == ("found", "skb")
                found.deny("198.18.44.0/24")
                assert Protection(prog).rules() == [Rule("deny", "198.18.44.0/24", 0)]
            # closing what attach found leaves the program and its rules in place
            assert Protection(prog).rules() == [Rule("deny", "198.18.44.0/24", 0)]
        with pytest.raises(FileNotFoundError):
            Protection.attach(t.server_if)


def test_filter_cli_reports_a_missing_program(topology: Topology,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with topology.server():
        assert filter_main(["filter", "list", "-i", topology.server_if]) == 1
    assert "no aioxdp XDP program" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError), topology.server():
        Protection.attach(topology.server_if)


# ---- 7. the whole stack, real Linux peers ----------------------------------------------------

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


class Http(asyncio.Protocol):
    """The smallest HTTP responder; records the TCP options of each connection it serves."""

    seen: list[dict[str, object]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.request = b""

    def data_received(self, data: bytes) -> None:
        self.request += data
        if b"\r\n\r\n" in self.request:
            conn = self.transport._conn  # type: ignore[attr-defined]
            Http.seen.append({"mss": conn.mss, "snd_wscale": conn.snd_wscale,
                              "sack": conn._sack_ok, "ts": conn._ts_ok})
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]
            self.transport.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


# A kernel client in the client namespace: GET / from a source address, offering MSS 1300;
# prints the body and the options its SYN offered and the kernel agreed on (TCP_INFO).
HTTP_CLIENT = """
    import json, socket, sys
    source, server, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1300)
    s.bind((source, 0))
    s.settimeout(2.5)
    try:
        s.connect((server, port))
    except OSError as exc:
        print(json.dumps({"error": type(exc).__name__}))
        sys.exit()
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    print(json.dumps({"body": data.split(b"\\r\\n\\r\\n", 1)[1].decode(),
                      "options": info[5], "rcv_wscale": info[6] >> 4}))
"""
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4


async def http_get(t: Topology, source: str) -> dict[str, object]:
    _code, out, _err = await peer_python(t, HTTP_CLIENT, source, t.server_ip, str(PORT))
    return json.loads(out)  # type: ignore[no-any-return]


def test_real_clients_complete_handshakes_made_by_xdp_cookies(topology: Topology) -> None:
    t = topology
    Http.seen = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Http, t.server_ip, PORT)
        stack = loop.xdp_stack  # type: ignore[attr-defined]
        stack.protection.syn_cookies(0)  # every SYN answered by XDP
        _code, out, _err = await peer(t, "curl", "-sS", "--max-time", "10",
                                      f"http://{t.server_ip}:{PORT}/")
        assert out == b"hello"
        result = await http_get(t, t.client_ip)
        assert result["body"] == "hello"
        # the kernel client saw its options accepted, and the server kept the SYN's
        assert result["options"] == TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE
        assert Http.seen[-1] == {"mss": 1300, "snd_wscale": result["rcv_wscale"],
                                 "sack": True, "ts": True}
        counters = stack.program.counters()
        assert counters["syn_cookie_sent"] >= 2 and counters["syn_passed"] == 0
        assert counters["cookie_ack_valid"] >= 2
        assert stack.table.stats["syn-cookies-validated"] >= 2
        server.close()

    run_on_stack(t, main, timeout=60)


def test_spoofed_syn_flood_never_reaches_userspace(topology: Topology) -> None:
    t = topology
    client_mac = mac_of(t, t.client_ns, t.client_if)
    server_mac = mac_of(t, t.server_ns, t.server_if)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Http, t.server_ip, PORT)
        stack = loop.xdp_stack  # type: ignore[attr-defined]
        stack.protection.syn_cookies(0)
        rx = stack.xsk.stats()["rx"]
        flood = [wire.build_frame(segment(f"198.18.{1 + i // 200}.{1 + i % 200}", t.server_ip,
                                          sport=20000 + i, mss=1460, ts=(i, 0), wscale=7,
                                          sack_permitted=True),
                                  src_mac=client_mac, dst_mac=server_mac) for i in range(600)]
        inject(t, flood)
        for _ in range(500):
            if stack.program.counters()["syn_cookie_sent"] >= len(flood):
                break
            await asyncio.sleep(0.01)
        assert stack.program.counters()["syn_cookie_sent"] == len(flood)
        assert stack.xsk.stats()["rx"] == rx  # not one frame reached the AF_XDP socket
        assert not stack.table.connections and not stack.table.stats
        # and the server keeps serving
        result = await http_get(t, t.client_ip)
        assert result["body"] == "hello"
        server.close()

    run_on_stack(t, main, timeout=60)


def test_rules_change_at_run_time_and_real_peers_see_them(topology: Topology) -> None:
    """An open connection survives unrelated rule changes; a denied (then a not-allowed)
    source gets no answer while the others are served."""
    t = topology
    other = "198.18.0.77"  # a second address of the client, for the blocked peer
    t.ip(t.client_ns, "addr", "add", f"{other}/24", "dev", t.client_if)
    echo_client = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        for line in sys.stdin:
            s.sendall(line.encode())
            print(s.recv(100).decode(), end="", flush=True)
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo = await loop.create_server(Echo, t.server_ip, PORT + 1)
        http = await loop.create_server(Http, t.server_ip, PORT)
        protection = loop.xdp_stack.protection  # type: ignore[attr-defined]
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", t.client_ns, sys.executable, "-c", textwrap.dedent(echo_client),
            t.server_ip, str(PORT + 1), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None

        async def echo_line(text: str) -> bytes:
            proc.stdin.write(text.encode() + b"\n")  # type: ignore[union-attr]
            return await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]

        assert await echo_line("one") == b"one\n"
        protection.deny("198.19.0.0/16")
        protection.deny(f"{other}/32")
        assert await echo_line("two") == b"two\n"
        assert (await http_get(t, other)) == {"error": "TimeoutError"}
        assert (await http_get(t, t.client_ip))["body"] == "hello"
        denied = protection.counters()["dropped_denied"]
        assert denied >= 1
        assert {r.prefix: r.hits for r in protection.rules()}[f"{other}/32"] == denied

        protection.remove(f"{other}/32")
        protection.remove("198.19.0.0/16")
        assert (await http_get(t, other))["body"] == "hello"
        protection.allow(f"{t.client_ip}/32")
        protection.allow_only(True)
        assert (await http_get(t, other)) == {"error": "TimeoutError"}
        assert (await http_get(t, t.client_ip))["body"] == "hello"
        assert protection.counters()["dropped_not_allowed"] >= 1
        assert await echo_line("three") == b"three\n"
        protection.allow_only(False)

        proc.stdin.close()
        assert await proc.wait() == 0
        echo.close()
        http.close()

    run_on_stack(t, main, timeout=90)


# A kernel client: ROUNDS echo round trips of 4 bytes, 50 ms apart, then a clean close (the
# client's FIN first); prints its local port and "ok".
ECHO_ROUNDS = """
    import socket, sys, time
    server, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection((server, port), timeout=10)
    for i in range(rounds):
        s.sendall(b"%03d\\n" % i)
        assert s.recv(4, socket.MSG_WAITALL) == b"%03d\\n" % i, i
        time.sleep(0.05)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b""
    print(s.getsockname()[1], "ok")
"""


async def echo_rounds(t: Topology, server: str, rounds: int) -> int:
    """ECHO_ROUNDS from the client namespace; returns the client's port."""
    _code, out, _err = await peer_python(t, ECHO_ROUNDS, server, str(PORT), str(rounds))
    port, ok = out.split()
    assert ok == b"ok"
    return int(port)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_passive_connection_is_in_the_flow_map_while_it_is_open(
        topology: Topology, family: str) -> None:
    t = topology
    server_ip, client_ip = ((t.server_ip, t.client_ip) if family == "ipv4"
                            else (t.server_ip6, t.client_ip6))
    # holds its connection open until the test closes its stdin (or 20 s pass)
    hold = """
        import select, socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        s.sendall(b"ping")
        assert s.recv(4, socket.MSG_WAITALL) == b"ping"
        print(s.getsockname()[1], flush=True)
        select.select([sys.stdin], [], [], 20)
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, server_ip, PORT)
        program = loop.xdp_stack.program  # type: ignore[attr-defined]
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", t.client_ns, sys.executable, "-c", textwrap.dedent(hold),
            server_ip, str(PORT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        flow = (packed_address(server_ip), PORT, packed_address(client_ip), port)
        assert program.flows() == [flow]
        assert program.counters()["flow_hit"] >= 2  # the handshake's ACK, "ping"
        proc.stdin.close()  # the client closes first: no TIME-WAIT on our side
        assert await proc.wait() == 0
        for _ in range(500):
            if not program.flows():
                break
            await asyncio.sleep(0.01)
        assert program.flows() == []
        server.close()

    run_on_stack(t, main, timeout=60)


def test_a_spoofed_ack_flood_is_dropped_in_xdp_while_a_real_connection_works(
        topology: Topology) -> None:
    """Established-looking ACKs from random spoofed sources reach the stack only within
    the unknown-flow budget (each then answered with RST); a connection made before and
    used during the flood is not affected."""
    t = topology
    rate, burst = 50, 5

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, t.server_ip, PORT)
        stack = loop.xdp_stack  # type: ignore[attr-defined]
        stack.protection.unknown_flow_rate(rate, burst=burst)
        async with Flood(t, "ack", rate=20000, count=40000, duration=10, port=PORT) as flood:
            await echo_rounds(t, t.server_ip, 20)  # ~1 s of round trips
            result = await flood.finished()
        assert result.sent == 40000
        counters = stack.program.counters()
        # per CPU: a burst, then `rate` a second over the flood (plus slack for the start)
        bound = (os.cpu_count() or 1) * (burst + rate * (result.seconds + 2))
        assert counters["unknown_flow_passed"] <= bound
        assert counters["dropped_unknown_flow"] >= result.sent - bound
        assert counters["unknown_flow_passed"] + counters["dropped_unknown_flow"] == result.sent
        assert 0 < stack.table.stats["rst-sent:listen-ack"] <= counters["unknown_flow_passed"]
        server.close()

    run_on_stack(t, main, timeout=60)


def test_an_ack_flood_at_an_outgoing_connections_port_is_dropped_while_it_works(
        topology: Topology) -> None:
    """A connection the stack opens is in the `flows` map from before its SYN leaves (its
    SYN-ACK is no unknown flow even with the budget at 0) until it is gone; spoofed ACKs
    aimed at its port, in the stack's port range, are dropped in XDP while it keeps
    echoing."""
    t = topology
    kernel_echo = """
        import socket
        srv = socket.create_server(("0.0.0.0", 9000))
        c, _ = srv.accept()
        while data := c.recv(65536):
            c.sendall(data)
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]  # made now, not at the connect
        stack.protection.unknown_flow_rate(0)
        proc = await peer_server(t, kernel_echo, 9000)
        reader, writer = await asyncio.open_connection(t.client_ip, 9000)
        lport = writer.get_extra_info("sockname")[1]
        flow = (packed_address(t.server_ip), lport, packed_address(t.client_ip), 9000)
        assert stack.program.flows() == [flow]
        async with Flood(t, "ack", rate=20000, count=20000, duration=10, port=lport) as flood:
            finished = asyncio.ensure_future(flood.finished())
            rounds = 0
            while not finished.done() or rounds < 20:  # the flood ends within its 10 s
                ping = b"ping %d" % rounds
                writer.write(ping)
                assert await asyncio.wait_for(reader.readexactly(len(ping)), 5) == ping
                rounds += 1
                await asyncio.sleep(0.005)
            result = await finished
        counters = stack.program.counters()
        assert counters["dropped_unknown_flow"] == result.sent == 20000
        assert counters["unknown_flow_passed"] == counters["cookie_ack_invalid"] == 0
        assert counters["flow_hit"] >= 20
        assert stack.table.stats["rst-sent:no-connection"] == 0
        # SO_LINGER 0: close() resets, so no TIME-WAIT keeps the tuple
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
        writer.transport.abort()
        for _ in range(500):
            if not stack.program.flows():
                break
            await asyncio.sleep(0.01)
        assert stack.program.flows() == []
        await proc.wait()

    run_on_stack(t, main, timeout=60)


@pytest.mark.parametrize("cookies", [False, True], ids=["syn-to-stack", "xdp-cookies"])
def test_real_connections_need_no_unknown_flow_budget(topology: Topology, cookies: bool) -> None:
    """With the budget at 0 (every unknown-flow segment dropped) a real client completes
    its handshake and round trips: its ACK passes by its flow entry, added before the
    SYN-ACK left, or, when XDP answered the SYN with a cookie, by the cookie (no entry
    exists yet), and everything after by the entry made from it."""
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, t.server_ip, PORT)
        stack = loop.xdp_stack  # type: ignore[attr-defined]
        protection = stack.protection
        protection.unknown_flow_rate(0)
        if cookies:
            protection.syn_cookies(0)
        await echo_rounds(t, t.server_ip, 5)
        counters = stack.program.counters()
        assert counters["dropped_unknown_flow"] == counters["unknown_flow_passed"] == 0
        assert counters["flow_hit"] >= 5
        if cookies:
            assert (counters["syn_cookie_sent"], counters["syn_passed"]) == (1, 0)
            assert counters["cookie_ack_valid"] >= 1
            assert stack.table.stats["syn-cookies-validated"] == 1
        else:
            assert (counters["syn_passed"], counters["cookie_ack_valid"]) == (1, 0)
        server.close()

    run_on_stack(t, main, timeout=60)


def test_workers_write_their_connections_into_the_one_shared_flow_map(tmp_path: Path) -> None:
    """Each worker (aioxdp.workers) opens the parent's program by id and adds its own
    connections to the same `flows` map, and takes them out again."""
    with running_workers(tmp_path) as workers:
        conns = [workers.connect() for _ in range(20)]
        assert {queue for _sock, _pid, queue in conns} == {0, 1}
        for sock, _pid, _queue in conns:
            assert ask(sock, b"x\n") == b"x\n"
        with workers.topo.server(), XdpProgram.open_attached(
                socket.if_nametoindex(workers.topo.server_if)) as program:
            server = packed_address(workers.topo.server_ip)
            assert sorted(program.flows()) == sorted(
                (server, PORT, packed_address(workers.topo.client_ip), sock.getsockname()[1])
                for sock, _pid, _queue in conns)
            for sock, _pid, _queue in conns:
                sock.close()  # the client first: the workers' side leaves no TIME-WAIT
            for _ in range(500):
                if not program.flows():
                    break
                time.sleep(0.01)
            assert program.flows() == []
            assert program.counters()["unknown_flow_passed"] == 0


# ---- 8. next-hop MACs under a spoofed-source flood ---------------------------------------------

def test_next_hop_macs_stay_bounded_and_a_live_connection_gets_its_mac_back(
        topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SYN from a new spoofed source teaches the stack a MAC: the cache keeps at most
    MAX_MACS of them. A connection whose entry was pushed out meanwhile still gets its
    data out: the first segment is dropped (counted), the MAC is asked of the kernel, and
    the retransmission goes."""
    t = topology
    limit = 64
    monkeypatch.setattr(stack_module, "MAX_MACS", limit)
    client_mac = mac_of(t, t.client_ns, t.client_if)
    server_mac = mac_of(t, t.server_ns, t.server_if)
    accepted: list[asyncio.Transport] = []

    class Quiet(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)  # type: ignore[arg-type]

    # connects, then waits for the server to speak first
    listen = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        print(s.recv(5, socket.MSG_WAITALL).decode())
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Quiet, t.server_ip, PORT)
        stack = loop.xdp_stack  # type: ignore[attr-defined]
        client = asyncio.ensure_future(
            peer_python(t, listen, t.server_ip, str(PORT), timeout=20))
        for _ in range(500):
            if accepted:
                break
            await asyncio.sleep(0.01)
        # SYNs from 10 x the cache's size of spoofed sources: each is answered, so each
        # source's MAC is learnt (and the client's, idle, is pushed out)
        flood = [wire.build_frame(segment(f"198.18.{128 + i // 200}.{1 + i % 200}", t.server_ip,
                                          sport=20000 + i), src_mac=client_mac,
                                  dst_mac=server_mac) for i in range(10 * limit)]
        inject(t, flood)
        for _ in range(500):
            if stack.program.counters()["syn_passed"] > len(flood):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the last batch answered
        assert stack.stats()["next_hop_macs"] <= limit
        assert packed_address(t.client_ip) not in stack._macs.recent
        assert packed_address(t.client_ip) not in stack._macs.older
        accepted[0].write(b"hello")
        _code, out, _err = await client
        assert out == b"hello\n"
        assert stack.stats()["tx_no_mac"] >= 1
        server.close()

    run_on_stack(t, main, timeout=60)
