"""table.py: demultiplexing, listeners, SYN backlog and cookies, RSTs, limits, the timer
heap and port allocation, with real Connections under a fake clock."""

from __future__ import annotations

import errno
import random

import pytest

from aioxdp.tcp import cookies, wire
from aioxdp.tcp import seq as sq
from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection, State, receive_window_scale
from aioxdp.tcp.events import (
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EndOfStream,
    Event,
)
from aioxdp.tcp.segment import ACK, FIN, PSH, RST, SYN, URG, Segment
from aioxdp.tcp.table import ANY, ConnectionTable, Listener

SERVER = bytes([198, 18, 0, 1])
SERVER2 = bytes([198, 18, 0, 3])
CLIENT = bytes([198, 18, 0, 2])
PEER_ISS = 5000
INF = float("inf")
SECRET = b"0123456789abcdef0123456789abcdef"


def make_table(**cfg: object) -> ConnectionTable:
    return ConnectionTable(config=TcpConfig(**cfg), secret=SECRET, now=0.0)  # type: ignore[arg-type]


def seg(flags: int, seq: int = PEER_ISS, ack: int = 0, payload: bytes = b"", *,
        sport: int = 40000, dport: int = 80, src: bytes = CLIENT, dst: bytes = SERVER,
        **opts: object) -> Segment:
    """A segment from the peer (client) to us."""
    return Segment(src, dst, sport, dport, seq & sq.MASK, ack & sq.MASK, flags, 65535, payload,
                   **opts)  # type: ignore[arg-type]


def syn(sport: int = 40000, **opts: object) -> Segment:
    return seg(SYN, sport=sport, **opts)  # type: ignore[arg-type]


def events(table: ConnectionTable) -> list[Event]:
    out = []
    while (event := table.next_event()) is not None:
        out.append(event)
    return out


def handshake(table: ConnectionTable, sport: int = 40000, now: float = 0.0,
              dst: bytes = SERVER, **opts: object) -> Segment:
    """SYN in, SYN-ACK out, ACK in; returns the SYN-ACK."""
    table.receive(syn(sport, dst=dst, **opts), now=now)
    (synack,) = table.segments_to_send(now=now)
    assert synack.flags == SYN | ACK
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1, sport=sport, dst=dst), now=now)
    return synack


# --- listener accept flow and demultiplexing -----------------------------------------------------


def test_listener_accept_flow() -> None:
    table = make_table(window_scaling=True, sack=True, timestamps=True)
    listener = table.listen(SERVER, 80)
    table.receive(syn(mss=1400, wscale=7, sack_permitted=True, ts=(100, 0)), now=1.0)
    (synack,) = table.segments_to_send(now=1.0)
    assert (synack.src, synack.dst, synack.sport, synack.dport) == (SERVER, CLIENT, 80, 40000)
    assert synack.flags == SYN | ACK and synack.ack == PEER_ISS + 1
    assert synack.mss == 1460 and synack.sack_permitted and synack.ts is not None
    assert synack.ts[1] == 100
    # ISN from RFC 6528: clock + keyed hash of the tuple
    assert synack.seq == cookies.isn(cookies.derive_key(SECRET, b"aioxdp isn"), (SERVER, 80),
                                     (CLIENT, 40000), now=1.0)
    conn = table.connections[SERVER, 80, CLIENT, 40000]
    assert conn.state is State.SYN_RECEIVED and listener.syn_received == 1
    assert events(table) == []

    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1, ts=(101, synack.ts[0])), now=1.01)
    assert conn.state is State.ESTABLISHED and listener.syn_received == 0
    assert events(table) == [ConnectionEstablished(conn, listener)]

    table.receive(seg(ACK | PSH, PEER_ISS + 1, synack.seq + 1, b"hello", ts=(102, synack.ts[0])),
                  now=1.02)
    assert events(table) == [DataReceived(conn, b"hello")]


def test_specific_listener_preferred_over_wildcard() -> None:
    table = make_table()
    wildcard = table.listen(ANY, 80)
    specific = table.listen(SERVER, 80)
    handshake(table, 40000, dst=SERVER)
    handshake(table, 40001, dst=SERVER2)
    established = [e for e in events(table) if isinstance(e, ConnectionEstablished)]
    assert [(e.conn.local[0], e.listener) for e in established] == \
        [(SERVER, specific), (SERVER2, wildcard)]


def test_listen_twice_on_the_same_address_fails() -> None:
    table = make_table()
    table.listen(SERVER, 80)
    with pytest.raises(OSError) as info:
        table.listen(SERVER, 80)
    assert info.value.errno == errno.EADDRINUSE


def test_demultiplex_by_four_tuple() -> None:
    table = make_table()
    table.listen(ANY, 80)
    synacks = {port: handshake(table, port) for port in (40000, 40001)}
    events(table)
    for port in (40001, 40000):
        payload = f"to {port}".encode()
        table.receive(seg(ACK, PEER_ISS + 1, synacks[port].seq + 1, payload, sport=port),
                      now=0.1)
    got = [(e.conn.remote[1], e.data) for e in events(table) if isinstance(e, DataReceived)]
    assert got == [(40001, b"to 40001"), (40000, b"to 40000")]


