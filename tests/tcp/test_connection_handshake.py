"""Opening a connection: RFC 9293 §3.5, §3.10.7.2-3, and SYN cookies."""

from __future__ import annotations

from aioxdp.tcp.connection import State
from aioxdp.tcp.events import ConnectionClosed, ConnectionEstablished, DataReceived, EndOfStream

from .packetscript import (
    ISS,
    LOCAL6,
    PEER_ISS,
    REMOTE6,
    S,
    Script,
    active,
    config,
    passive,
)

P = PEER_ISS
U = ISS


def test_passive_open():
    s = Script(listener="L")
    s.conn.accept_syn(S("S", seq=P, mss=1460).segment(), now=0.0)
    s.run([
        (0.0, "state", State.SYN_RECEIVED),
        (0.0, ">", S("S.", seq=U, ack=P + 1, mss=1460, wscale=None, sack_permitted=False, ts=None)),
        (0.0, "event", None),
        (0.01, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.01, "state", State.ESTABLISHED),
        (0.01, "event", ConnectionEstablished, {"listener": "L"}),
        (0.01, ">", None),
    ])


def test_active_open_offers_all_configured_options():
    s = Script(config(window_scaling=True, sack=True, timestamps=True, rcv_buf=1 << 20))
    s.run([
        (0.0, "connect"),
        (0.0, ">", S("S", seq=U, ack=0, mss=1460, wscale=5, sack_permitted=True, win=65535)),
        (0.0, "state", State.SYN_SENT),
    ])
    assert s.sent[0].ts is not None and s.sent[0].ts[1] == 0


def test_active_open_completes_on_syn_ack():
    s = Script()
    s.run([
        (0.0, "connect"),
        (0.0, ">", S("S", seq=U)),
        (0.05, "<", S("S.", seq=P, ack=U + 1, mss=1000)),
        (0.05, ">", S(".", seq=U + 1, ack=P + 1)),
        (0.05, "state", State.ESTABLISHED),
        (0.05, "event", ConnectionEstablished, {"listener": None}),
    ])
    assert s.conn.mss == 1000
    # The SYN was sent once, so its RTT is a valid sample (RFC 6298, Karn).
    assert s.conn._rtt.srtt == 0.05


def test_simultaneous_open():
    s = Script()
    s.run([
        (0.0, "connect"),
        (0.0, ">", S("S", seq=U)),
        (0.01, "<", S("S", seq=P, mss=1460)),
        (0.01, "state", State.SYN_RECEIVED),
        (0.01, ">", S("S.", seq=U, ack=P + 1)),
        # The peer's SYN-ACK repeats its SYN, which lies before RCV.NXT: it is
        # unacceptable and draws an ACK (RFC 9293 §3.10.7.4), the peer does
        # the same with ours, and that ACK completes the handshake.
        (0.02, "<", S("S.", seq=P, ack=U + 1)),
        (0.02, ">", S(".", seq=U + 1, ack=P + 1)),
        (0.02, "state", State.SYN_RECEIVED),
        (0.03, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.03, "state", State.ESTABLISHED),
        (0.03, "event", ConnectionEstablished),
    ])


def test_simultaneous_open_completed_by_plain_ack():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S", seq=U)),
        (0.01, "<", S("S", seq=P, mss=1460)),
        (0.01, ">", S("S.", seq=U, ack=P + 1)),
        (0.02, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.02, "state", State.ESTABLISHED),
    ])


def test_syn_retransmitted_with_exponential_backoff():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S", seq=U)),
        (0.99, ">", None),
        (1.0, ">", S("S", seq=U)),
        (2.99, ">", None),
        (3.0, ">", S("S", seq=U)),
        (6.99, ">", None),
        (7.0, ">", S("S", seq=U)),
    ])


def test_syn_retries_bounded_then_timeout():
    s = Script(config(syn_retries=2))
    s.run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (1.0, ">", S("S")),
        (3.0, ">", S("S")),
        (7.0, ">", None),
        (7.0, "state", State.CLOSED),
        (7.0, "event", ConnectionClosed, {"error": TimeoutError}),
    ])
    assert s.conn.get_timer() is None


