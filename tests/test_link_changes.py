"""Link changes while serving, on a real veth pair (#13 item 1): the MTU lowered under a
transfer never wedges the TX path (a frame the kernel refuses is counted and dropped,
TCP resends it), and the stack follows the interface's new MTU through netlink: existing
connections lower their MSS, new ones announce and use the smaller one."""

from __future__ import annotations

import asyncio
import hashlib
import random
import select
import socket
from array import array

import pytest

import aioxdp
from aioxdp.tcp import wire
from aioxdp.tcp.segment import ACK, SYN, Segment
from aioxdp.topology import Topology

from .stackhelpers import BASE_LOOPS, peer_python, run_on_stack
from .test_protect import capture

pytestmark = pytest.mark.netns

PORT = 7000
SIZE = 4 << 20
SMALL_MTU = 1280

READER = """
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
h, n = hashlib.sha256(), 0
while data := s.recv(1 << 16):
    h.update(data)
    n += len(data)
print(n, h.hexdigest())
"""


class Held(asyncio.Protocol):
    """Hands its transport to the test, which writes."""

    def __init__(self, accepted: asyncio.Queue[asyncio.Transport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.accepted.put_nowait(transport)


def set_mtu(t: Topology, ns: str, dev: str, mtu: int) -> None:
    t.ip(ns, "link", "set", "dev", dev, "mtu", str(mtu))


def fetch(t: Topology, size: int) -> tuple[bytes, list[bytes]]:
    """A kernel client in the peer namespace reads ``size`` bytes; returns them and the
    frames the server sent it, as a raw socket on the peer's veth saw them."""
    with capture(t) as raw:
        with t.client():
            sock = socket.create_connection((t.server_ip, PORT), timeout=30)
        with sock:
            data = bytearray()
            while len(data) < size and (chunk := sock.recv(1 << 16)):
                data += chunk
        frames = []
        while select.select([raw], [], [], 0)[0]:
            frame, addr = raw.recvfrom(65536)
            if addr[2] != socket.PACKET_OUTGOING:
                frames.append(frame)
    return bytes(data), frames


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_lowering_the_mtu_mid_transfer_neither_wedges_nor_corrupts(
        topology: Topology, base: str) -> None:
    """4 MB from the stack to a Linux reader. A quarter of the way in, the peer's veth
    goes to MTU 1280: the stack's full-size frames are refused by the kernel (counted,
    sending goes on behind them); then the stack's own veth follows, which the stack reads
    through netlink: the connection lowers its MSS and resends, and the transfer completes
    intact. A new connection afterwards gets MSS 1240 in the SYN-ACK, and no frame above
    the MTU."""
    t = topology
    blob = random.Random(13).randbytes(SIZE)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        server = await loop.create_server(lambda: Held(accepted), t.server_ip, PORT)
        reader = asyncio.ensure_future(peer_python(t, READER, t.server_ip, str(PORT)))
        transport = await asyncio.wait_for(accepted.get(), 30)
        (conn,) = stack.table.connections.values()
        assert conn.mss == 1460 and stack.mtu == 1500
        transport.write(blob[:SIZE // 2])
        while (conn.snd_una - conn.iss) & 0xFFFFFFFF < SIZE // 4:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(set_mtu, t, t.client_ns, t.client_if, SMALL_MTU)
        transport.write(blob[SIZE // 2:])
        transport.close()
        while stack.stats()["xsk"]["tx_refused"] == 0:
            await asyncio.sleep(0.001)  # full-size frames go on and are refused
        assert stack.mtu == 1500  # the stack's own link has not changed yet
        await asyncio.to_thread(set_mtu, t, t.server_ns, t.server_if, SMALL_MTU)
        _code, out, _err = await reader
        count, digest = out.split()
        assert int(count) == SIZE and digest.decode() == hashlib.sha256(blob).hexdigest()
        stats = stack.stats()
        assert stats["mtu"] == SMALL_MTU
        assert stats["xsk"]["tx_refused"] > 0
        assert stats["xsk"]["tx_kick_errors"] == 0
        assert stats["tcp"]["link-mtu-lowered"] == 1

        small = 256 << 10
        fetched = asyncio.ensure_future(asyncio.to_thread(fetch, t, small))
        transport = await asyncio.wait_for(accepted.get(), 30)
        transport.write(blob[:small])
        transport.close()
        data, frames = await fetched
        assert data == blob[:small]
        segments = [seg for seg in map(wire.parse_frame, frames)
                    if seg is not None and seg.sport == PORT]
        (synack,) = [seg for seg in segments if seg.flags & (SYN | ACK) == SYN | ACK]
        assert synack.mss == SMALL_MTU - 40
        assert max(map(len, frames)) <= wire.ETH_HLEN + SMALL_MTU
        assert sum(len(seg.payload) for seg in segments) >= small
        server.close()

    run_on_stack(t, main, loop=base, timeout=60)


def test_frames_waiting_for_the_tx_ring_are_cut_to_a_lowered_mtu(topology: Topology) -> None:
    """Frames made before the MTU went down and still waiting for room in the TX ring
    are cut to the new MTU (C cuts them as super-frames) rather than refused."""
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        src, dst = stack.addresses[0], bytes([198, 18, 0, 99])
        frames = [wire.build_frame(Segment(src, dst, 7000, 40000, 1, 1, ACK, 512,
                                           bytes(size)), src_mac=bytes(6), dst_mac=bytes(6))
                  for size in (100, 1448, 4 * 1448)]
        stack._pending_tx[:] = frames
        stack._pending_gso[:] = array("H", [0, 0, 1448])
        stack.set_mtu(SMALL_MTU)
        headers = wire.ETH_HLEN + 20 + 20
        assert list(stack._pending_gso) == [0, *[wire.ETH_HLEN + SMALL_MTU - headers] * 2]
        assert stack._pending_tx == frames and stack.tx_oversize == 0
        assert stack.settings.tcp.mss == SMALL_MTU - 40
        stack._pending_tx[:] = []
        stack._pending_gso[:] = array("H")
        stack.set_mtu(1500)
        assert stack.settings.tcp.mss == 1460

    with t.server():  # nothing crosses the link: no run_on_stack, which asks for traffic
        aioxdp.run(main(), interface=t.server_if, stats=False)