def test_events_of_all_connections_share_one_queue_in_order() -> None:
    table = make_table()
    table.listen(ANY, 80)
    table.receive(syn(40000), now=0.0)
    table.receive(syn(40001), now=0.0)
    first, second = table.segments_to_send(now=0.0)
    table.receive(seg(ACK, PEER_ISS + 1, second.seq + 1, sport=40001), now=0.0)
    table.receive(seg(ACK, PEER_ISS + 1, first.seq + 1, sport=40000), now=0.0)
    assert [e.conn.remote[1] for e in events(table)] == [40001, 40000]


def test_syn_data_is_not_acknowledged() -> None:
    # TCP-CHECKLIST 19: SYN with data; the data is resent by the peer after the handshake
    table = make_table()
    table.listen(ANY, 80)
    table.receive(syn(payload=b"early"), now=0.0)
    (synack,) = table.segments_to_send(now=0.0)
    assert synack.ack == PEER_ISS + 1
    assert events(table) == []


# --- segments to nothing: RFC 9293 §3.10.7.1 -----------------------------------------------------


def test_rst_for_syn_to_closed_port() -> None:
    table = make_table()
    table.receive(syn(), now=0.0)
    (rst,) = table.segments_to_send(now=0.0)
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, PEER_ISS + 1)
    assert (rst.src, rst.dst, rst.sport, rst.dport) == (SERVER, CLIENT, 80, 40000)
    assert table.connections == {}


@pytest.mark.parametrize(("flags", "payload", "expected"), [
    (ACK, b"", (RST, 777, 0)),
    (ACK | PSH, b"data", (RST, 777, 0)),
    (ACK | FIN, b"", (RST, 777, 0)),
    (PSH, b"data", (RST | ACK, 0, PEER_ISS + 4)),
    (FIN, b"ab", (RST | ACK, 0, PEER_ISS + 3)),
    (0, b"", (RST | ACK, 0, PEER_ISS)),
])
def test_rst_for_segments_to_nothing(flags: int, payload: bytes,
                                     expected: tuple[int, int, int]) -> None:
    table = make_table()
    table.receive(seg(flags, PEER_ISS, 777, payload), now=0.0)
    (rst,) = table.segments_to_send(now=0.0)
    assert (rst.flags, rst.seq, rst.ack) == expected


def test_no_rst_for_rst() -> None:
    table = make_table()
    table.receive(seg(RST), now=0.0)
    table.receive(seg(RST | ACK, ack=9), now=0.0)
    assert table.segments_to_send(now=0.0) == []
    assert table.stats["rst-ignored"] == 2


def test_no_rst_to_martian_sources() -> None:
    table = make_table()
    for src in (bytes([224, 0, 0, 1]), bytes([255, 255, 255, 255]), bytes(4),
                bytes([127, 0, 0, 1])):
        table.receive(seg(SYN, src=src), now=0.0)
    assert table.segments_to_send(now=0.0) == []
    assert table.stats["martian-source"] == 4


def test_table_output_is_bounded() -> None:
    table = make_table()
    for i in range(5000):
        table.receive(seg(ACK, ack=i, sport=1 + i % 60000), now=0.0)
    assert len(table.segments_to_send(now=0.0)) == 4096
    assert table.stats["table-output-overflow"] == 5000 - 4096
    assert table.segments_to_send(now=0.0) == []


# --- LISTEN: odd flags (RFC 9293 §3.10.7.2, TCP-CHECKLIST 19) ------------------------------------


@pytest.mark.parametrize("flags", [0, FIN, SYN | FIN, SYN | RST, RST, URG, PSH, RST | ACK,
                                   SYN | FIN | PSH | URG])
def test_listen_drops_odd_flags(flags: int) -> None:
    table = make_table()
    table.listen(ANY, 80)
    table.receive(seg(flags, payload=b"x"), now=0.0)
    assert table.segments_to_send(now=0.0) == []
    assert table.connections == {}
    assert events(table) == []


@pytest.mark.parametrize("flags", [ACK, SYN | ACK, ACK | FIN, ACK | PSH])
def test_listen_answers_ack_with_rst(flags: int) -> None:
    table = make_table()
    table.listen(ANY, 80)
    table.receive(seg(flags, ack=0xFFFFFFFF, payload=b"x"), now=0.0)
    (rst,) = table.segments_to_send(now=0.0)
    assert (rst.flags, rst.seq) == (RST, 0xFFFFFFFF)
    assert table.connections == {}


# --- SYN backlog and cookies (TCP-CHECKLIST 23) --------------------------------------------------


def cookie_table(**cfg: object) -> tuple[ConnectionTable, Listener]:
    table = make_table(window_scaling=True, sack=True, timestamps=True, **cfg)
    listener = table.listen(ANY, 80, backlog=2)
    for port in (1, 2):
        table.receive(syn(port), now=0.0)
    assert len(table.segments_to_send(now=0.0)) == 2
    return table, listener


