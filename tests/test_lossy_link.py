"""Transfers stay intact when a BPF program drops packets on the link, both ways.

The loss sits on the Linux peer's veth, at egress (segments to aioxdp) and at
ingress (segments from aioxdp, which leave through AF_XDP and so skip the
server side's qdisc): only TCP is hit, so ARP keeps working.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from aioxdp.impair import Impairment
from aioxdp.topology import Topology

from .stackhelpers import peer_python, run_on_stack

pytestmark = pytest.mark.netns

PORT = 8000
SIZE = 4 * 1024 * 1024


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_transfer_intact_under_loss(topology: Topology, loss: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # upload: digest what arrives; then download: send SIZE bytes derived from it
        h = hashlib.sha256()
        remaining = SIZE
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 16))
            assert chunk, "peer closed early"
            h.update(chunk)
            remaining -= len(chunk)
        digest = h.digest()
        writer.write(digest)
        block = digest * 2048
        for off in range(0, SIZE, len(block)):
            writer.write(block[: SIZE - off])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> tuple[bytes, tuple[int, int]]:
        server = await asyncio.start_server(handle, topology.server_ip, PORT)
        with Impairment(topology, topology.client_if, loss=loss, direction="egress",
                        protocol=socket.IPPROTO_TCP) as up, \
             Impairment(topology, topology.client_if, loss=loss, direction="ingress",
                        protocol=socket.IPPROTO_TCP) as down:
            async with server:
                _, out, _ = await peer_python(topology, """
                    import hashlib, os, socket, sys
                    size = int(sys.argv[3])
                    data = os.urandom(size)
                    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
                    s.sendall(data)
                    got = bytearray()
                    while chunk := s.recv(1 << 16):
                        got += chunk
                    digest = hashlib.sha256(data).digest()
                    block = digest * 2048
                    expected = digest + b"".join(block[: size - off]
                                                 for off in range(0, size, len(block)))
                    print("intact" if bytes(got) == expected else f"corrupt {len(got)}")
                """, topology.server_ip, str(PORT), str(SIZE), timeout=240)
            dropped = (up.counters().dropped, down.counters().dropped)
        return out, dropped

    out, dropped = run_on_stack(topology, main, timeout=300)
    assert out.strip() == b"intact"
    assert all(d > 0 for d in dropped), f"the link dropped nothing: {dropped}"
