"""Jumbo frames through the whole stack on a real veth pair (#11 item 3): with MTU 9000 on
both ends the stack announces and uses MSS 8960, as Linux does, and its frames travel as
several UMEM frames each (AF_XDP multi-buffer, the XDP program built for frames of several
buffers); a Linux peer downloads and uploads through it intact. A link MTU raised beyond
the frames the AF_XDP socket was made for is capped to them."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from aioxdp.topology import Topology

from .stackhelpers import HASHING_READER, Held, peer_python, run_on_stack

pytestmark = pytest.mark.netns

PORT = 7000
SIZE = 8 << 20
JUMBO_MTU = 9000

READER = HASHING_READER

WRITER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(sys.stdin.buffer.read())
s.shutdown(socket.SHUT_WR)
s.recv(1)  # until the server closes: everything was read
"""


class Sink(asyncio.Protocol):
    """Hashes what it reads; at the end of the stream, (bytes, sha256) in ``done``."""

    def __init__(self, done: asyncio.Future[tuple[int, str]]) -> None:
        self.done = done
        self.hash = hashlib.sha256()
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self) -> None:
        self.done.set_result((self.count, self.hash.hexdigest()))


def set_mtu(t: Topology, mtu: int) -> None:
    for ns, dev in ((t.server_ns, t.server_if), (t.client_ns, t.client_if)):
        t.ip(ns, "link", "set", "dev", dev, "mtu", str(mtu))


async def download(t: Topology, accepted: asyncio.Queue[asyncio.Transport], blob: bytes,
                   mss: int, server_ip: str) -> None:
    """A Linux reader fetches ``blob`` from the stack over a connection of MSS ``mss``."""
    loop = asyncio.get_running_loop()
    stack = loop._stack()  # type: ignore[attr-defined]
    reader = asyncio.ensure_future(peer_python(t, READER, server_ip, str(PORT)))
    transport = await asyncio.wait_for(accepted.get(), 30)
    conns = [c for c in stack.table.connections.values() if c.remote[1] != PORT]
    assert [c.mss for c in conns] == [mss]
    transport.write(blob)
    transport.close()
    _code, out, _err = await reader
    count, digest = out.split()
    assert int(count) == len(blob) and digest.decode() == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("mode,family", [("skb", "ipv4"), ("native", "ipv4"), ("skb", "ipv6")])
def test_jumbo_frames_carry_a_transfer_each_way_intact(mode: str, family: str) -> None:
    """8 MB to a Linux reader and 8 MB from a Linux writer, sha256 checked, over MTU 9000:
    MSS 8960 both ways (IPv6: the 8940 Linux announces), and the socket's counters show
    frames received and sent as several UMEM frames, none dropped for a bad checksum."""
    blob = random.Random(9000).randbytes(SIZE)
    up = random.Random(9001).randbytes(SIZE)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        assert stack.mtu == JUMBO_MTU and stack.xsk.max_frame == 14 + JUMBO_MTU
        assert stack.settings.tcp.mss == JUMBO_MTU - 40
        accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        uploaded: asyncio.Future[tuple[int, str]] = loop.create_future()
        server_ip = t.server_ip if family == "ipv4" else t.server_ip6
        await loop.create_server(lambda: Held(accepted), server_ip, PORT)
        await loop.create_server(lambda: Sink(uploaded), server_ip, PORT + 1)
        await download(t, accepted, blob, JUMBO_MTU - (40 if family == "ipv4" else 60),
                       server_ip)
        writer = asyncio.ensure_future(peer_python(t, WRITER, server_ip, str(PORT + 1),
                                                   stdin=up))
        assert await asyncio.wait_for(uploaded, 60) == (SIZE, hashlib.sha256(up).hexdigest())
        await writer
        xsk = stack.stats()["xsk"]
        # most of each 8 MB in full-sized jumbo frames (a few are shorter: ends of writes)
        assert xsk["tx_multi"] >= SIZE // (JUMBO_MTU - 40) // 2
        assert xsk["rx_multi"] >= SIZE // (JUMBO_MTU - 40) // 2
        assert xsk["rx_dropped_checksum"] == 0 and xsk["rx_dropped_malformed"] == 0

    with Topology(mtu=JUMBO_MTU) as t:
        run_on_stack(t, main, mode=mode)


def test_an_mtu_above_the_sockets_frames_is_capped_to_them() -> None:
    """A stack started on MTU 1500 has 2 KB frames and no multi-buffer: when both veths
    go to 9000 it follows only up to 2034 (MSS 1994), so nothing it announces or sends
    is longer than its frames, and a transfer after the change is intact."""
    blob = random.Random(2034).randbytes(1 << 20)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        assert stack.xsk.max_frame == stack.xsk.frame_size == 2048
        accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        await loop.create_server(lambda: Held(accepted), t.server_ip, PORT)
        await asyncio.to_thread(set_mtu, t, JUMBO_MTU)
        for _ in range(500):
            if stack.mtu != 1500:
                break
            await asyncio.sleep(0.01)
        assert stack.mtu == 2048 - 14 and stack.settings.tcp.mss == 2048 - 14 - 40
        await download(t, accepted, blob, 2048 - 14 - 40, t.server_ip)

    with Topology() as t:
        run_on_stack(t, main)