def test_backlog_overflow_answers_with_cookie_and_keeps_no_state() -> None:
    table, listener = cookie_table()
    table.receive(syn(40000, mss=1450, wscale=3, sack_permitted=True, ts=(7, 0)), now=0.5)
    (synack,) = table.segments_to_send(now=0.5)
    assert len(table.connections) == 2 and table.stats["syn-cookies-sent"] == 1
    assert synack.flags == SYN | ACK and synack.ack == PEER_ISS + 1
    assert synack.mss == 1460 and synack.sack_permitted
    assert synack.wscale == receive_window_scale(TcpConfig().rcv_buf)
    assert synack.ts is not None and synack.ts[1] == 7
    assert synack.ts[0] & 0x3F == 3 | 0x10  # wscale 3, SACK-permitted (Linux's layout)
    assert table.get_timer() is not None  # only the two real half-open connections' timers

    # the peer's ACK carries the cookie back: a connection with the SYN's options
    ack = seg(ACK, PEER_ISS + 1, synack.seq + 1, ts=(8, synack.ts[0]))
    table.receive(ack, now=0.6)
    conn = table.connections[SERVER, 80, CLIENT, 40000]
    assert conn.state is State.ESTABLISHED and table.stats["syn-cookies-validated"] == 1
    assert conn.mss == 1440  # msstab entry at or below the SYN's 1450
    assert conn.snd_wscale == 3
    assert [type(e) for e in events(table)] == [ConnectionEstablished]
    assert listener.syn_received == 2  # cookies never use backlog slots

    # SACK was recovered too: out-of-order data is answered with SACK blocks
    table.receive(seg(ACK, PEER_ISS + 101, synack.seq + 1, b"z" * 10, ts=(9, synack.ts[0])),
                  now=0.7)
    (dupack,) = table.segments_to_send(now=0.7)
    assert dupack.ack == PEER_ISS + 1 and dupack.sack == ((PEER_ISS + 101, PEER_ISS + 111),)


def test_cookie_without_timestamps_offers_and_recovers_only_mss() -> None:
    table, _ = cookie_table()
    table.receive(syn(40000, mss=1300, wscale=3, sack_permitted=True), now=0.5)
    (synack,) = table.segments_to_send(now=0.5)
    assert (synack.mss, synack.wscale, synack.sack_permitted, synack.ts) == \
        (1460, None, False, None)
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1), now=0.6)
    conn = table.connections[SERVER, 80, CLIENT, 40000]
    assert conn.state is State.ESTABLISHED
    assert (conn.mss, conn.snd_wscale) == (1300, 0)


def test_cookie_ack_with_data_delivers_it() -> None:
    table, _ = cookie_table()
    table.receive(syn(40000), now=0.5)
    (synack,) = table.segments_to_send(now=0.5)
    table.receive(seg(ACK | PSH, PEER_ISS + 1, synack.seq + 1, b"GET /"), now=0.6)
    assert [(type(e), getattr(e, "data", None)) for e in events(table)] == \
        [(ConnectionEstablished, None), (DataReceived, b"GET /")]


@pytest.mark.parametrize("delta", [0x1000, -0x1000, 1 << 30])
def test_invalid_cookie_ack_gets_rst_and_no_connection(delta: int) -> None:
    table, _ = cookie_table()
    table.receive(syn(40000), now=0.5)
    (synack,) = table.segments_to_send(now=0.5)
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1 + delta), now=0.6)
    (rst,) = table.segments_to_send(now=0.6)
    assert rst.flags == RST and rst.seq == (synack.seq + 1 + delta) & sq.MASK
    assert (SERVER, 80, CLIENT, 40000) not in table.connections
    assert table.stats["syn-cookies-failed"] == 1


def test_expired_cookie_rejected() -> None:
    table, _ = cookie_table()
    table.receive(syn(40000), now=0.5)
    (synack,) = table.segments_to_send(now=0.5)
    table.receive(seg(SYN, sport=40009), now=120.0)  # the listener is still under a flood
    table.segments_to_send(now=120.0)
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1), now=130.0)  # counter 0 -> 2
    assert (SERVER, 80, CLIENT, 40000) not in table.connections
    assert table.stats["syn-cookies-failed"] == 1


def test_ack_without_recent_cookies_is_not_checked() -> None:
    table = make_table()
    listener = table.listen(ANY, 80)
    cookie, _ = cookies.make_cookie(table.cookie_secrets, syn(), now=0.0)
    table.receive(seg(ACK, PEER_ISS + 1, cookie + 1), now=0.0)  # valid, but no flood: RST
    assert [s.flags for s in table.segments_to_send(now=0.0)] == [RST]
    assert table.connections == {} and listener.syn_received == 0
    assert table.stats["syn-cookies-failed"] == 0


def test_table_wide_syn_backlog() -> None:
    table = make_table(syn_backlog=3)
    table.listen(ANY, 80, backlog=100)
    table.listen(ANY, 81, backlog=100)
    for port in range(1, 5):
        table.receive(syn(port, dport=80 + port % 2), now=0.0)
    table.segments_to_send(now=0.0)
    assert len(table.connections) == 3 and table.stats["syn-cookies-sent"] == 1


def test_backlog_slot_freed_when_handshake_fails_and_failure_is_silent() -> None:
    table = make_table()
    listener = table.listen(ANY, 80, backlog=1)
    table.receive(syn(), now=0.0)
    (synack,) = table.segments_to_send(now=0.0)
    table.receive(seg(RST, PEER_ISS + 1), now=0.1)
    assert listener.syn_received == 0
    assert table.segments_to_send(now=0.1) == []
    assert table.connections == {}
    assert events(table) == []  # the application never heard of it
    handshake(table, 40001, now=0.2)  # the slot is free again: no cookie
    assert table.stats["syn-cookies-sent"] == 0


