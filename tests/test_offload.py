"""The C frame path on a real veth pair, against a real Linux TCP peer: a bulk
transfer to the stack arrives coalesced (fewer records than frames), and a
bulk transfer from it leaves as super-frames cut into MSS pieces in C, intact
on the Linux side (whose kernel verifies every piece's checksums)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from aioxdp.topology import Topology
from aioxdp.transport import XdpTransport

from .stackhelpers import peer_server, run_on_stack

pytestmark = pytest.mark.netns

PORT = 9100
SIZE = 20 * 1024 * 1024
BLOCK = hashlib.sha256(b"offload").digest() * 2048  # 64 KiB

# Sends SIZE bytes to the first connection, then reads everything the second
# one sends and answers with its length and digest.
PEER = """
    import hashlib, socket, sys
    size, block = int(sys.argv[1]), hashlib.sha256(b"offload").digest() * 2048
    srv = socket.create_server(("::", int(sys.argv[2])), family=socket.AF_INET6,
                               dualstack_ipv6=True)
    srv.settimeout(60)
    c, _ = srv.accept()
    sent = 0
    while sent < size:
        c.sendall(block[: size - sent])
        sent += min(len(block), size - sent)
    c.close()
    c, _ = srv.accept()
    c.settimeout(60)
    h, n = hashlib.sha256(), 0
    while chunk := c.recv(1 << 20):
        h.update(chunk)
        n += len(chunk)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()
"""


def expected_digest(size: int) -> str:
    h = hashlib.sha256()
    for off in range(0, size, len(BLOCK)):
        h.update(BLOCK[: size - off])
    return h.hexdigest()


async def upload(addr: str, size: int, *, drain_each: bool = True) -> str:
    """Send ``size`` bytes of BLOCKs to the peer; its answer: "length digest"."""
    reader, writer = await asyncio.open_connection(addr, PORT)
    for off in range(0, size, len(BLOCK)):
        writer.write(BLOCK[: size - off])
        if drain_each:
            await writer.drain()
    await writer.drain()
    writer.write_eof()
    answer = (await reader.read()).decode()
    writer.close()
    return answer


def stack_stats() -> dict[str, Any]:
    stack = asyncio.get_running_loop().xdp_stack  # type: ignore[attr-defined]
    assert stack is not None
    return stack.stats()  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_bulk_both_ways_through_gro_and_gso(topology: Topology, family: str) -> None:
    peer_addr = topology.client_ip if family == "ipv4" else topology.client_ip6

    async def main() -> tuple[dict[str, Any], dict[str, Any], str]:
        proc = await peer_server(topology, PEER, PORT, str(SIZE), str(PORT))
        reader, writer = await asyncio.open_connection(peer_addr, PORT)
        assert isinstance(writer.transport, XdpTransport)
        h, n = hashlib.sha256(), 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        writer.close()
        assert (n, h.hexdigest()) == (SIZE, expected_digest(SIZE))
        received = stack_stats()["offload"]
        answer = await upload(peer_addr, SIZE)
        await proc.wait()
        return received, stack_stats()["offload"], answer

    received, sent, answer = run_on_stack(topology, main, timeout=120)
    assert answer == f"{SIZE} {expected_digest(SIZE)}"
    # the peer's kernel sends MSS-sized frames (tx offload off on its veth): the C
    # path merged runs of them, and left none of them to wire.py
    assert received["rx_frames"] >= SIZE // 1500
    assert received["rx_records"] < received["rx_frames"]
    assert received["rx_raw"] == 0
    # the stack sent super-frames, cut into MSS frames in C
    gso_frames = sent["tx_gso_frames"] - received["tx_gso_frames"]
    pieces = sent["tx_gso_pieces"] - received["tx_gso_pieces"]
    assert gso_frames > 0 and pieces >= 2 * gso_frames
    assert pieces * 1500 >= SIZE // 2  # most of the data went that way


def test_bulk_upload_through_tx_stalls_with_few_umem_frames(topology: Topology) -> None:
    """With 64 UMEM frames one send can queue 32 frames at most: super-frames are
    cut into no more (TcpConfig.gso_max_segs), the TX ring runs full all the time, and
    what did not fit waits in _pending_tx, super-frames whole, in order."""
    size = 4 * 1024 * 1024

    async def main() -> tuple[dict[str, Any], int, str]:
        proc = await peer_server(topology, PEER, PORT, "0", str(PORT))
        reader, writer = await asyncio.open_connection(topology.client_ip, PORT)
        assert await reader.read() == b""  # the peer's empty download
        writer.close()
        # written all at once: the core has the whole of it to send
        answer = await upload(topology.client_ip, size, drain_each=False)
        await proc.wait()
        stack = asyncio.get_running_loop().xdp_stack  # type: ignore[attr-defined]
        return stack_stats(), stack.settings.tcp.gso_max_segs, answer

    stats, gso_max_segs, answer = run_on_stack(topology, main, timeout=120, frames=64)
    assert answer == f"{size} {expected_digest(size)}"
    assert 1 < gso_max_segs <= 32
    assert stats["offload"]["tx_gso_frames"] > 0
    assert stats["tx_stalls"] > 0
