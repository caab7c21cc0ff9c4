"""Link changes while serving, on a real veth pair (#13 item 1): the MTU lowered under a
transfer never wedges the TX path (a frame the kernel refuses is counted and dropped,
TCP resends it), and the stack follows the interface through netlink: a new MTU
(existing connections lower their MSS, new ones announce and use the smaller one, and
after a raise the larger one again while the lowered connections keep theirs), the link
going down and up (connections kept, TCP resends across the flap), and addresses added
or removed (served, or no longer, by wildcard listeners)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import select
import socket
from array import array
from typing import Any

import pytest

import aioxdp
from aioxdp.stack import NetStack
from aioxdp.tcp import wire
from aioxdp.tcp.segment import ACK, SYN, Segment
from aioxdp.topology import Topology

from .stackhelpers import BASE_LOOPS, HASHING_READER, Held, peer_python, run_on_stack
from .test_protect import capture

pytestmark = pytest.mark.netns

PORT = 7000
SIZE = 4 << 20
SMALL_MTU = 1280

READER = HASHING_READER


async def one_reader(t: Topology) -> tuple[Any, asyncio.AbstractServer,
                                           asyncio.Queue[asyncio.Transport],
                                           asyncio.Future[Any], asyncio.Transport, Any]:
    """A server on the stack that hands its connections to the test, and READER in
    the peer namespace connected to it: (the stack, the server, the queue later
    connections come in, the reader's run, the server side's transport, its
    connection in the core)."""
    loop = asyncio.get_running_loop()
    stack = loop._stack()  # type: ignore[attr-defined]
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
    server = await loop.create_server(lambda: Held(accepted), t.server_ip, PORT)
    reader = asyncio.ensure_future(peer_python(t, READER, t.server_ip, str(PORT)))
    transport = await asyncio.wait_for(accepted.get(), 30)
    (conn,) = stack.table.connections.values()
    return stack, server, accepted, reader, transport, conn


def set_mtu(t: Topology, ns: str, dev: str, mtu: int) -> None:
    t.ip(ns, "link", "set", "dev", dev, "mtu", str(mtu))


def received(raw: socket.socket) -> list[bytes]:
    """The frames the peer's veth received so far, as a raw socket on it saw them."""
    frames = []
    while select.select([raw], [], [], 0)[0]:
        frame, addr = raw.recvfrom(65536)
        if addr[2] != socket.PACKET_OUTGOING:
            frames.append(frame)
    return frames


def fetch(t: Topology, size: int, host: str | None = None) -> tuple[bytes, list[bytes]]:
    """A kernel client in the peer namespace reads ``size`` bytes (from the server's IPv4
    address, or ``host``); returns them and the frames the server sent it."""
    with capture(t) as raw:
        with t.client():
            sock = socket.create_connection((host or t.server_ip, PORT), timeout=30)
        with sock:
            data = bytearray()
            while len(data) < size and (chunk := sock.recv(1 << 16)):
                data += chunk
        return bytes(data), received(raw)


def server_segments(frames: list[bytes]) -> tuple[Segment, list[Segment]]:
    """The server's SYN-ACK among ``frames``, and all its segments."""
    segments = [seg for seg in map(wire.parse_frame, frames)
                if seg is not None and seg.sport == PORT]
    (synack,) = [seg for seg in segments if seg.flags & (SYN | ACK) == SYN | ACK]
    return synack, segments


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
        stack, server, accepted, reader, transport, conn = await one_reader(t)
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
        synack, segments = server_segments(frames)
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