def test_syn_received_times_out_and_frees_its_slot() -> None:
    table = make_table(syn_retries=1)
    listener = table.listen(ANY, 80, backlog=1)
    table.receive(syn(), now=0.0)
    sent = table.segments_to_send(now=0.0)
    while (deadline := table.get_timer()) is not None:
        table.handle_timer(now=deadline)
        sent += table.segments_to_send(now=deadline)
    assert [s.flags for s in sent] == [SYN | ACK, SYN | ACK]  # one retry, then give up
    assert table.connections == {} and listener.syn_received == 0
    assert events(table) == []


def test_close_listener_resets_half_open_connections() -> None:
    table = make_table()
    listener = table.listen(ANY, 80)
    table.receive(syn(), now=0.0)
    table.segments_to_send(now=0.0)
    table.close_listener(listener)
    (rst,) = table.segments_to_send(now=0.0)
    assert rst.flags & RST and table.connections == {} and events(table) == []
    table.receive(syn(40001), now=0.1)
    assert [s.flags for s in table.segments_to_send(now=0.1)] == [RST | ACK]


# --- limits (TCP-CHECKLIST 24) -------------------------------------------------------------------


def test_max_connections() -> None:
    table = make_table(max_connections=2)
    table.listen(ANY, 80)
    for port in (1, 2, 3):
        table.receive(syn(port), now=0.0)
    assert len(table.segments_to_send(now=0.0)) == 2  # the third SYN dropped, no state
    assert len(table.connections) == 2 and table.stats["max-connections"] == 1
    with pytest.raises(OSError) as info:
        table.connect((SERVER, 0), (CLIENT, 443), now=0.0)
    assert info.value.errno == errno.ENOBUFS


def test_max_connections_applies_to_cookie_acks() -> None:
    table, _ = cookie_table(max_connections=3)
    table.receive(syn(40000), now=0.5)
    table.receive(syn(40001), now=0.5)  # through cookies: no connection yet
    first, second = table.segments_to_send(now=0.5)
    table.receive(seg(ACK, PEER_ISS + 1, first.seq + 1, sport=40000), now=0.6)
    table.receive(seg(ACK, PEER_ISS + 1, second.seq + 1, sport=40001), now=0.6)
    assert len(table.connections) == 3 and table.stats["max-connections"] == 1


# --- active opens, output gathering, removal -----------------------------------------------------


def test_connect_through_the_table() -> None:
    table = make_table()
    conn = table.connect((SERVER, 0), (CLIENT, 8080), now=0.0)
    (syn_out,) = table.segments_to_send(now=0.0)
    assert syn_out.flags == SYN and syn_out.dport == 8080
    assert 61000 <= syn_out.sport <= 65535 and conn.local == (SERVER, syn_out.sport)
    table.receive(Segment(CLIENT, SERVER, 8080, syn_out.sport, 9000, syn_out.seq + 1,
                          SYN | ACK, 65535, mss=1460), now=0.05)
    assert events(table) == [ConnectionEstablished(conn, None)]
    (ack,) = table.segments_to_send(now=0.05)
    assert ack.flags == ACK and ack.ack == 9001
    with pytest.raises(OSError):
        table.connect(conn.local, conn.remote, now=0.1)


def test_refused_connect_reports_its_error() -> None:
    table = make_table()
    conn = table.connect((SERVER, 0), (CLIENT, 8080), now=0.0)
    (syn_out,) = table.segments_to_send(now=0.0)
    table.receive(Segment(CLIENT, SERVER, 8080, syn_out.sport, 0, syn_out.seq + 1, RST | ACK, 0),
                  now=0.01)
    (closed,) = events(table)
    assert isinstance(closed, ConnectionClosed) and closed.conn is conn
    assert isinstance(closed.error, ConnectionRefusedError)
    table.segments_to_send(now=0.01)
    assert table.connections == {}


def established(table: ConnectionTable, n: int) -> list[tuple[Connection, Segment]]:
    table.listen(ANY, 80)
    pairs = []
    for i in range(n):
        synack = handshake(table, 40000 + i)
        pairs.append((table.connections[SERVER, 80, CLIENT, 40000 + i], synack))
    table.segments_to_send(now=0.0)
    events(table)
    return pairs


def test_output_gathered_only_from_dirty_connections() -> None:
    table = make_table()
    conns = established(table, 50)
    conn, _ = conns[17]
    conn.send(b"only me")
    (out,) = table.segments_to_send(now=0.1)
    assert out.payload == b"only me" and out.dport == 40017
    assert table.segments_to_send(now=0.1) == []


def test_abort_sends_rst_and_removes_the_connection() -> None:
    table = make_table()
    [(conn, _)] = established(table, 1)
    conn.abort()
    (rst,) = table.segments_to_send(now=0.2)
    assert rst.flags & RST
    assert table.connections == {}
    assert [type(e) for e in events(table)] == [ConnectionClosed]
    table.receive(seg(ACK, PEER_ISS + 1, 1), now=0.3)  # the tuple is gone: RST again
    assert [s.flags for s in table.segments_to_send(now=0.3)] == [RST]


