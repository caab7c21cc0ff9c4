"""One TCP connection: the RFC 9293 state machine, sans-IO.

Rules of this file (read before changing it):

- Nothing here reads a clock, a socket or a random source. Time arrives as
  ``now=`` (float seconds); segments arrive through ``receive`` and leave
  through ``segments_to_send``; deadlines are reported by ``get_timer`` and
  fired by ``handle_timer``. Events go to a deque the owner drains.
- Every sequence-number comparison goes through ``aioxdp.tcp.seq`` (wrap-
  around, TCP-CHECKLIST 13); buffers work in plain stream offsets.
- ``snd_nxt`` is the next sequence number to transmit and may be rewound
  (go-back-N after a timeout); ``snd_max`` is the highest ever sent, so
  "acknowledges something not yet sent" is judged against ``snd_max``.
- Output is lazy: input and timers only set flags (``_ack_now``) and
  deadlines; ``segments_to_send`` builds what the flags and windows allow.
- ``receive`` starts with a header-prediction fast path for the two common
  segments of a bulk transfer (in-order data, pure ACK of new data); all
  else goes through ``_receive_slow``, which follows RFC 9293 §3.10.7 step
  by step.
"""

from __future__ import annotations

from typing import Final

from . import seq as sq
from .events import (
    ConnectionEstablished,
    DataReceived,
    EndOfStream,
    Event,
    SendBufferDrained,
)
from .options import MAX_WSCALE, TS_OPTION_LEN, default_mss, local_mss, receive_window_scale
from .rtt import RttEstimator
from .sack import Scoreboard
from .segment import ACK, FIN, PSH, RST, SYN, Segment
from .tcb import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    INF,
    LAST_ACK,
    LISTEN,
    MASK,
    RECEIVING,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    State,
)
from .timers import Timers

# Challenge ACKs (RFC 5961 §7): at most this many per connection per second. A
# per-connection budget, not a global one, so it leaks nothing (CVE-2016-5696).
CHALLENGE_ACK_LIMIT: Final = 10
# RFC 7323 §5.5: a TS.Recent older than 24 days is no longer used for PAWS.
PAWS_IDLE: Final = 24 * 24 * 3600.0
DUPTHRESH: Final = 3  # RFC 5681 §3.2, RFC 6675 §2

__all__ = ["Connection", "State", "receive_window_scale", "default_mss"]


