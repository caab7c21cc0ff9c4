"""The three ways the loop waits for frames (aioxdp/polling.py), on a real veth pair with a
kernel TCP peer: each serves, and adaptive mode's switches between polling and sleeping in
the selector strand no frame.

A frame left in the RX ring across a switch would not be lost for good: the peer would
send it again after its retransmission timeout. So the test counts the peer's
retransmissions (its namespace's ``/proc/net/snmp``): on this lossless link there must be
none, and every round trip must come back intact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aioxdp.tcp.tcb import QUICKACK_SEGMENTS
from aioxdp.topology import Topology

from .stackhelpers import peer, peer_python, run_on_stack

pytestmark = pytest.mark.netns

PORT = 7100
ROUNDS = 400

# Round trips on one connection, separated by pauses from none to 5 ms in a fixed
# pseudo-random order: some shorter than the polling budget, some much longer, so that
# adaptive mode polls, sleeps and wakes hundreds of times.
CLIENT = """
import random, socket, sys, time
rng = random.Random(7)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
bad = 0
for i in range(int(sys.argv[3])):
    msg = b"%06d" % i * 10
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(len(msg) - len(got))
    bad += got != msg
    pause = rng.choice((0, 0, 0, 0.0002, 0.001, 0.005))
    if pause:
        time.sleep(pause)
s.close()
print(bad)
"""


async def retransmitted(topo: Topology) -> int:
    """TCP segments the peer's namespace has retransmitted so far (RFC 4022 tcpRetransSegs)."""
    _, out, _ = await peer(topo, "cat", "/proc/net/snmp")
    head, values = [line.split() for line in out.decode().splitlines() if line.startswith("Tcp:")]
    return int(values[head.index("RetransSegs")])


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def serve_rounds(topo: Topology, poll: str, base: str, **settings: Any) -> dict[str, Any]:
    """ROUNDS round trips from the peer; returns the stack's polling stats, the peer's
    retransmissions and the round trips that came back wrong."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, topo.server_ip, PORT)
        async with server:
            before = await retransmitted(topo)
            _, out, _ = await peer_python(topo, CLIENT, topo.server_ip, str(PORT), str(ROUNDS))
            stack = loop.xdp_stack  # type: ignore[attr-defined]
            return {"bad": int(out), "retransmitted": await retransmitted(topo) - before,
                    "polling": stack.stats()["polling"],
                    "server_retransmits": stack.table.recovery_stats()["retransmits"]}

    return run_on_stack(topo, main, loop=base, poll=poll, **settings)


@pytest.mark.parametrize("base", ["asyncio", "uvloop"])
def test_adaptive_switches_strand_no_frame(topology: Topology, base: str) -> None:
    # a budget longer than the short pauses and shorter than the long ones
    result = serve_rounds(topology, "adaptive", base, poll_budget_us=2000)
    polling = result["polling"]
    assert result["bad"] == 0
    assert result["retransmitted"] == 0, result
    assert result["server_retransmits"] == 0, result
    assert polling["mode"] == "adaptive"
    # it did switch, many times, both ways
    assert polling["sleeps"] >= 20, polling
    assert polling["wakeups"] >= polling["sleeps"] - 1, polling
    assert polling["polls"] > polling["batches"] - polling["wakeups"] > 0, polling
    assert polling["budget_us"] <= 2000


@pytest.mark.parametrize("poll", ["wakeup", "busy"])
def test_wakeup_and_busy_modes_count_what_they_do(topology: Topology, poll: str) -> None:
    result = serve_rounds(topology, poll, "uvloop")
    polling = result["polling"]
    assert result["bad"] == 0
    assert result["retransmitted"] == 0, result
    assert polling["mode"] == poll
    assert polling["sleeps"] == 0
    # every loop iteration the stack saw waited in the selector once, on top of the kicks
    assert polling["syscalls_per_1k_frames"] > polling["kicks_per_1k_frames"] > 0
    if poll == "wakeup":
        # every batch came from a wake-up: the loop never looked at the ring otherwise
        assert polling["polls"] == polling["empty_polls"] == 0
        assert polling["batches"] >= ROUNDS
    else:
        # the fd never entered the selector; the loop polled through every pause
        assert polling["wakeups"] == 0
        assert polling["polls"] > polling["empty_polls"] > 0
        assert polling["batches"] >= ROUNDS


def test_adaptive_with_sparse_traffic_stays_asleep(topology: Topology) -> None:
    """A budget shorter than every gap between batches: adaptive mode is wakeup mode,
    the fd never leaves the selector."""
    result = serve_rounds(topology, "adaptive", "uvloop", poll_budget_us=1)
    polling = result["polling"]
    assert result["bad"] == 0
    assert result["retransmitted"] == 0, result
    assert polling["budget_us"] == 0
    assert polling["asleep"]
    assert polling["polls"] <= 1, polling


class SlowEcho(Echo):
    """Answers 45 ms late: once the connection's quick ACKs are used up, the stack's 40 ms
    delayed ACK expires before every answer."""

    def data_received(self, data: bytes) -> None:
        asyncio.get_running_loop().call_later(0.045, self.transport.write, data)


@pytest.mark.parametrize("base", ["asyncio", "uvloop"])
def test_loop_timer_fires_only_when_something_is_due(topology: Topology, base: str) -> None:
    """The loop's clock must have reached the deadline its timer was armed for when the
    timer fires. uvloop's counts whole milliseconds and rounds delays: a timer armed at
    the deadline itself fired early, found nothing due and was armed again at once,
    dozens of times per expiry (stack.TIMER_SLACK)."""
    rounds = QUICKACK_SEGMENTS + 20

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(SlowEcho, topology.server_ip, PORT)
        async with server:
            _, out, _ = await peer_python(topology, CLIENT, topology.server_ip, str(PORT),
                                          str(rounds))
            assert int(out) == 0
            return loop.xdp_stack.stats()["polling"]  # type: ignore[attr-defined,no-any-return]

    polling = run_on_stack(topology, main, loop=base)
    assert polling["timers"] >= rounds - QUICKACK_SEGMENTS, polling  # the delayed ACKs
    assert polling["early_timers"] == 0, polling