def to_time_wait(table: ConnectionTable) -> tuple[Connection, Segment]:
    [(conn, synack)] = established(table, 1)
    conn.close()
    (fin,) = table.segments_to_send(now=1.0)
    assert fin.flags & FIN
    table.receive(seg(ACK | FIN, PEER_ISS + 1, fin.seq + 1), now=1.1)
    table.segments_to_send(now=1.1)
    assert conn.state is State.TIME_WAIT
    return conn, fin


def test_time_wait_reused_by_a_new_syn() -> None:
    table = make_table()
    old, fin = to_time_wait(table)
    events(table)
    table.receive(syn(seq=PEER_ISS + 100_000), now=2.0)
    new = table.connections[SERVER, 80, CLIENT, 40000]
    assert new is not old and new.state is State.SYN_RECEIVED
    (synack,) = table.segments_to_send(now=2.0)
    assert synack.flags == SYN | ACK
    assert synack.seq == (fin.seq + 1 + 65537) & sq.MASK  # Linux: old SND.NXT + 65537
    assert table.stats["time-wait-reused"] == 1


def test_time_wait_keeps_an_old_syn_out() -> None:
    table = make_table()
    old, _ = to_time_wait(table)
    table.receive(syn(seq=PEER_ISS - 100_000), now=2.0)
    assert table.connections[SERVER, 80, CLIENT, 40000] is old
    assert old.state is State.TIME_WAIT
    assert all(not s.flags & SYN for s in table.segments_to_send(now=2.0))


def test_time_wait_expires_and_leaves_the_table() -> None:
    table = make_table(msl=1.0)
    to_time_wait(table)
    deadline = table.get_timer()
    assert deadline is not None and deadline == pytest.approx(1.1 + 2.0)
    table.handle_timer(now=deadline)
    table.segments_to_send(now=deadline)
    assert table.connections == {} and table.get_timer() is None


# --- the timer heap ------------------------------------------------------------------------------


def test_timer_heap_tracks_every_connection() -> None:
    rng = random.Random(7)
    table = make_table(rto_initial=1.0, syn_retries=3)
    remote = (CLIENT, 9)
    now = 0.0
    for _ in range(300):
        now += rng.random() * 0.01
        table.connect((SERVER, 0), remote, now=now)
    table.segments_to_send(now=now)
    fired = 0
    while True:
        live = [c.get_timer() for c in table.connections.values()]
        expected = min((t for t in live if t is not None), default=None)
        bound = table.get_timer_bound()
        assert table.get_timer() == expected
        assert bound is None if expected is None else bound is not None and bound <= expected
        if expected is None:
            break
        # abort a few at random: their heap entries go stale
        for conn in rng.sample(list(table.connections.values()),
                               min(3, len(table.connections))):
            if rng.random() < 0.2:
                conn.abort()
        now = max(now, table.get_timer() or now)
        due = [c for c in table.connections.values() if (c.get_timer() or INF) <= now]
        table.handle_timer(now=now)
        fired += len(due)
        for conn in due:
            assert (conn.get_timer() or INF) > now
        table.segments_to_send(now=now)
        assert len(table._heap) <= 2 * len(table._deadlines) + 64
    assert table.connections == {} and fired >= 300
    closed = [e for e in events(table) if isinstance(e, ConnectionClosed)]
    assert len(closed) == 300


def test_timer_of_a_connection_moved_by_the_application() -> None:
    table = make_table()
    [(conn, _)] = established(table, 1)
    assert table.get_timer() is None
    conn.send(b"x")
    table.segments_to_send(now=0.5)
    rto = table.get_timer()
    assert rto is not None and rto > 0.5
    table.receive(seg(ACK, PEER_ISS + 1, conn.snd_nxt), now=0.6)
    assert table.get_timer() is None  # acked: the stale RTO entry is skipped


def test_busy_connection_keeps_an_early_timer_entry() -> None:
    """A deadline that moves later leaves the heap alone: the bound fires early,
    finds nothing due and is filed anew; get_timer stays exact throughout."""
    table = make_table()
    [(conn, _)] = established(table, 1)
    conn.send(b"x")
    table.segments_to_send(now=0.5)
    first = table.get_timer_bound()
    assert first is not None and first == table.get_timer() == conn.get_timer()
    pushes = len(table._heap)
    conn.send(b"y")
    table.receive(seg(ACK, PEER_ISS + 1, conn.snd_nxt), now=0.6)  # acks "x": the RTO restarts
    table.segments_to_send(now=0.6)
    later = conn.get_timer()
    assert later is not None and later > first
    assert len(table._heap) == pushes and table.get_timer_bound() == first
    table.handle_timer(now=first)  # early: nothing fires, nothing is sent
    assert table.segments_to_send(now=first) == [] and conn.retransmits == 0
    assert table.get_timer_bound() == table.get_timer() == later


# --- port allocation -----------------------------------------------------------------------------