def test_retransmitted_syn_not_rtt_sampled():
    s = Script()
    s.run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (1.0, ">", S("S")),
        (1.1, "<", S("S.", seq=P, ack=U + 1)),
        (1.1, "state", State.ESTABLISHED),
    ])
    assert s.conn._rtt.srtt is None  # Karn's rule: which SYN did it answer?


def test_syn_ack_retransmitted_and_bounded():
    s = Script(config(syn_retries=1))
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.", seq=U, ack=P + 1)),
        (1.0, ">", S("S.", seq=U, ack=P + 1)),
        (3.0, "state", State.CLOSED),
        (3.0, "event", ConnectionClosed, {"error": TimeoutError}),
    ])


def test_duplicate_syn_in_syn_received_resends_syn_ack():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.", seq=U, ack=P + 1)),
        (0.5, "<", S("S", seq=P)),
        (0.5, ">", S("S.", seq=U, ack=P + 1)),
        (0.5, "state", State.SYN_RECEIVED),
    ])


def test_syn_sent_ignores_bare_rst():
    # TCP-CHECKLIST 7: a RST without an ACK of our SYN is ignored (RFC 9293 §3.10.7.3).
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S("R", seq=P)),
        (0.1, "state", State.SYN_SENT),
        (0.1, ">", None),
        (0.1, "event", None),
    ])


def test_syn_sent_rst_acking_syn_refuses():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S("R.", seq=0, ack=U + 1)),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": ConnectionRefusedError}),
        (0.1, ">", None),
    ])


def test_syn_sent_rst_with_wrong_ack_ignored():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S("R.", seq=0, ack=U + 7)),
        (0.1, "state", State.SYN_SENT),
        (0.1, ">", None),
    ])


def test_syn_sent_bad_ack_answered_with_rst():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S("S.", seq=P, ack=U + 50)),
        (0.1, ">", S("R", seq=U + 50)),
        (0.1, "state", State.SYN_SENT),
    ])


def test_syn_sent_ack_of_iss_is_unacceptable():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S(".", seq=P, ack=U)),
        (0.1, ">", S("R", seq=U)),
        (0.1, "state", State.SYN_SENT),
    ])


def test_syn_sent_drops_segment_without_syn_or_rst():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.1, ">", None),
        (0.1, "state", State.SYN_SENT),
    ])


def test_syn_received_bad_ack_gets_rst():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S(".", seq=P + 1, ack=U + 9)),
        (0.1, ">", S("R", seq=U + 9)),
        (0.1, "state", State.SYN_RECEIVED),
    ])


def test_syn_received_rst_closes_passive_open():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S("R", seq=P + 1)),
        (0.1, "state", State.CLOSED),
        (0.1, ">", None),
        (0.1, "event", ConnectionClosed, {"error": ConnectionResetError}),
    ])


def test_syn_received_rst_refuses_simultaneous_open():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.01, "<", S("S", seq=P)),
        (0.01, ">", S("S.")),
        (0.02, "<", S("R", seq=P + 1)),
        (0.02, "state", State.CLOSED),
        (0.02, "event", ConnectionClosed, {"error": ConnectionRefusedError}),
    ])


def test_syn_received_drops_segment_without_ack():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S("P", seq=P + 1, data=b"x")),
        (0.1, "state", State.SYN_RECEIVED),
        (0.1, "event", None),
    ])


def test_data_on_handshake_ack_is_delivered():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S("P.", seq=P + 1, ack=U + 1, data=b"GET /")),
        (0.1, "event", ConnectionEstablished),
        (0.1, "event", DataReceived, {"data": b"GET /"}),
        (0.1, ">", S(".", ack=P + 6)),
    ])


def test_data_on_syn_ack_is_delivered():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "<", S("S.", seq=P, ack=U + 1, data=b"banner")),
        (0.1, "event", ConnectionEstablished),
        (0.1, "event", DataReceived, {"data": b"banner"}),
        (0.1, ">", S(".", seq=U + 1, ack=P + 7)),
    ])


def test_fin_on_handshake_ack():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S("F.", seq=P + 1, ack=U + 1)),
        (0.1, "event", ConnectionEstablished),
        (0.1, "event", EndOfStream),
        (0.1, "state", State.CLOSE_WAIT),
        (0.1, ">", S(".", ack=P + 2)),
    ])


