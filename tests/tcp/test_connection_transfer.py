"""Two Connections wired back to back through a simulated link."""

from __future__ import annotations

import random

import pytest

from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection, State
from aioxdp.tcp.events import (
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EndOfStream,
)

from .packetscript import LOCAL, REMOTE


class Pair:
    """Client and server joined by a link with a one-way ``delay``; the
    link drops a segment when ``drop(seg)`` says so. Time is a float clock."""

    def __init__(self, cfg: TcpConfig, *, delay: float = 0.001, drop=None,
                 client_iss: int = 1, server_iss: int = 2) -> None:
        self.now = 0.0
        self.delay = delay
        self.drop = drop or (lambda seg: False)
        self.client = Connection(local=REMOTE, remote=LOCAL, iss=client_iss, config=cfg, now=0.0)
        self.server = Connection(local=LOCAL, remote=REMOTE, iss=server_iss, config=cfg, now=0.0)
        self.in_flight: list[tuple[float, int, Connection, object]] = []
        self.received = {self.client: bytearray(), self.server: bytearray()}
        self.eof = {self.client: False, self.server: False}
        self.closed: dict[Connection, object] = {}
        self.established: set[Connection] = set()
        self.counter = 0
        self.segments = 0

    def pump(self, conn: Connection) -> None:
        peer = self.server if conn is self.client else self.client
        for seg in conn.segments_to_send(now=self.now):
            self.segments += 1
            if self.drop(seg):
                continue
            self.counter += 1
            self.in_flight.append((self.now + self.delay, self.counter, peer, seg))
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, DataReceived):
                self.received[conn] += ev.data
            elif isinstance(ev, EndOfStream):
                self.eof[conn] = True
            elif isinstance(ev, ConnectionClosed):
                self.closed[conn] = ev.error
            elif isinstance(ev, ConnectionEstablished):
                self.established.add(conn)

    def step(self) -> bool:
        for c in (self.client, self.server):
            self.pump(c)
        times = [t for t, *_ in self.in_flight]
        timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
        nxt = min(times + timers, default=None)
        if nxt is None:
            return False
        self.now = max(self.now, nxt)
        self.in_flight.sort(key=lambda x: (x[0], x[1]))
        while self.in_flight and self.in_flight[0][0] <= self.now:
            _, _, dst, seg = self.in_flight.pop(0)
            if seg.flags & 0x02 and dst.state is State.CLOSED:
                dst.accept_syn(seg, now=self.now)
            else:
                dst.receive(seg, now=self.now)
        for c in (self.client, self.server):
            t = c.get_timer()
            if t is not None and t <= self.now:
                c.handle_timer(now=self.now)
        return True

    def run(self, until, limit: int = 200000) -> None:
        for _ in range(limit):
            if until():
                return
            if not self.step():
                break
        assert until(), "condition not reached"


def _cfg(**kw) -> TcpConfig:
    base = dict(congestion="newreno")
    base.update(kw)
    return TcpConfig(**base)


@pytest.mark.parametrize("options", [
    {},
    {"window_scaling": False, "sack": False, "timestamps": False},
    {"congestion": "cubic"},
])
def test_one_megabyte_both_ways(options):
    p = Pair(_cfg(**options))
    p.client.connect(now=0.0)
    up = random.Random(1).randbytes(1 << 20)
    down = random.Random(2).randbytes(1 << 20)
    p.run(lambda: len(p.established) == 2)
    p.client.send(up)
    p.server.send(down)
    p.client.shutdown()
    p.server.shutdown()
    p.run(lambda: p.eof[p.client] and p.eof[p.server])
    assert bytes(p.received[p.server]) == up
    assert bytes(p.received[p.client]) == down
    p.run(lambda: len(p.closed) == 2)
    assert p.closed == {p.client: None, p.server: None}
    assert {p.client.state, p.server.state} <= {State.TIME_WAIT, State.CLOSED}


@pytest.mark.parametrize("sack", [True, False])
def test_transfer_over_lossy_link(sack):
    rng = random.Random(7)
    p = Pair(_cfg(sack=sack), drop=lambda seg: rng.random() < 0.03)
    p.client.connect(now=0.0)
    data = random.Random(3).randbytes(300_000)
    p.run(lambda: len(p.established) == 2)
    p.client.send(data)
    p.client.shutdown()
    p.run(lambda: p.eof[p.server])
    assert bytes(p.received[p.server]) == data


def test_simultaneous_open_and_close_back_to_back():
    p = Pair(_cfg())
    p.client.connect(now=0.0)
    p.server.connect(now=0.0)  # both SYNs cross on the link
    p.run(lambda: len(p.established) == 2)
    p.client.send(b"ping" * 1000)
    p.server.send(b"pong" * 1000)
    p.client.shutdown()
    p.server.shutdown()
    p.run(lambda: len(p.closed) == 2)
    assert bytes(p.received[p.server]) == b"ping" * 1000
    assert bytes(p.received[p.client]) == b"pong" * 1000
    assert p.closed == {p.client: None, p.server: None}


def test_slow_reader_back_to_back():
    # The receiver pauses reading: the window closes, the sender probes, and
    # resuming reopens the window; every byte arrives once, in order.
    p = Pair(_cfg(rcv_buf=20000))
    p.client.connect(now=0.0)
    p.run(lambda: len(p.established) == 2)
    data = random.Random(9).randbytes(200_000)
    p.client.send(data)
    p.client.shutdown()
    p.server.pause_reading()
    p.run(lambda: p.client.snd_wnd == 0)
    assert len(p.received[p.server]) == 0
    for _ in range(20):
        p.server.resume_reading()
        p.run(lambda: True, limit=1)
        p.run(lambda: p.client.snd_wnd == 0 or p.eof[p.server])
        p.server.pause_reading()
        p.pump(p.server)
    p.server.resume_reading()
    p.run(lambda: p.eof[p.server])
    assert bytes(p.received[p.server]) == data