def test_allocate_port_in_range_deterministic_from_secret() -> None:
    ports = [make_table().allocate_port(SERVER, (CLIENT, 80)) for _ in range(2)]
    assert ports[0] == ports[1] and 61000 <= ports[0] <= 65535
    other = ConnectionTable(config=TcpConfig(), secret=b"another", now=0.0)
    starts = {other.allocate_port(SERVER, (CLIENT, p)) for p in range(20)}
    assert len(starts) > 10  # destinations start at scattered points


def test_allocate_port_skips_used_tuples_and_listening_ports() -> None:
    table = ConnectionTable(config=TcpConfig(), secret=SECRET, now=0.0,
                            port_range=(61000, 61004))
    table.listen(ANY, 61002)
    got = {table.connect((SERVER, 0), (CLIENT, 80), now=0.0).local[1] for _ in range(4)}
    assert got == {61000, 61001, 61003, 61004}
    with pytest.raises(OSError) as info:
        table.connect((SERVER, 0), (CLIENT, 80), now=0.0)
    assert info.value.errno == errno.EADDRNOTAVAIL
    # the same ports serve another destination
    assert table.allocate_port(SERVER, (CLIENT, 81)) in {61000, 61001, 61003, 61004}


def test_bad_port_range_rejected() -> None:
    with pytest.raises(ValueError):
        ConnectionTable(config=TcpConfig(), secret=SECRET, now=0.0, port_range=(0, 10))


def test_connection_states_counts() -> None:
    table = make_table()
    established(table, 3)
    table.receive(syn(50000), now=1.0)
    assert table.connection_states() == {"ESTABLISHED": 3, "SYN_RECEIVED": 1}


# --- two tables through wire.py ------------------------------------------------------------------


def exchange(a: ConnectionTable, b: ConnectionTable, now: float) -> int:
    """Move every pending segment between the tables as Ethernet frames; returns how many."""
    moved = 0
    for src, dst in ((a, b), (b, a), (a, b), (b, a)):
        for out in src.segments_to_send(now=now):
            frame = wire.build_frame(out, src_mac=b"\x02" * 6, dst_mac=b"\x04" * 6)
            parsed = wire.parse_frame(frame)
            assert parsed is not None
            dst.receive(parsed, now=now)
            moved += 1
    return moved


@pytest.mark.parametrize("size", [64, 1000])
def test_request_response_takes_the_fast_path(size: int) -> None:
    """Requests and responses between two tables (each window shrinking by every request
    until its right edge moves) are taken by header prediction once established: only
    the handshake goes through the general path."""
    server = ConnectionTable(config=TcpConfig(), secret=b"server", now=0.0)
    client = ConnectionTable(config=TcpConfig(), secret=b"client", now=0.0)
    server.listen(ANY, 80)
    conn = client.connect((CLIENT, 0), (SERVER, 80), now=0.0)
    now = 0.0
    exchange(client, server, now)
    events(client)
    (accepted,) = events(server)
    assert isinstance(accepted, ConnectionEstablished)
    handshake_paths = (client.receive_paths(), server.receive_paths())
    for _ in range(300):
        now += 0.0001
        conn.send(bytes(size))
        exchange(client, server, now)
        (request,) = events(server)
        assert isinstance(request, DataReceived) and len(request.data) == size
        accepted.conn.send(request.data)
        exchange(client, server, now)
        (response,) = events(client)
        assert isinstance(response, DataReceived) and len(response.data) == size
    for table, before in zip((client, server), handshake_paths, strict=True):
        paths = table.receive_paths()
        assert paths["slow"] == before["slow"], paths
        assert paths["fast"] - before["fast"] >= 300


@pytest.mark.parametrize("through_cookie", [False, True])
def test_two_tables_talk_through_wire(through_cookie: bool) -> None:
    server = ConnectionTable(config=TcpConfig(), secret=b"server", now=0.0)
    client = ConnectionTable(config=TcpConfig(), secret=b"client", now=0.0)
    listener = server.listen(ANY, 80, backlog=1)
    if through_cookie:  # a half-open handshake from elsewhere fills the backlog
        server.receive(syn(1, src=SERVER2), now=0.0)
        server.segments_to_send(now=0.0)
    conn = client.connect((CLIENT, 0), (SERVER, 80), now=0.0)
    exchange(client, server, 0.0)
    assert server.stats["syn-cookies-validated"] == int(through_cookie)
    assert events(client) == [ConnectionEstablished(conn, None)]
    (accepted,) = events(server)
    assert isinstance(accepted, ConnectionEstablished) and accepted.listener is listener
    peer = accepted.conn
    assert (peer.snd_wscale, conn.snd_wscale) == (conn.rcv_wscale, peer.rcv_wscale)

    conn.send(b"ping" * 1000)
    now = 0.0
    received = b""
    while len(received) < 4000:
        now += 0.001
        exchange(client, server, now)
        received += b"".join(e.data for e in events(server) if isinstance(e, DataReceived))
    assert received == b"ping" * 1000
    conn.shutdown()  # half-close; the server still answers
    exchange(client, server, now)
    assert [type(e) for e in events(server)] == [EndOfStream]
    peer.send(b"pong")
    peer.close()
    exchange(client, server, now)
    assert [(type(e), getattr(e, "data", None)) for e in events(client)] == \
        [(DataReceived, b"pong"), (EndOfStream, None), (ConnectionClosed, None)]
    exchange(client, server, now)  # the client's last ACK
    assert [type(e) for e in events(server)] == [ConnectionClosed]
    assert conn.state is State.TIME_WAIT and peer.state is State.CLOSED
    assert peer not in server.connections.values()
    assert list(client.connections.values()) == [conn]  # lingering in TIME-WAIT