def test_data_on_syn_is_not_acknowledged():
    # TCP-CHECKLIST 19: SYN with data; the data is not taken (the peer resends it).
    s = Script()
    s.conn.accept_syn(S("S", seq=P, data=b"early").segment(), now=0.0)
    s.run([(0.0, ">", S("S.", ack=P + 1)), (0.0, "event", None)])


def test_syn_fin_passive_ignores_fin():
    s = Script()
    s.conn.accept_syn(S("SF", seq=P).segment(), now=0.0)
    s.run([(0.0, ">", S("S.", ack=P + 1)), (0.0, "state", State.SYN_RECEIVED)])


def test_abort_in_syn_sent_sends_nothing():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "abort"),
        (0.1, ">", None),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": None}),
    ])


def test_close_in_syn_sent_deletes_connection():
    Script().run([
        (0.0, "connect"),
        (0.0, ">", S("S")),
        (0.1, "close"),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": None}),
        (5.0, ">", None),
    ])


def test_shutdown_during_handshake_sends_fin_after_establishment():
    s = Script()
    s.conn.accept_syn(S("S", seq=P).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.0, "shutdown"),
        (0.0, ">", None),
        (0.1, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.1, "state", State.FIN_WAIT_1),
        (0.1, ">", S("F.", seq=U + 1, ack=P + 1)),
    ])


def test_accept_cookie_establishes_directly():
    s = Script(config(window_scaling=True, sack=True, timestamps=True, rcv_buf=1 << 20),
               listener="L")
    ack = S(".", seq=P + 1, ack=7777 + 1, win=100, ts=(500, 123456)).segment()
    s.conn.accept_cookie(ack, mss=1200, wscale=3, sack_permitted=True, now=10.0)
    assert s.conn.state is State.ESTABLISHED
    assert (s.conn.iss, s.conn.irs) == (7777, P)
    assert s.conn.snd_wnd == 800
    assert s.conn.mss == 1200
    s.expect_event(ConnectionEstablished, {"listener": "L"})
    s.now = 10.0
    s.run([
        (10.5, "send", b"hi"),
        # Our timestamps continue the cookie's clock: 500 ms later than 123456.
        (10.5, ">", S("P.", seq=7778, ack=P + 1, data=b"hi", ts=(123956, 500))),
    ])


def test_accept_cookie_without_timestamps_or_scaling():
    s = Script(config(window_scaling=True, timestamps=True))
    ack = S(".", seq=P + 1, ack=U + 1, win=1000).segment()
    s.conn.accept_cookie(ack, mss=536, wscale=None, sack_permitted=False, now=0.0)
    s.run([
        (0.0, "send", b"x"),
        (0.0, ">", S("P.", ts=None, win=65535)),
    ])
    assert s.conn.snd_wnd == 1000 and s.conn.rcv_wscale == 0


def test_accept_cookie_with_data():
    s = Script()
    ack = S("P.", seq=P + 1, ack=U + 1, data=b"req").segment()
    s.conn.accept_cookie(ack, mss=1460, wscale=None, sack_permitted=False, now=0.0)
    s.expect_event(ConnectionEstablished)
    s.expect_event(DataReceived, {"data": b"req"})


def test_ipv6_default_mss_is_1220():
    s = Script(local=LOCAL6, remote=REMOTE6)
    s.conn.accept_syn(S("S", seq=P).segment(REMOTE6, LOCAL6), now=0.0)
    assert s.conn.mss == 1220


def test_ipv4_default_mss_is_536():
    s = active(synack=S("S.", seq=P, ack=U + 1))
    assert s.conn.mss == 536
    s.run([(0.1, "send", b"x" * 2000), (0.1, ">", S("P.", len=536))])


def test_connect_twice_is_an_error():
    s = Script()
    s.conn.connect(now=0.0)
    try:
        s.conn.connect(now=0.0)
    except RuntimeError:
        pass
    else:
        raise AssertionError("second connect() accepted")


def test_passive_helper_established():
    s = passive()
    assert s.conn.snd_una == U + 1 and s.conn.rcv_nxt == P + 1
