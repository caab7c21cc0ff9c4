"""Timers of a connection: one deadline each, reported as the earliest.

RFC 6298 retransmission, delayed ACK (RFC 9293 §3.8.6.3), persist
(§3.8.6.1), keepalive (§3.8.4) and the TIME-WAIT / orphaned FIN-WAIT-2
linger (§3.4.2). A deadline of ``INF`` means "not armed".
"""

from __future__ import annotations

from . import seq as sq
from .output import Output
from .segment import ACK
from .tcb import (
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_2,
    INF,
    MASK,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
)


class Timers(Output):
    __slots__ = ()

    def get_timer(self) -> float | None:
        """The earliest deadline, None when no timer is armed."""
        t = self.deadline()
        return None if t == INF else t

    def deadline(self) -> float:
        """The earliest deadline, INF when no timer is armed: ``get_timer`` without an
        optional, so that a compiled caller gets an unboxed float (the table asks for
        every connection it touches)."""
        # comparisons rather than min(): compiled, these are unboxed floats (a
        # min() of five would box them and call the generic builtin, per segment)
        t = self._t_rto
        if self._t_delack < t:
            t = self._t_delack
        if self._t_persist < t:
            t = self._t_persist
        if self._t_keepalive < t:
            t = self._t_keepalive
        if self._t_2msl < t:
            t = self._t_2msl
        return t

    def handle_timer(self, *, now: float) -> None:
        if now >= self._t_2msl:
            self._t_2msl = INF
            if self.state is TIME_WAIT or self.state is FIN_WAIT_2:
                self._to_closed(None)
                return
        if now >= self._t_rto:
            self._t_rto = INF
            self._on_rto(now)
            if self.state is CLOSED:
                return
        if now >= self._t_delack:
            self._t_delack = INF
            self._ack_now = True
        if now >= self._t_persist:
            self._t_persist = INF
            self._on_persist(now)
            if self.state is CLOSED:
                return
        if now >= self._t_keepalive:
            self._t_keepalive = INF
            self._on_keepalive(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 §5.4-5.6: back off, resend from SND.UNA (go-back-N, slow
        start from one segment, RFC 5681 §3.1); give up after the bound."""
        st = self.state
        if self.snd_una == self.snd_max and st is not SYN_SENT and st is not SYN_RECEIVED:
            return
        limit = (self.config.syn_retries if st is SYN_SENT or st is SYN_RECEIVED
                 else self.config.max_retransmits)
        self._retries += 1
        if self._retries > limit:
            why = f" ({self._soft_error})" if self._soft_error else ""
            self._to_closed(TimeoutError("connection timed out" + why))
            return
        self.timeouts += 1
        self._rtt.backoff()
        self._rto = self._rtt.rto
        self._cc.on_rto(now=now, in_flight=(self.snd_max - self.snd_una) & MASK)
        if self._sb is not None:
            self._sb.clear()  # RFC 2018 §8: forget SACKed state after a timeout
        self._in_recovery = False
        self._inflate = 0
        self._dupacks = 0
        self._recover = self.snd_max  # RFC 6582 §3.2 step 1 after a timeout
        if not self._ts_ok:
            self._rtt_seq = None  # Karn's rule
        self.snd_nxt = self.snd_una
        if self.snd_wnd == 0 and st is not SYN_SENT and st is not SYN_RECEIVED:
            # The peer closed its window: probe it with the persist timer,
            # which gives up only when probes go unanswered (TCP-CHECKLIST 17).
            self._arm_persist(now)
        else:
            self._t_rto = now + self._rto

    def _on_persist(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: probe a zero window (or push data held back by
        SWS avoidance); give up only when probes go unanswered."""
        if self.snd_wnd == 0:
            self._persist_probes += 1
            if self._persist_probes > self.config.max_retransmits:
                self._to_closed(TimeoutError("connection timed out (zero-window probes)"))
                return
        self._persist_backoff += 1
        self._force_send = True

    def _on_keepalive(self, now: float) -> None:
        """RFC 9293 §3.8.4 / RFC 1122 §4.2.3.6: probe a connection silent for
        ``keepalive_idle``; anything received since counts as an answer."""
        cfg = self.config
        idle = cfg.keepalive_idle
        if idle is None or (self.state is not ESTABLISHED and self.state is not CLOSE_WAIT):
            return
        if self.snd_una != self.snd_max:
            self._t_keepalive = now + idle  # the retransmission timer watches the peer
            return
        if now - self._last_rcv < min(idle, cfg.keepalive_interval) or (
                not self._keepalive_probes and now - self._last_rcv < idle):
            self._keepalive_probes = 0
            self._t_keepalive = self._last_rcv + idle
            return
        if self._keepalive_probes >= cfg.keepalive_probes:
            self._to_closed(TimeoutError("connection timed out (keepalive)"))
            return
        self._keepalive_probes += 1
        # <SEQ=SND.UNA-1><ACK=RCV.NXT>, no data: an old sequence number forces an ACK.
        self._pending.append(self._make(sq.add(self.snd_una, -1), ACK, b"", now))
        self._t_keepalive = now + cfg.keepalive_interval
