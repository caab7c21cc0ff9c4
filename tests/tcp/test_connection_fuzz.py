"""Arbitrary segments, application calls and timer firings in any order:
the connection must never raise, and its invariants must hold after every
step (sequence space order, bounded buffers, one ConnectionClosed)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioxdp.tcp import seq as sq
from aioxdp.tcp.connection import State
from aioxdp.tcp.events import ConnectionClosed

from .packetscript import ISS, PEER_ISS, S, config, passive

P = PEER_ISS + 1
U = ISS + 1

flags = st.sampled_from(["", ".", "P.", "F.", "FP.", "S", "S.", "R", "R.", "SF", "SR", "U.", "F"])
offsets = st.integers(-70000, 70000)
segments = st.builds(
    lambda f, ds, da, n, win, sack, ts: S(f, seq=P + ds, ack=U + da, len=n, win=win,
                                          sack=sack, ts=ts),
    flags, offsets, st.integers(-3000, 3000), st.integers(0, 1500), st.integers(0, 65535),
    st.lists(st.tuples(st.integers(U - 5000, U + 50000), st.integers(U - 5000, U + 50000)),
             max_size=5).map(tuple),
    st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
actions = st.one_of(
    segments.map(lambda s: ("<", s)),
    st.sampled_from(["send", "shutdown", "close", "abort", "pause", "resume", "timer"])
    .map(lambda a: (a, None)),
)


def check(conn) -> None:
    assert sq.le(conn.snd_una, conn.snd_max)
    assert sq.le(conn.snd_nxt, conn.snd_max)
    assert sq.le(conn.snd_una, conn.snd_nxt) or conn.state is State.CLOSED
    assert conn._ooo.held_bytes <= conn.config.rcv_buf
    assert len(conn._ooo) <= conn.config.max_ooo_segments
    assert len(conn._held) <= conn.config.rcv_buf + (1 << conn.rcv_wscale)
    # The fast path is never taken while reassembly, pausing or close needs the slow one.
    assert conn._rx_slow or not (conn._ooo or conn._ooo_fin is not None or conn._paused
                                 or conn._app_closed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=40), st.booleans())
def test_random_input_never_breaks_invariants(steps, options):
    cfg = config(sack=options, timestamps=options, window_scaling=options, rcv_buf=20000,
                 max_ooo_segments=16)
    syn = S("S", seq=PEER_ISS, mss=1000, sack_permitted=True, wscale=2, ts=(5, 0))
    s = passive(cfg, syn=syn)
    t = 0.0
    for action, arg in steps:
        t += 0.05
        s.advance(t)
        if action == "<":
            s.inject(arg)
        elif action == "timer":
            deadline = s.conn.get_timer()
            if deadline is not None:
                t = max(t, deadline)
                s.advance(t)
        elif action == "send":
            if s.conn._fin_seq is None and s.conn.state not in (State.CLOSED, State.TIME_WAIT):
                s.conn.send(b"d" * 3000)
        elif action in ("pause", "resume"):
            getattr(s.conn, action + "_reading")()
        else:
            getattr(s.conn, action)()
        s.flush()
        check(s.conn)
        for _, seg in s.outbox:
            assert len(seg.payload) <= 1000
            assert len(seg.sack) <= (3 if seg.ts is not None else 4)
        s.outbox.clear()
    closed = [ev for ev in s.events() if isinstance(ev, ConnectionClosed)]
    assert len(closed) <= 1