def test_recovery_stats_keep_closed_connections_counts() -> None:
    """Totals survive the connection: a connection that timed out and was
    removed still counts in recovery_stats()."""
    cfg = TcpConfig(max_retransmits=2, rto_min=0.2, rto_initial=0.2)
    table = ConnectionTable(config=cfg, secret=b"k" * 32, now=0.0)
    conn = table.connect((bytes([198, 18, 0, 1]), 0), (bytes([198, 18, 0, 2]), 80), now=0.0)
    table.segments_to_send(now=0.0)
    assert table.recovery_stats()["timeouts"] == 0
    now = 0.0
    while conn.state.name != "CLOSED" and now < 120:
        now = table.get_timer() or now + 1
        table.handle_timer(now=now)
        table.segments_to_send(now=now)
    assert conn.state.name == "CLOSED"
    assert table.connections == {}
    stats = table.recovery_stats()
    assert stats["timeouts"] == conn.timeouts >= 2
    assert stats["retransmits"] == conn.retransmits >= 2
    assert stats["srtt_median"] is None


# --- ICMP errors (TCP-CHECKLIST 21, RFC 5927) ----------------------------------------------------

def sending_connection(table: ConnectionTable, data: bytes = b"x" * 6000) -> tuple[Connection,
                                                                                  list[Segment]]:
    """An established connection (peer MSS 1460) with ``data`` in flight."""
    table.listen(SERVER, 80)
    handshake(table, mss=1460)
    conn = table.connections[(SERVER, 80, CLIENT, 40000)]
    events(table)
    conn.send(data)
    return conn, table.segments_to_send(now=0.01)


def icmp(seq: int, kind: str = "frag-needed", mtu: int | None = 1280,
         sport: int = 40000) -> wire.IcmpError:
    return wire.IcmpError(SERVER, 80, CLIENT, sport, seq & sq.MASK, kind, mtu)


def test_icmp_fragmentation_needed_lowers_the_mss_and_resends() -> None:
    table = make_table()
    conn, sent = sending_connection(table)
    assert conn.mss == 1460 and max(len(s.payload) for s in sent) == 1460
    table.receive_icmp(icmp(sent[1].seq), now=0.02)  # RFC 1191: 1280 - 40 bytes of headers
    assert conn.mss == 1240 and table.stats["icmp-path-mtu"] == 1
    resent = table.segments_to_send(now=0.02)
    assert resent[0].seq == sent[0].seq  # from SND.UNA, in segments that fit
    assert max(len(s.payload) for s in resent) == 1240
    assert conn.state is State.ESTABLISHED


def test_icmp_error_quoting_a_sequence_number_not_in_flight_is_ignored() -> None:
    table = make_table()
    conn, sent = sending_connection(table)
    end = sent[-1].seq + len(sent[-1].payload)
    for seq in (end, end + 100_000, sent[0].seq - 1):  # not sent yet / never / acknowledged
        table.receive_icmp(icmp(seq, mtu=600), now=0.02)
        table.receive_icmp(icmp(seq, "unreachable", None), now=0.02)
    assert table.stats["icmp-not-in-flight"] == 6
    assert conn.mss == 1460 and table.segments_to_send(now=0.02) == []


def test_icmp_error_for_no_connection_is_counted() -> None:
    table = make_table()
    _conn, sent = sending_connection(table)
    table.receive_icmp(icmp(sent[0].seq, sport=40001), now=0.02)
    assert table.stats["icmp-no-connection"] == 1


@pytest.mark.parametrize(("local", "remote", "mtu", "mss"), [
    (SERVER, CLIENT, 68, 536),  # RFC 791's minimum: clamped to 576 - 40
    (SERVER, CLIENT, 0, 536),  # no MTU (pre-RFC 1191 router)
    (bytes(15) + b"\x01", bytes(15) + b"\x02", 1000, 1220),  # IPv6: never below 1280 - 60
])
def test_icmp_path_mtu_is_clamped_to_a_floor(local: bytes, remote: bytes, mtu: int,
                                             mss: int) -> None:
    table = make_table()
    table.listen(ANY, 80)
    table.receive(seg(SYN, src=remote, dst=local, mss=1460), now=0.0)
    (synack,) = table.segments_to_send(now=0.0)
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1, src=remote, dst=local), now=0.0)
    conn = table.connections[(local, 80, remote, 40000)]
    conn.send(b"y" * 3000)
    sent = table.segments_to_send(now=0.01)
    kind = "packet-too-big" if len(local) == 16 else "frag-needed"
    table.receive_icmp(wire.IcmpError(local, 80, remote, 40000, sent[0].seq, kind, mtu), now=0.02)
    assert conn.mss == mss
    assert table.stats["icmp-mtu-clamped"] == 1 and table.stats["icmp-path-mtu"] == 1


