"""bench/flood.py and bench/c/flood.c: the DDoS benchmark's attack traffic.

What must hold for the generator to be safe and useful: it refuses sources
outside 198.18.0.0/15, it stops by itself at its duration and at its frame
count, and the frames that reach the server are what they claim to be
(correct IPv4 and TCP checksums, sources only from the given prefix, the
server as destination, the right TCP shape per kind).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

from aioxdp.topology import Topology

from .test_xsk import ref_checksum

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from flood import Flood, link_mac  # noqa: E402

pytestmark = pytest.mark.netns

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
PORT = 8080


def rx_packets(topo: Topology) -> int:
    return int(topo.exec(topo.server_ns, "cat",
                         f"/sys/class/net/{topo.server_if}/statistics/rx_packets").stdout)




def tcp_options(tcp: bytes) -> dict[int, bytes]:
    """Option kind -> value of a well-formed TCP header (RFC 9293 §3.1)."""
    options, i, end = {}, 20, (tcp[12] >> 4) * 4
    while i < end:
        kind = tcp[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        length = tcp[i + 1]
        options[kind] = tcp[i + 2:i + length]
        i += length
    return options


@pytest.mark.parametrize("prefix", ["10.0.0.0/8", "198.16.0.0/14", "198.20.0.0/16",
                                    "0.0.0.0/0", "198.17.255.0/24", "198.18.0.0"])
def test_refuses_sources_outside_the_benchmark_range(topology: Topology, prefix: str) -> None:
    before = rx_packets(topology)
    with pytest.raises(RuntimeError, match="refused"):
        Flood(topology, duration=1, count=10, src_prefix=prefix).run()
    assert rx_packets(topology) - before < 10  # at most stray IPv6 chatter, no flood


def test_refuses_a_destination_outside_the_benchmark_range(topology: Topology) -> None:
    flood = Flood(topology, duration=1, count=10)
    flood.cmd[flood.cmd.index("--dst-ip") + 1] = "192.0.2.1"
    with pytest.raises(RuntimeError, match="refused"):
        flood.run()


def test_refuses_to_run_without_a_time_bound(topology: Topology) -> None:
    with pytest.raises(ValueError):
        Flood(topology, duration=0)
    flood = Flood(topology, duration=1)
    flood.cmd[flood.cmd.index("--duration") + 1] = "61"
    with pytest.raises(RuntimeError, match="refused"):
        flood.run()


def test_stops_at_its_duration(topology: Topology) -> None:
    result = Flood(topology, rate=2000, duration=1).run()  # raises if it had to be killed
    assert result.seconds >= 1.0
    assert 0 < result.sent <= 2000 + 64  # paced: never ahead of rate × elapsed (+ one batch)


def test_stops_at_its_count(topology: Topology) -> None:
    before = rx_packets(topology)
    result = Flood(topology, count=1000, duration=30).run()
    assert result.sent == 1000
    assert result.seconds < 30
    assert 1000 <= rx_packets(topology) - before < 1000 + 10


async def test_async_api(topology: Topology) -> None:
    before = rx_packets(topology)
    async with Flood(topology, "ack", count=200, duration=10) as flood:
        result = await flood.finished()
    assert (result.kind, result.sent) == ("ack", 200)
    assert flood.result == result
    assert 200 <= rx_packets(topology) - before < 200 + 10


def test_leaving_the_block_stops_a_running_flood(topology: Topology) -> None:
    with Flood(topology, rate=1000, duration=30) as flood:
        time.sleep(0.5)
    assert flood.result is not None and 0 < flood.result.seconds < 30
    assert flood.result.sent > 0
    assert flood.result.sent <= 1000 * flood.result.seconds + 64


@pytest.mark.parametrize("kind", ["syn", "ack", "junk"])
def test_frames_are_valid_and_spoof_only_inside_the_prefix(topology: Topology, kind: str) -> None:
    prefix = ipaddress.ip_network("198.19.0.0/16")
    count = 300
    with topology.server():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((topology.server_if, ETH_P_IP))
        sock.settimeout(2.0)
        result = Flood(topology, kind, count=count, duration=10, src_prefix=str(prefix)).run()
        assert result.sent == count
        frames: list[bytes] = []
        while len(frames) < count:
            frame, address = sock.recvfrom(4096)
            if address[2] != PACKET_OUTGOING:
                frames.append(frame)

    server_mac = bytes.fromhex(link_mac(topology, topology.server_ns,
                                        topology.server_if).replace(":", ""))
    sources, segments = set(), []
    for frame in frames:
        assert frame[:6] == server_mac
        assert struct.unpack("!H", frame[12:14])[0] == ETH_P_IP
        ip = frame[14:]
        assert ip[0] == 0x45 and ip[9] == socket.IPPROTO_TCP
        assert ref_checksum(ip[:20]) == 0
        total = struct.unpack("!H", ip[2:4])[0]
        source = ipaddress.ip_address(ip[12:16])
        assert source in prefix and source in ipaddress.ip_network("198.18.0.0/15")
        assert ipaddress.ip_address(ip[16:20]) == ipaddress.ip_address(topology.server_ip)
        sources.add(source)
        tcp = ip[20:total]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        assert ref_checksum(pseudo + tcp) == 0
        segments.append(tcp)
        assert struct.unpack("!H", tcp[2:4])[0] == PORT
        if kind == "junk":
            continue
        flags, options = tcp[13], tcp_options(tcp)
        if kind == "syn":
            assert flags == 0x02
            assert set(options) == {2, 3, 4, 8}  # MSS, window scale, SACK-permitted, timestamps
            assert len(tcp) == 40
        else:
            assert flags == 0x10
            assert set(options) == {8}
    assert len(sources) > count // 2  # random sources, not one spoofed address
    if kind == "junk":  # malformed on purpose: cut headers, data offsets below 5 or past the end
        whole = [tcp for tcp in segments if len(tcp) >= 20]
        assert any(len(tcp) < 20 for tcp in segments)
        assert any((tcp[12] >> 4) * 4 < 20 for tcp in whole)
        assert any((tcp[12] >> 4) * 4 > len(tcp) for tcp in whole)