# -- link down/up and carrier ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["server", "client"])
def test_link_flap_mid_transfer_keeps_the_connection(topology: Topology, side: str) -> None:
    """4 MB from the stack to a Linux reader; a quarter of the way in the link goes down
    for half a second: the stack's own veth administratively (``ip link set down``), or
    the peer's, which takes the carrier off the stack's. The stack logs and counts it and
    keeps the connection; what the kernel refused meanwhile is retransmitted, nothing
    wedges, and the transfer completes intact once the link is back."""
    t = topology
    blob = random.Random(14).randbytes(SIZE)
    ns, dev = (t.server_ns, t.server_if) if side == "server" else (t.client_ns, t.client_if)

    async def main() -> None:
        stack, server, _accepted, reader, transport, conn = await one_reader(t)
        assert stack.stats()["link"] == {"up": True, "downs": 0, "addresses_added": 0,
                                         "addresses_removed": 0}
        transport.write(blob[:SIZE // 4])
        while (conn.snd_una - conn.iss - 1) & 0xFFFFFFFF < SIZE // 4:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(t.ip, ns, "link", "set", "dev", dev, "down")
        while stack.link_up:
            await asyncio.sleep(0.001)  # the netlink event came
        transport.write(blob[SIZE // 4:])  # sent into a link that is down
        transport.close()
        await asyncio.sleep(0.5)
        assert (conn.snd_una - conn.iss - 1) & 0xFFFFFFFF == SIZE // 4
        assert not reader.done()
        await asyncio.to_thread(t.ip, ns, "link", "set", "dev", dev, "up")
        _code, out, _err = await asyncio.wait_for(reader, 30)
        count, digest = out.split()
        assert int(count) == SIZE and digest.decode() == hashlib.sha256(blob).hexdigest()
        link = stack.stats()["link"]
        assert link["up"] and link["downs"] == 1
        server.close()

    run_on_stack(t, main, timeout=60)


def test_link_state_follows_up_down_and_carrier(topology: Topology) -> None:
    """stats()["link"] follows the link: administratively down, down for want of carrier
    (the peer's veth down), and up again; each time down is counted once."""
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]

        async def until(up: bool) -> None:
            for _ in range(500):
                if stack.link_up is up:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"link_up never became {up}")

        for ns, dev in ((t.server_ns, t.server_if), (t.client_ns, t.client_if)):
            await asyncio.to_thread(t.ip, ns, "link", "set", "dev", dev, "down")
            await until(False)
            await asyncio.to_thread(t.ip, ns, "link", "set", "dev", dev, "up")
            await until(True)
        assert stack.stats()["link"]["downs"] == 2

    with t.server():  # nothing crosses the link: no run_on_stack, which asks for traffic
        aioxdp.run(main(), interface=t.server_if, stats=False)


# -- addresses added and removed ---------------------------------------------------------------

HELLO = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
s.sendall(b"ping")
print(s.recv(100).decode())
"""


class Greeter(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.write(b"pong " + data)
        self.transport.close()


async def change_address(t: Topology, stack: NetStack, action: str, addr: str) -> None:
    """``ip address add|del ADDR`` on the stack's veth; returns once the stack followed."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
    plen = "64" if ":" in addr else "24"
    await asyncio.to_thread(t.ip, t.server_ns, "address", action, f"{addr}/{plen}", "dev",
                            t.server_if, *(["nodad"] if ":" in addr and action == "add" else []))
    for _ in range(500):
        if (packed in stack.addresses) is (action == "add"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stack did not follow `ip address {action} {addr}`")


async def hello(t: Topology, stack: NetStack, host: str, *, answered: bool) -> None:
    """A kernel client in the peer namespace says hello to ``host``: answered through the
    stack, or not answered at all, and the XDP program redirected nothing to the stack."""
    before = stack.program.counters()["redirected"]
    code, out, err = await peer_python(t, HELLO, host, str(PORT), "10" if answered else "1.5",
                                       check=False, timeout=30)
    if answered:
        assert code == 0 and out.decode().strip() == "pong ping", err
        assert stack.program.counters()["redirected"] > before
    else:
        assert code != 0 and b"TimeoutError" in err, err
        assert stack.program.counters()["redirected"] == before


async def still_sent_to_the_stack(t: Topology, stack: NetStack, addr: str) -> None:
    """The peer goes on sending to ``addr`` at the stack's MAC (a static neighbour entry),
    as it would for a while after the address moved away."""
    mac = ":".join(f"{b:02x}" for b in stack.iface.mac)
    await asyncio.to_thread(t.ip, t.client_ns, "neigh", "replace", addr, "lladdr", mac,
                            "dev", t.client_if, "nud", "permanent")


@pytest.mark.parametrize("new", ["198.18.0.3", "2001:2::3"])
def test_wildcard_listener_follows_addresses_added_and_removed(
        topology: Topology, new: str) -> None:
    """A listener on the wildcard serves an address added to the interface while it runs,
    through the stack (the XDP program learns it as a local address and a listener), and
    stops serving it once removed: then the peer's SYNs, still sent to the stack's MAC,
    are passed to Linux, which no longer has the address, and go unanswered. The
    interface's other addresses are served throughout."""
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        server = await loop.create_server(Greeter, "0.0.0.0", PORT)
        await change_address(t, stack, "add", new)
        await hello(t, stack, new, answered=True)
        assert stack.stats()["link"]["addresses_added"] == 1
        await change_address(t, stack, "del", new)
        await still_sent_to_the_stack(t, stack, new)
        await hello(t, stack, new, answered=False)
        assert stack.stats()["link"]["addresses_removed"] == 1
        await hello(t, stack, t.server_ip, answered=True)
        server.close()

    run_on_stack(t, main, timeout=60)


def test_a_server_of_one_address_serves_it_again_once_it_is_back(topology: Topology) -> None:
    """A server of one address (not the wildcard) stops serving it while the address is
    removed from the interface and serves it again once it is added back, as a Linux
    socket bound to the address does."""
    t = topology
    new = "198.18.0.3"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        await change_address(t, stack, "add", new)
        server = await loop.create_server(Greeter, new, PORT)
        await hello(t, stack, new, answered=True)
        await change_address(t, stack, "del", new)
        await still_sent_to_the_stack(t, stack, new)
        await hello(t, stack, new, answered=False)
        await change_address(t, stack, "add", new)
        await hello(t, stack, new, answered=True)
        server.close()

    run_on_stack(t, main, timeout=60)


# -- the MSS of new and existing connections across MTU changes ----------------------------------


def synack_mss(t: Topology, host: str, size: int) -> tuple[int | None, int]:
    """A kernel client in the peer namespace fetches ``size`` bytes from ``host``; returns
    the MSS the stack announced in its SYN-ACK and the longest frame it sent."""
    data, frames = fetch(t, size, host)
    assert len(data) == size
    return server_segments(frames)[0].mss, max(map(len, frames))


async def serve_one(t: Topology, accepted: asyncio.Queue[asyncio.Transport], host: str,
                    data: bytes) -> tuple[int | None, int]:
    """synack_mss in a thread, while the accepted connection sends ``data`` and closes."""
    fetched = asyncio.ensure_future(asyncio.to_thread(synack_mss, t, host, len(data)))
    transport = await asyncio.wait_for(accepted.get(), 30)
    transport.write(data)
    transport.close()
    return await fetched


def test_ipv6_connections_announce_the_mtu_less_60(topology: Topology) -> None:
    """An IPv6 SYN-ACK announces the MTU less the 60 bytes of IPv6 and TCP headers (RFC
    8200 §5, RFC 9293 §3.7.1), before and after the MTU changes; IPv4 the MTU less 40."""
    t = topology
    data = random.Random(6).randbytes(64 << 10)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        server = await loop.create_server(lambda: Held(accepted), "::", PORT)
        stack = loop._stack()  # type: ignore[attr-defined]
        for mtu in (1500, SMALL_MTU):
            await asyncio.to_thread(set_mtu, t, t.client_ns, t.client_if, mtu)
            await asyncio.to_thread(set_mtu, t, t.server_ns, t.server_if, mtu)
            while stack.mtu != mtu:
                await asyncio.sleep(0.01)
            mss4, longest4 = await serve_one(t, accepted, t.server_ip, data)
            mss6, longest6 = await serve_one(t, accepted, t.server_ip6, data)
            assert max(longest4, longest6) <= wire.ETH_HLEN + mtu
            assert mss4 == mtu - 40
            assert mss6 == mtu - 60
        server.close()

    run_on_stack(t, main, timeout=60)


def test_raising_the_mtu_leaves_existing_connections_at_their_lowered_mss(
        topology: Topology) -> None:
    """The MTU lowered then raised again: a connection that lowered its MSS keeps it (no
    path MTU probing, as RFC 1191 §6.3 and Linux without tcp_mtu_probing: its frames stay
    within the lower MTU), while a new connection announces and uses the larger MSS."""
    t = topology
    data = random.Random(3).randbytes(256 << 10)

    async def main() -> None:
        stack, server, accepted, reader, old, conn = await one_reader(t)
        assert conn.mss == 1460
        for mtu in (SMALL_MTU, 1500):
            for ns, dev in ((t.client_ns, t.client_if), (t.server_ns, t.server_if)):
                await asyncio.to_thread(set_mtu, t, ns, dev, mtu)
            while stack.mtu != mtu:
                await asyncio.sleep(0.01)
            assert conn.mss == SMALL_MTU - 40
        assert stack.settings.tcp.mss == 1460
        # the old connection sends within the lowered MTU; the new one at full size
        with capture(t) as raw:
            old.write(data)
            old.close()
            _code, out, _err = await reader
            assert out.split()[0] == str(len(data)).encode()
            frames = received(raw)
        assert max(map(len, frames)) <= wire.ETH_HLEN + SMALL_MTU
        mss, longest = await serve_one(t, accepted, t.server_ip, data)
        assert mss == 1460
        assert longest == wire.ETH_HLEN + 1500
        server.close()

    run_on_stack(t, main, timeout=60)


def test_a_full_tx_ring_is_not_retried_while_the_link_is_down(topology: Topology) -> None:
    """The link administratively down, the kernel takes nothing from the TX ring
    (ENETDOWN): once it is full, the frames that did not fit wait, and the stack does not
    spin retrying them every 200 µs; the link coming back retries, and they all go."""
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stack = loop._stack()  # type: ignore[attr-defined]
        src, dst = stack.addresses[0], socket.inet_aton(t.client_ip)
        stack._macs.learn(dst, bytes.fromhex("02" * 6))  # frames to no one, sent or not
        await asyncio.to_thread(t.ip, t.server_ns, "link", "set", "dev", t.server_if, "down")
        while stack.link_up:
            await asyncio.sleep(0.001)
        wakeups = 0
        wakeup = stack.wakeup

        def counted() -> None:
            nonlocal wakeups
            wakeups += 1
            wakeup()

        stack.wakeup = counted
        count = 2 * stack.xsk.tx_capacity
        stack._transmit([Segment(src, dst, 7000, 40000, 1, 1, ACK, 512, bytes(64))
                         for _ in range(count)])
        assert stack._pending_tx  # the ring is full
        waiting = len(stack._pending_tx)
        await asyncio.sleep(0.3)
        assert wakeups == 0 and len(stack._pending_tx) == waiting
        assert stack.xsk.stats()["tx_kick_errors"] > 0  # ENETDOWN
        await asyncio.to_thread(t.ip, t.server_ns, "link", "set", "dev", t.server_if, "up")
        while stack._pending_tx:
            await asyncio.sleep(0.01)
        assert wakeups > 0
        assert stack.xsk.stats()["tx"] >= count

    with t.server():  # nothing crosses the link: no run_on_stack, which asks for traffic
        aioxdp.run(main(), interface=t.server_if, stats=False)