class Connection(Timers):
    """One connection; see the module docstring and the core contract. Its
    variables (the TCB) are declared in ``tcb.py``, output in ``output.py``,
    timers in ``timers.py``."""

    __slots__ = ()

    # ------------------------------------------------------------------ opening

    def connect(self, *, now: float) -> None:
        """Active open (RFC 9293 §3.10.1): SYN-SENT; the SYN goes out with the next output."""
        if self.state is not CLOSED:
            raise RuntimeError(f"connect() in state {self.state.name}")
        self._active = True
        self.state = SYN_SENT
        self._last_send = now
        self._notify()

    def accept_syn(self, syn: Segment, *, now: float) -> None:
        """Passive open from a listener (RFC 9293 §3.10.7.2): SYN-RECEIVED,
        SYN-ACK queued. Data on the SYN is not accepted (the peer resends it)."""
        if self.state is not CLOSED:
            raise RuntimeError(f"accept_syn() in state {self.state.name}")
        self.state = SYN_RECEIVED
        self._take_syn(syn, now=now, syn_ack=False)
        self._last_rcv = now

    def accept_cookie(self, ack: Segment, *, mss: int, wscale: int | None,
                      sack_permitted: bool, now: float) -> None:
        """ESTABLISHED straight from an ACK that carried a valid SYN cookie:
        the SYN's options come decoded from the cookie. IRS = SEG.SEQ - 1,
        ISS = SEG.ACK - 1; timestamps are on iff the ACK carries them."""
        if self.state is not CLOSED:
            raise RuntimeError(f"accept_cookie() in state {self.state.name}")
        iss = sq.add(ack.ack, -1)
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = ack.ack
        self._snd_base = ack.ack
        self._recover = self._high_rxt = ack.ack
        self.irs = sq.add(ack.seq, -1)
        self.rcv_nxt = self._last_ack_sent = ack.seq
        # The cookie's SYN-ACK advertised an unscaled window (RFC 7323 §2.2).
        self.rcv_adv = sq.add(ack.seq, min(self.config.rcv_buf, 0xFFFF))
        cfg = self.config
        self._ws_ok = wscale is not None and cfg.window_scaling
        if wscale is not None and self._ws_ok:
            self.snd_wscale = min(wscale, MAX_WSCALE)
        else:
            self.rcv_wscale = 0
        self._sack_ok = sack_permitted and cfg.sack
        if ack.ts is not None and cfg.timestamps:
            self._ts_ok = True
            self._ts_recent = ack.ts[0]
            self._ts_recent_time = now
            # Continue the clock the cookie's TSval came from, so that the
            # peer's PAWS check never sees our timestamps go backwards.
            self._ts_offset = (ack.ts[1] - int(now * 1000)) & MASK
        self._set_mss(mss)
        self.snd_wnd = ack.window << self.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = ack.seq
        self.snd_wl2 = ack.ack
        self._last_rcv = now
        self._established(now)
        if ack.payload or ack.flags & FIN:
            self.receive(ack, now=now)

    def _take_syn(self, syn: Segment, *, now: float, syn_ack: bool) -> None:
        """Record the peer's SYN and negotiate options (RFC 9293 §3.7.1,
        RFC 7323 §2.2/§3.2, RFC 2018 §2). Options count only here (RFC 7323 §2.3)."""
        cfg = self.config
        self.irs = syn.seq
        self.rcv_nxt = self._last_ack_sent = sq.add(syn.seq, 1)
        self._rcv_off = 0
        self._ws_ok = syn.wscale is not None and cfg.window_scaling
        if syn.wscale is not None and self._ws_ok:
            self.snd_wscale = min(syn.wscale, MAX_WSCALE)  # RFC 7323 §2.3: cap at 14
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self._sack_ok = syn.sack_permitted and cfg.sack
        if syn.ts is not None and cfg.timestamps:
            self._ts_ok = True
            self._ts_recent = syn.ts[0]
            self._ts_recent_time = now
        else:
            self._ts_ok = False
        # an MSS option of 0 counts as none, as Linux's tcp_parse_options has it
        self._set_mss(syn.mss or default_mss(self.remote[0]))
        # RFC 7323 §2.2: the window of a SYN is never scaled.
        self.snd_wnd = syn.window
        self.max_snd_wnd = syn.window
        self.snd_wl1 = syn.seq
        self.snd_wl2 = syn.ack if syn_ack else 0
        self.rcv_adv = sq.add(self.rcv_nxt, min(cfg.rcv_buf, 0xFFFF))

    def _set_mss(self, peer_mss: int) -> None:
        """RFC 9293 §3.7.1: send MSS = min(peer's MSS, ours), floored at
        ``min_mss`` against tiny announced values (CVE-2019-11479; Linux's
        tcp_min_snd_mss, 48 by default). Segments carry the timestamps option, so
        their payload is 12 bytes less (MUST-16)."""
        cfg = self.config
        mss = min(max(peer_mss, cfg.min_mss), local_mss(cfg.mss, self.local[0]))
        self.mss = mss
        self._seg_payload = mss - TS_OPTION_LEN if self._ts_ok else mss
        # The peer's full-sized segments are no larger than ours (delayed ACKs).
        self._rcv_mss = self._seg_payload
        self._cc.set_mss(self._seg_payload)

    def _established(self, now: float) -> None:
        self.state = ESTABLISHED
        if self._sack_ok:
            self._sb = Scoreboard(max_ranges=self.config.max_ooo_segments)
        self._retries = 0
        cfg = self.config
        if self._rtt.srtt is None and self._rtt.backoff_count:
            # RFC 6298 §5.7: the SYN timed out and no RTT was measured: data
            # starts with an RTO of 3 s rather than a smaller initial value.
            self._rtt = RttEstimator(initial=max(3.0, cfg.rto_initial), minimum=cfg.rto_min,
                                     maximum=cfg.rto_max)
        self._rtt.reset_backoff()
        self._rto = self._rtt.rto
        if self.config.keepalive_idle is not None:
            self._t_keepalive = now + self.config.keepalive_idle
        self.events.append(ConnectionEstablished(self, self.listener))
        if self._fin_seq is not None:
            self.state = FIN_WAIT_1  # shutdown() was called during the handshake

    # ------------------------------------------------------------------ application side

    @property
    def send_buffer_size(self) -> int:
        """Bytes queued and not yet acknowledged."""
        return len(self._sendbuf)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes. On a connection already gone (reset, timed out) they
        are dropped: the application learns why from ConnectionClosed."""
        if self.state is CLOSED or self.state is TIME_WAIT:
            return
        if self._fin_seq is not None:
            raise RuntimeError("send() after shutdown()")
        if data:
            self._sendbuf.append(data)
            self._notify()

    def drop_unsent(self, keep: int) -> None:
        """Forget queued bytes beyond the first ``keep`` of the send buffer, never one
        already sent (the peer may have it), and never once the FIN has its place. An
        abort() of asyncio's socket transports drops the transport's own write buffer
        while the socket's send buffer (``keep`` bytes) still goes out before the FIN."""
        if self._fin_seq is not None:
            return
        sent = sq.sub(self.snd_max, self._snd_base)  # bytes of the buffer sent at least once
        self._sendbuf.truncate(max(keep, sent, 0))

    def shutdown(self) -> None:
        """Half-close: a FIN after the queued data (RFC 9293 §3.10.4)."""
        if self._fin_seq is not None:
            return
        st = self.state
        if st is CLOSED or st is TIME_WAIT:
            return
        # In SYN-SENT and SYN-RECEIVED the FIN waits for the handshake (RFC 9293 §3.10.4).
        self._fin_seq = sq.add(self._snd_base, len(self._sendbuf))
        if st is ESTABLISHED:
            self.state = FIN_WAIT_1
        elif st is CLOSE_WAIT:
            self.state = LAST_ACK
        self._notify()

    def close(self) -> None:
        """The application is done both ways: FIN after queued data; data that
        arrives from now on is answered with RST (RFC 1122 §4.2.2.13). Closing
        with received data still unread resets at once, as sockets do
        (RFC 2525 §2.17): the peer learns its data was not consumed."""
        self._app_closed = True
        self._rx_slow = True
        if self.state is SYN_SENT:
            self._to_closed(None)  # RFC 9293 §3.10.4: SYN-SENT, delete the TCB
            self._notify()
            return
        if self._held and self.state is not CLOSED:
            self._held.clear()
            self.abort()
            return
        self.shutdown()
        if self.state is FIN_WAIT_2 and self._t_2msl == INF:
            self._t_2msl = self._last_rcv + 2 * self.config.msl
        self._notify()

    def abort(self) -> None:
        """RST now (unless no RST is due: CLOSED, SYN-SENT, TIME-WAIT), then CLOSED."""
        st = self.state
        if st is CLOSED:
            return
        if st is not SYN_SENT and st is not TIME_WAIT:
            self._pending.append(self._make(self._ack_seq(), RST | ACK, b""))
        self._to_closed(None)
        self._notify()

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def pause_reading(self) -> None:
        self._paused = True
        self._rx_slow = True

    def resume_reading(self) -> None:
        """Deliver what was held while paused and reopen the window (a window
        update is sent when it grows enough, RFC 9293 §3.8.6.2.2)."""
        if not self._paused:
            return
        self._paused = False
        self._update_rx_path()
        if self._held:
            data = bytes(self._held)
            self._held.clear()
            self.events.append(DataReceived(self, data))
        if self._eof_pending:
            self._eof_pending = False
            self._deliver_eof()
        if self._window_update_due():
            self._ack_now = True
        self._notify()

    def icmp_error(self, seq: int, *, mtu: int | None = None, now: float) -> bool:
        """An ICMP error quoting one of our segments whose sequence number is
        ``seq`` (TCP-CHECKLIST 21). Acted on only when ``seq`` is in flight,
        SND.UNA <= seq < SND.MAX (RFC 5927 §4.1); returns whether it was.

        With ``mtu`` (IPv4 "fragmentation needed", IPv6 "packet too big"):
        lower the MSS to fit and resend what is in flight (RFC 1191, RFC 8201;
        not a congestion signal). Without: a soft error (RFC 1122 §4.2.3.9,
        RFC 5461): the connection goes on and only names the error if it
        later times out."""
        if self.state is CLOSED or not sq.between(self.snd_una, seq, self.snd_max):
            return False
        if mtu is None:
            self._soft_error = "ICMP destination unreachable"
            return True
        self.lower_mtu(mtu)
        return True

    def lower_mtu(self, mtu: int) -> bool:
        """Fit segments to a path MTU of ``mtu``: an ICMP error's (``icmp_error``), or
        the interface's own when it shrinks. If the MSS is above it, lower it and resend
        what is in flight in segments that fit; returns whether it did."""
        overhead = 60 if len(self.remote[0]) == 16 else 40  # IP + TCP headers
        mss = max(mtu - overhead, self.config.min_pmtu_mss)
        if mss >= self.mss:
            return False
        self.mss = mss
        self._seg_payload = mss - TS_OPTION_LEN if self._ts_ok else mss
        self._cc.set_mss(self._seg_payload)
        self.snd_nxt = self.snd_una  # resend in segments that fit
        self._rtt_seq = None
        self._notify()
        return True

    @property
    def srtt(self) -> float | None:
        """The smoothed round-trip time (RFC 6298), None before the first sample."""
        return self._rtt.srtt

    def accepts_new_syn(self, syn: Segment) -> bool:
        """In TIME-WAIT, may this SYN start a new incarnation of the tuple?
        RFC 9293 §3.10.7.4 note / RFC 6191: yes if its sequence number is
        beyond RCV.NXT, or (timestamps in use) its TSval beyond TS.Recent."""
        if self.state is not TIME_WAIT:
            return self.state is CLOSED
        if self._ts_ok and syn.ts is not None:
            return sq.gt(syn.ts[0], self._ts_recent)
        return sq.gt(syn.seq, self.rcv_nxt)

    def next_event(self) -> Event | None:
        events = self.events
        return events.popleft() if events else None


    # ------------------------------------------------------------------ input

    def receive(self, seg: Segment, *, now: float) -> None:
        """Process one arriving segment (RFC 9293 §3.10.7)."""
        self._last_rcv = now
        # Header prediction: established, expected flags, in order, a fresh
        # timestamp, no recovery or retransmission under way, and a window
        # that is the same or a non-zero one the SND.WL1/WL2 rule takes (the
        # window of request/response traffic shrinks by each request until the
        # peer's receiver SWS avoidance moves its right edge, RFC 9293
        # §3.8.6.2.2, so "same window" alone misses nearly every segment).
        sseq = seg.seq
        rcv_nxt = self.rcv_nxt
        snd_max = self.snd_max
        wnd = seg.window << self.snd_wscale
        flags = seg.flags
        if (sseq == rcv_nxt and self.state is ESTABLISHED and (flags == ACK or flags == ACK | PSH)
                and (wnd == self.snd_wnd
                     or (wnd and ((sseq - self.snd_wl1) & MASK) < sq.HALF))
                and self.snd_nxt == snd_max and not self._in_recovery and not seg.sack):
            ts = seg.ts
            if ts is None or (self._ts_ok and ((ts[0] - self._ts_recent) & MASK) < sq.HALF):
                payload = seg.payload
                n = len(payload)
                ack = seg.ack
                una = self.snd_una
                if n == 0:
                    # A pure ACK of new data (RFC 9293 §3.10.7.4 fifth, common case).
                    if ack != una and ((ack - una) & MASK) <= ((snd_max - una) & MASK):
                        self.fast_path += 1
                        if ts is not None and sseq == self._last_ack_sent:
                            self._ts_recent = ts[0]  # RFC 7323 §4.3
                            self._ts_recent_time = now
                        self._fast_window(sseq, ack, wnd)
                        self._new_ack(ack, ts, now)
                        return
                elif (not self._rx_slow and n <= ((self.rcv_adv - rcv_nxt) & MASK)
                      and ((ack - una) & MASK) <= ((snd_max - una) & MASK)):
                    # In-order data, acknowledging nothing new (bulk receive) or new
                    # data of ours (request/response): ACK first, then text (RFC 9293
                    # §3.10.7.4 fifth and seventh); in ESTABLISHED the ACK moves no state.
                    self.fast_path += 1
                    if ts is not None and sseq == self._last_ack_sent:
                        self._ts_recent = ts[0]
                        self._ts_recent_time = now
                    self._fast_window(sseq, ack, wnd)
                    if ack != una:
                        self._new_ack(ack, ts, now)
                    self.rcv_nxt = (rcv_nxt + n) & MASK
                    self._rcv_off += n
                    self.events.append(DataReceived(
                        self, payload if type(payload) is bytes else bytes(payload)))
                    self._ack_policy(n, now)
                    return
        self.slow_path += 1
        self._receive_slow(seg, now)

    def _fast_window(self, sseq: int, ack: int, wnd: int) -> None:
        """The window update of header prediction (RFC 9293 §3.10.7.4 fifth): the
        segment is in order and acknowledges SND.UNA or beyond, so the SND.WL1/WL2
        rule holds wherever the guard let a changed (non-zero) window through."""
        self.snd_wl1 = sseq
        self.snd_wl2 = ack
        if wnd != self.snd_wnd:
            self.snd_wnd = wnd
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            self._t_persist = INF
            self._persist_backoff = 0

    def _receive_slow(self, seg: Segment, now: float) -> None:
        st = self.state
        if st is CLOSED or st is LISTEN:
            return  # the table answers segments for nothing (RFC 9293 §3.10.7.1)
        if st is SYN_SENT:
            self._receive_syn_sent(seg, now)
            return
        flags = seg.flags
        sseq = seg.seq
        payload = seg.payload
        ts = seg.ts

        # RFC 7323 §5.3 PAWS, before the acceptability test; RSTs are exempt.
        # A peer that stops sending timestamps is tolerated (as Linux does).
        if (self._ts_ok and ts is not None and not flags & RST
                and sq.lt(ts[0], self._ts_recent)):
            if now - self._ts_recent_time <= PAWS_IDLE:
                self._challenge_ack(now)  # an ACK, rate-limited like the others
                return
            self._ts_recent = ts[0]  # RFC 7323 §5.5: TS.Recent too old to judge by

        # RFC 9293 §3.10.7.4 first: sequence number acceptability.
        rcv_nxt = self.rcv_nxt
        rcv_wnd = sq.sub(self.rcv_adv, rcv_nxt)
        if rcv_wnd < 0:
            rcv_wnd = 0
        seg_len = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if seg_len == 0:
            ok = sseq == rcv_nxt if rcv_wnd == 0 else sq.between(rcv_nxt, sseq,
                                                                 sq.add(rcv_nxt, rcv_wnd))
        elif rcv_wnd == 0:
            # Zero window: nothing is acceptable, but a segment at RCV.NXT
            # still has its ACK and RST processed (its data is trimmed below).
            ok = sseq == rcv_nxt
        else:
            right = sq.add(rcv_nxt, rcv_wnd)
            ok = (sq.between(rcv_nxt, sseq, right)
                  or sq.between(rcv_nxt, sq.add(sseq, seg_len - 1), right))
        if not ok:
            if st is SYN_RECEIVED and flags & SYN and sseq == self.irs and not flags & ACK:
                # The peer resent its SYN: our SYN-ACK was lost; resend it now.
                self.snd_nxt = self.iss
                return
            if not flags & RST:
                # RFC 9293 §3.10.7.4: an unacceptable segment gets an ACK.
                if st is TIME_WAIT and flags & FIN:
                    self._t_2msl = now + 2 * self.config.msl  # retransmitted FIN
                self._challenge_ack(now)
            return

        # RFC 9293 §3.10.7.4 second: RST (RFC 5961 §3.2: exact match resets,
        # anything else in the window draws a challenge ACK).
        if flags & RST:
            if sseq != rcv_nxt:
                self._challenge_ack(now)
                return
            if st is TIME_WAIT:
                return  # RFC 1337: no TIME-WAIT assassination
            if st is SYN_RECEIVED and self._active:
                self._to_closed(ConnectionRefusedError("connection refused"))
            else:
                self._to_closed(ConnectionResetError("connection reset by peer"))
            return

        # Trim what precedes RCV.NXT (a SYN there included) and what lies
        # beyond the window (RFC 9293 §3.10.7.4 first, TCP-CHECKLIST 6).
        if sseq != rcv_nxt:
            cut = sq.sub(rcv_nxt, sseq)
            if cut > 0:
                if flags & SYN:
                    flags &= ~SYN
                    cut -= 1
                if cut > 0:
                    payload = memoryview(payload)[cut:]
                sseq = rcv_nxt
        room = rcv_wnd - sq.sub(sseq, rcv_nxt)
        if len(payload) > room:
            payload = memoryview(payload)[:max(room, 0)]
            flags &= ~FIN
            self._ack_now = True

        # RFC 7323 §4.3: TS.Recent from the segment at the left edge.
        if ts is not None and self._ts_ok and sq.le(sseq, self._last_ack_sent) \
                and sq.ge(ts[0], self._ts_recent):
            self._ts_recent = ts[0]
            self._ts_recent_time = now

        # Fourth: SYN in a synchronized state -> challenge ACK (RFC 5961 §4.2).
        if flags & SYN:
            if st is SYN_RECEIVED and not self._active:
                # RFC 9293 §3.10.7.4: a passive open goes back to LISTEN.
                self._to_closed(ConnectionResetError("connection reset by peer"))
                return
            self._challenge_ack(now)
            return

        # Fifth: the ACK field.
        if not flags & ACK:
            return
        ack = seg.ack
        if st is SYN_RECEIVED:
            if not (sq.lt(self.snd_una, ack) and sq.le(ack, self.snd_max)):
                # RFC 9293 §3.10.7.4: <SEQ=SEG.ACK><CTL=RST>
                self._pending.append(self._rst(ack))
                return
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = sseq
            self.snd_wl2 = ack
            self._established(now)
            st = self.state
        if not self._process_ack(seg, sseq, ack, ts, now):
            return
        st = self.state
        if st is CLOSED:
            return

        # Seventh: segment text (urgent data is treated as normal data, MUST-30/31).
        # In CLOSE-WAIT and later the peer's FIN came already: text is ignored.
        if payload and st in RECEIVING:
            if self._app_closed:
                # The application will never read this: reset (RFC 9293 §3.10.7).
                self._pending.append(self._make(self._ack_seq(), RST | ACK, b""))
                self._to_closed(None)
                return
            self._receive_data(sseq, payload, now, seg.gso_size)

        # Eighth: FIN.
        if flags & FIN and st in RECEIVING:
            off = self._rcv_off + sq.sub(sseq, self.rcv_nxt) + len(payload)
            if off == self._rcv_off:
                self._receive_fin(now)
            else:
                self._ooo_fin = off
                self._rx_slow = True
                self._ack_now = True
        elif flags & FIN and st is TIME_WAIT:
            self._ack_now = True
            self._t_2msl = now + 2 * self.config.msl

    def _receive_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        ack = seg.ack
        if flags & ACK and (sq.le(ack, self.iss) or sq.gt(ack, self.snd_max)):
            if not flags & RST:
                self._pending.append(self._rst(ack))
            return
        if flags & RST:
            # TCP-CHECKLIST 7: only a RST acknowledging our SYN refuses.
            if flags & ACK:
                self._to_closed(ConnectionRefusedError("connection refused"))
            return
        if not flags & SYN:
            return
        self._take_syn(seg, now=now, syn_ack=bool(flags & ACK))
        if flags & ACK:
            self.snd_una = ack
            self.snd_wl2 = ack
            if self._rtt_seq is not None:
                self._rtt.sample(now - self._rtt_time)  # Karn: the SYN went once
                self._rtt_seq = None
                self._rto = self._rtt.rto
            self._t_rto = INF
            self._ack_now = True
            self._established(now)
            if seg.payload or flags & FIN:
                # Data on the SYN-ACK: process as in ESTABLISHED (RFC 9293 §3.10.7.3).
                rest = Segment(seg.src, seg.dst, seg.sport, seg.dport, sq.add(seg.seq, 1),
                               ack, flags & ~SYN, seg.window, seg.payload, ts=seg.ts)
                self._receive_slow(rest, now)
        else:
            # Simultaneous open: SYN-RECEIVED, resend our SYN as a SYN-ACK.
            self.state = SYN_RECEIVED
            self.snd_nxt = self.iss
            self._rtt_seq = None

    def _challenge_ack(self, now: float) -> None:
        """An ACK in answer to an unacceptable or suspicious segment, limited
        per connection (RFC 5961 §7, TCP-CHECKLIST 5)."""
        if now - self._challenge_window >= 1.0:
            self._challenge_window = now
            self._challenge_count = 0
        if self._challenge_count < CHALLENGE_ACK_LIMIT:
            self._challenge_count += 1
            self._ack_now = True

    def _process_ack(self, seg: Segment, sseq: int, ack: int, ts: tuple[int, int] | None,
                     now: float) -> bool:
        """RFC 9293 §3.10.7.4 fifth, ESTABLISHED and later. Returns False when
        the segment is to be dropped."""
        una = self.snd_una
        if sq.gt(ack, self.snd_max):
            self._challenge_ack(now)  # acknowledges something never sent
            return False
        if sq.lt(ack, sq.add(una, -self.max_snd_wnd)):
            self._challenge_ack(now)  # RFC 5961 §5.2: too old to be real
            return False
        wnd = seg.window << self.snd_wscale
        sb = self._sb
        if sb is not None and (seg.sack or len(sb)):
            newly_sacked = sb.update(ack, seg.sack, self.snd_max)
        else:
            newly_sacked = 0
        if ack != una and sq.gt(ack, una):
            self._new_ack(ack, ts, now)
        elif (ack == una and not seg.payload and not seg.flags & FIN and una != self.snd_max
              and wnd and (wnd == self.snd_wnd or newly_sacked)):
            # A zero window is flow control, not a sign of loss.
            self._dup_ack(newly_sacked, now)
        # Window update (RFC 9293 §3.10.7.4: SND.WL1/SND.WL2 rule).
        if sq.lt(self.snd_wl1, sseq) or (self.snd_wl1 == sseq and sq.le(self.snd_wl2, ack)):
            self.snd_wnd = wnd
            self.snd_wl1 = sseq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd:
                self._t_persist = INF
                self._persist_backoff = 0
        self._persist_probes = 0
        self._keepalive_probes = 0
        return self.state is not CLOSED

    def _ts_sample(self, tsecr: int, now: float) -> float | None:
        """RFC 7323 §4: RTT from the echoed timestamp (milliseconds)."""
        delta = ((int(now * 1000) + self._ts_offset) - tsecr) & MASK  # _ts_now(now) - tsecr
        if delta >= sq.HALF:
            return None
        rtt = delta / 1000.0
        self._rtt.sample(rtt)
        return rtt

    def _new_ack(self, ack: int, ts: tuple[int, int] | None, now: float) -> None:
        """SND.UNA advances: free the buffer, sample the RTT, move the
        congestion window, handle the states our FIN's ACK moves."""
        una = self.snd_una
        snd_max = self.snd_max
        acked = (ack - una) & MASK
        in_flight = (snd_max - una) & MASK
        self.snd_una = ack
        if ((self.snd_nxt - ack) & MASK) >= sq.HALF:
            self.snd_nxt = ack  # a probe byte or go-back-N: never send below SND.UNA
        # Free acknowledged data (the SYN and FIN take sequence space, not buffer).
        buf = self._sendbuf
        snd_base = self._snd_base
        freed = (ack - snd_base) & MASK
        if freed < sq.HALF and freed:
            buffered = len(buf)
            if freed > buffered:
                freed = buffered
            buf.consume(freed)
            self._snd_base = (snd_base + freed) & MASK
        # RTT, one sample per round trip: when the ACK covers the timed mark,
        # from the echoed timestamp (RFC 7323 §4, valid for retransmissions
        # too) or, without timestamps, from the clock (Karn: the mark is
        # dropped when anything is retransmitted, RFC 6298 §3).
        rtt_sample = None
        mark = self._rtt_seq
        if mark is not None and ((ack - mark) & MASK) < sq.HALF:
            self._rtt_seq = None
            if not self._ts_ok:
                rtt_sample = now - self._rtt_time
                self._rtt.sample(rtt_sample)
            elif ts is not None and ts[1]:
                rtt_sample = self._ts_sample(ts[1], now)
            self._rto = self._rtt.rto
        if self._retries:
            self._retries = 0
            self._rtt.reset_backoff()
            self._rto = self._rtt.rto
        # Congestion control and recovery.
        eifel = self._eifel_ts
        if eifel is not None:
            self._eifel_ts = None
        if (eifel is not None and self._in_recovery and ts is not None and ts[1]
                and sq.lt(ts[1], eifel) and self._cc.undo(now=now)):
            self._in_recovery = False  # RFC 3522: the original arrived; RFC 4015 response
            self._inflate = 0
            self._recover = sq.add(ack, -1)
        elif self._in_recovery:
            if sq.ge(ack, self._recover):
                self._in_recovery = False  # RFC 6582 §3.2 step 3 / RFC 6675 §5
                self._inflate = 0
                self._cc.on_recovery_exit(now=now, in_flight=(self.snd_max - ack) & MASK)
            elif self._sb is None:
                # RFC 6582 §3.2 step 4: partial ACK, resend the next hole;
                # deflate by what was acknowledged, add back one segment.
                self._rexmit_una = True
                self._inflate -= acked
                if acked >= self._seg_payload:
                    self._inflate += self._seg_payload
        else:
            self._cc.on_ack(acked, now=now, rtt=rtt_sample, in_flight=in_flight)
            if ((ack - self._recover) & MASK) > (1 << 30):
                self._recover = (ack - 1) & MASK  # keep it comparable across wrap-around
        self._dupacks = 0
        # RFC 6298 §5.2/§5.3: restart the timer while data is outstanding.
        if ack == snd_max:
            self._t_rto = INF
        else:
            self._t_rto = now + self._rto
        wm = self.write_watermark
        if wm is not None and len(buf) <= wm:
            self.write_watermark = None
            self.events.append(SendBufferDrained(self))
        fin = self._fin_seq
        if fin is not None and ack == ((fin + 1) & MASK):
            self._our_fin_acked(now)

    def _our_fin_acked(self, now: float) -> None:
        st = self.state
        if st is FIN_WAIT_1:
            self.state = FIN_WAIT_2
            if self._app_closed:
                # Do not wait forever for a peer that never closes.
                self._t_2msl = now + 2 * self.config.msl
        elif st is CLOSING:
            self._enter_time_wait(now)
        elif st is LAST_ACK:
            self._to_closed(None)

    def _dup_ack(self, newly_sacked: int, now: float) -> None:
        """A duplicate ACK (RFC 5681 §2; RFC 6675 §2 counts SACKs of new data)."""
        self._dupacks += 1
        if self._in_recovery:
            if self._sb is None:
                self._inflate += self._seg_payload  # RFC 6582 §3.2 step 3
            return
        mss = self._seg_payload
        lost = self._dupacks >= DUPTHRESH or (
            self._sb is not None and self._sb.is_lost(self.snd_una, mss))
        # RFC 6582 §3.2 step 2: not again for losses of the window already recovered.
        if lost and sq.gt(self.snd_una, self._recover):
            in_flight = (self.snd_max - self.snd_una) & MASK
            self._in_recovery = True
            self.recoveries += 1
            self._recover = self.snd_max
            self._high_rxt = self.snd_una
            self._cc.on_congestion_event(now=now, in_flight=in_flight)
            self._eifel_ts = self._ts_now(now) if self._ts_ok else None
            self._rexmit_una = True
            if not self._ts_ok:
                self._rtt_seq = None  # Karn
            if self._sb is None:
                self._inflate = DUPTHRESH * mss

    def _receive_data(self, sseq: int, payload: bytes | memoryview, now: float,
                      gso_size: int) -> None:
        """In-order bytes go up (or into the held buffer while paused); the
        rest into the out-of-order queue with an immediate ACK (RFC 5681 §4.2).
        The peer's segment size (for delayed ACKs) is a coalesced segment's
        ``gso_size``, not its length (as Linux's tcp_measure_rcv_mss)."""
        n = len(payload)
        size = gso_size if gso_size else n
        if size > self._rcv_mss:
            self._rcv_mss = size
        if sseq != self.rcv_nxt:
            off = self._rcv_off + sq.sub(sseq, self.rcv_nxt)
            self._ooo.insert(off, payload)
            self._ack_now = True
            self._rx_slow = True
            return
        ooo = self._ooo
        if ooo:
            # Where these bytes overlap queued ones, the queued (first) copy
            # wins, as within the queue (TCP-CHECKLIST 14). Should the queue
            # be full, the new bytes go up directly and the overlapped queued
            # bytes are dropped: either way no byte is delivered twice.
            if ooo.insert(self._rcv_off, payload):
                data = ooo.pop_ready(self._rcv_off) or b""
            else:
                data = bytes(payload) + (ooo.pop_ready(self._rcv_off + n) or b"")
            self._ack_now = True  # a hole was (partly) filled: ACK at once
            self._update_rx_path()
        else:
            data = bytes(payload)
        self.rcv_nxt = sq.add(self.rcv_nxt, len(data))
        self._rcv_off += len(data)
        if self._paused:
            self._held += data
        else:
            self.events.append(DataReceived(self, data))
        self._ack_policy(n, now)
        if self._ooo_fin is not None and self._ooo_fin == self._rcv_off:
            self._ooo_fin = None
            self._update_rx_path()
            self._receive_fin(now)

    def _update_rx_path(self) -> None:
        self._rx_slow = (bool(self._ooo) or self._ooo_fin is not None or self._paused
                         or self._app_closed)

    def _ack_policy(self, n: int, now: float) -> None:
        """Delayed ACK (RFC 9293 §3.8.6.3, RFC 5681 §4.2): ACK every second
        full-sized segment, quick ACKs at the start, otherwise within
        ``config.delayed_ack``."""
        unacked = self._rcv_unacked + n
        self._rcv_unacked = unacked
        if self._quickacks > 0:
            self._quickacks -= 1
            self._ack_now = True
        elif unacked >= 2 * self._rcv_mss:
            self._ack_now = True
        elif self._t_delack == INF:
            self._t_delack = now + self.config.delayed_ack

    def _receive_fin(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth: the peer's FIN, in order."""
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self._rcv_off += 1
        self._ack_now = True
        if self._paused:
            self._eof_pending = True
        else:
            self._deliver_eof()
        st = self.state
        if st is ESTABLISHED:
            self.state = CLOSE_WAIT
        elif st is FIN_WAIT_1:
            # Our FIN not yet acknowledged (else we would be in FIN-WAIT-2).
            self.state = CLOSING
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)

    def _deliver_eof(self) -> None:
        if not self._eof_delivered and not self._app_closed:
            self._eof_delivered = True
            self.events.append(EndOfStream(self))

    def _enter_time_wait(self, now: float) -> None:
        """RFC 9293 §3.4.2: linger 2*MSL; for the application the connection is over."""
        self.state = TIME_WAIT
        self._t_rto = self._t_persist = self._t_keepalive = self._t_delack = INF
        self._t_2msl = now + 2 * self.config.msl
        self._report_closed(None)