def test_icmp_unreachable_is_a_soft_error() -> None:
    """RFC 1122 §4.2.3.9: a destination unreachable does not abort a connection."""
    table = make_table()
    conn, sent = sending_connection(table)
    table.receive_icmp(icmp(sent[0].seq, "unreachable", None), now=0.02)
    table.receive_icmp(icmp(sent[0].seq, "time-exceeded", None), now=0.02)
    assert table.stats["icmp-soft-error"] == 2
    assert conn.state is State.ESTABLISHED and conn.mss == 1460
    assert [type(e) for e in events(table)] == []


def test_a_lower_link_mtu_lowers_every_connection_in_flight_or_idle() -> None:
    """The interface's own MTU going down (the stack reads it through netlink) takes the
    path-MTU way of an ICMP "packet too big", for idle connections too (no sequence
    number to quote): what is in flight is resent in segments that fit."""
    table = make_table()
    conn, sent = sending_connection(table)
    assert table.link_mtu(1500) == 0 and conn.mss == 1460  # not lower: nothing to do
    assert table.link_mtu(1280) == 1 and table.stats["link-mtu-lowered"] == 1
    assert conn.mss == 1240
    resent = table.segments_to_send(now=0.02)
    assert resent[0].seq == sent[0].seq
    assert max(len(s.payload) for s in resent) == 1240
    assert table.link_mtu(1280) == 0  # already there
    end = resent[-1].seq + len(resent[-1].payload)
    table.receive(seg(ACK, PEER_ISS + 1, end), now=0.03)  # all acknowledged: idle
    assert table.segments_to_send(now=0.03) == []
    assert table.link_mtu(1000) == 1 and conn.mss == 960
    assert table.segments_to_send(now=0.04) == []  # nothing to resend


# --- flow changes for the XDP program's `flows` map ---------------------------------------------

KEY = (SERVER, 80, CLIENT, 40000)


def test_connections_are_recorded_as_flow_changes_until_taken() -> None:
    table = make_table()
    table.track_flows = True
    table.listen(ANY, 80)
    table.receive(syn(), now=0.0)
    # recorded on creation: before the SYN-ACK is even gathered
    assert table.take_flow_changes() == ([KEY], [])
    assert table.take_flow_changes() == ([], [])
    table.segments_to_send(now=0.0)
    table.connections[KEY].abort()
    table.segments_to_send(now=0.1)
    assert KEY not in table.connections
    assert table.take_flow_changes() == ([], [KEY])


def test_a_cookie_connection_and_an_active_open_are_recorded() -> None:
    table, _ = cookie_table()
    table.track_flows = True
    table.take_flow_changes()
    table.receive(syn(40000), now=0.5)  # over the backlog: a cookie, no state, nothing recorded
    (synack,) = table.segments_to_send(now=0.5)
    assert table.take_flow_changes() == ([], [])
    table.receive(seg(ACK, PEER_ISS + 1, synack.seq + 1), now=0.6)
    assert table.take_flow_changes() == ([KEY], [])
    # an active open: recorded before its SYN is gathered, so XDP knows its SYN-ACK
    conn = table.connect((SERVER, 0), (CLIENT, 8080), now=0.7)
    key = (SERVER, conn.local[1], CLIENT, 8080)
    assert table.take_flow_changes() == ([key], [])
    conn.abort()
    table.segments_to_send(now=0.8)
    assert table.take_flow_changes() == ([], [key])


def test_the_last_flow_change_of_a_tuple_wins() -> None:
    table = make_table()
    table.track_flows = True
    old, _ = to_time_wait(table)
    table.take_flow_changes()
    table.receive(syn(seq=PEER_ISS + 100_000), now=2.0)  # the TIME-WAIT tuple reused
    assert table.take_flow_changes() == ([KEY], [])  # removed, then added: present
    table.connections[KEY].abort()
    table.receive(syn(40001), now=2.1)
    table.segments_to_send(now=2.1)
    table.connections[SERVER, 80, CLIENT, 40001].abort()
    table.segments_to_send(now=2.2)
    # one gone, one added and gone before anyone looked: both to remove
    added, removed = table.take_flow_changes()
    assert added == [] and sorted(removed) == [KEY, (SERVER, 80, CLIENT, 40001)]


def test_flow_changes_are_not_recorded_unless_asked_for() -> None:
    table = make_table()
    established(table, 3)
    assert table.take_flow_changes() == ([], [])


def test_ipv6_cookie_syn_ack_announces_20_bytes_less() -> None:
    """A cookie SYN-ACK over IPv6 announces the MTU less 60, as the table's other
    SYN-ACKs do (options.local_mss); the XDP program's cookie SYN-ACKs do the same."""
    server6, client6 = bytes.fromhex("2001000200" + "00" * 10 + "01"), \
        bytes.fromhex("2001000200" + "00" * 10 + "02")
    table = make_table(mss=1460)
    table.listen(ANY, 80, backlog=1)
    for port in (40000, 40001):  # the second finds the backlog full: a cookie
        table.receive(syn(port, src=client6, dst=server6, mss=1460), now=0.0)
    synacks = sorted(table.segments_to_send(now=0.0), key=lambda s: s.dport)
    assert table.stats["syn-cookies-sent"] == 1
    assert [(s.flags, s.dport, s.mss) for s in synacks] == \
        [(SYN | ACK, 40000, 1440), (SYN | ACK, 40001, 1440)]
