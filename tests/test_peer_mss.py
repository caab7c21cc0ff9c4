"""A peer's small MSS is honoured on the wire (issue #13 item 11; RFC 9293 MUST-16).

The peer is Linux in the client namespace, announcing MSS 100 (TCP_MAXSEG before
connect); a packet socket beside it sees every segment the stack sends: none
carries more than 100 bytes of data and options. The floor is Linux's
tcp_min_snd_mss (48), not the 536 it used to be.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from aioxdp.topology import Topology

from .stackhelpers import peer_python, run_on_stack

PORT = 7100
SIZE = 3000
PEER_MSS = 100

# the peer: capture on its veth, connect announcing PEER_MSS, read to EOF, then report
# the TCP data + options of each segment from the server's port
CLIENT = """
import json, socket, struct, sys
host, port, dev, mss = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
cap.bind((dev, 0))
cap.settimeout(0.5)
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
s.settimeout(10)
s.connect((host, port))
data = b""
while chunk := s.recv(65536):
    data += chunk
s.close()
sizes = []
while True:
    try:
        frame = cap.recv(65536)
    except TimeoutError:
        break
    ip = frame[14:]
    if ip[9] != 6:
        continue
    ihl = (ip[0] & 15) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:total]
    if struct.unpack("!H", tcp[0:2])[0] != port or len(tcp) <= 20:
        continue
    sizes.append(len(tcp) - 20)  # data and options
print(json.dumps({"received": len(data), "sizes": sizes}))
"""


@pytest.mark.netns
def test_peer_announcing_mss_100_gets_segments_of_at_most_100_bytes(topology: Topology) -> None:
    async def main() -> dict[str, object]:
        async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"m" * SIZE)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(send, topology.server_ip, PORT)
        async with server:
            _code, out, _err = await peer_python(
                topology, CLIENT, topology.server_ip, str(PORT), topology.client_if,
                str(PEER_MSS))
        return dict(json.loads(out))

    report = run_on_stack(topology, main)
    assert report["received"] == SIZE
    sizes = report["sizes"]
    assert isinstance(sizes, list)
    assert max(sizes) <= PEER_MSS, sizes
    # data went out in segments of the peer's size: 88 bytes beside 12 of timestamps
    assert len(sizes) >= SIZE // PEER_MSS, sizes
