"""Output of a connection: building segments and deciding what may be sent.

Input and timers only set flags and deadlines on the TCB; ``segments_to_send``
turns them into segments here, under the send window, the congestion window,
sender SWS avoidance and Nagle (RFC 9293 §3.8.6.2.1, §3.7.4), the recovery
algorithms (RFC 6582, RFC 6675) and the persist timer (RFC 9293 §3.8.6.1).
"""

from __future__ import annotations

from . import seq as sq
from .options import MAX_SACK_BLOCKS, MAX_SACK_BLOCKS_WITH_TS, local_mss, sack_option_len
from .segment import ACK, FIN, PSH, RST, SYN, Segment
from .seq import HALF
from .tcb import CLOSED, INF, MASK, SENDING, SYN_RECEIVED, SYN_SENT, Tcb


class Output(Tcb):
    __slots__ = ()

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    def _window_now(self) -> int:
        """The window advertised last, as it stands now (0 once data filled it)."""
        cur = (self.rcv_adv - self.rcv_nxt) & MASK
        return 0 if cur >= sq.HALF else cur

    def _window_offer(self, cur: int) -> int:
        """The window we may advertise, ``cur`` being ``_window_now()``. Receiver
        SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge moves only by at
        least min(rcv_buf/2, MSS) and never moves left."""
        space = self.config.rcv_buf - len(self._held)
        if space - cur >= min(self.config.rcv_buf >> 1, self._rcv_mss):
            return space
        return cur

    def _window_update_due(self) -> bool:
        cur = self._window_now()
        return self._window_offer(cur) > cur

    def _window_field(self) -> int:
        """The window field to send (scaled down, RFC 7323 §2.2), rounded up
        rather than down so that the right edge never moves left (§2.4)."""
        offer = self._window_offer(self._window_now())
        ws = self.rcv_wscale
        field = offer >> ws
        if field >= 0xFFFF:
            field = 0xFFFF
        elif (field << ws) < offer:
            field += 1
        self.rcv_adv = (self.rcv_nxt + (field << ws)) & MASK
        return field

    def _make(self, sseq: int, flags: int, payload: bytes, now: float | None = None) -> Segment:
        """A segment from us with the current ACK, window and options."""
        local = self.local
        remote = self.remote
        rcv_nxt = self.rcv_nxt
        seg = Segment(local[0], remote[0], local[1], remote[1], sseq,
                      rcv_nxt if flags & ACK else 0, flags,
                      self._window_field() if not flags & SYN else min(self.config.rcv_buf,
                                                                        0xFFFF),
                      payload)
        if flags & ACK:
            self._last_ack_sent = rcv_nxt
            self._ack_now = False
            self._t_delack = INF
            self._rcv_unacked = 0
        if self._ts_ok and now is not None and not flags & RST:
            seg.ts = ((int(now * 1000) + self._ts_offset) & MASK, self._ts_recent)  # _ts_now
        # (out-of-order data queued implies _rx_slow: a cheap test first)
        if self._rx_slow and self._sack_ok and self._ooo and not flags & (SYN | RST):
            seg.sack = self._sack_blocks(MAX_SACK_BLOCKS if seg.ts is None
                                         else MAX_SACK_BLOCKS_WITH_TS)
        return seg

    def _sack_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """RFC 2018 §4: SACK blocks from the reassembly queue, newest first."""
        base_seq = self.rcv_nxt
        base_off = self._rcv_off
        return tuple((sq.add(base_seq, s - base_off), sq.add(base_seq, e - base_off))
                     for s, e in self._ooo.blocks(limit))

    def _rst(self, sseq: int) -> Segment:
        return Segment(self.local[0], self.remote[0], self.local[1], self.remote[1],
                       sseq, 0, RST, 0)

    def _syn_segment(self, now: float) -> Segment:
        """Our SYN or SYN-ACK with every option we offer (RFC 9293 §3.7.1,
        RFC 7323, RFC 2018). The SYN-ACK answers only what the peer offered."""
        cfg = self.config
        syn_ack = self.state is SYN_RECEIVED
        seg = self._make(self.iss, SYN | ACK if syn_ack else SYN, b"")
        seg.mss = local_mss(cfg.mss, self.local[0])
        if cfg.window_scaling and (not syn_ack or self._ws_ok):
            seg.wscale = self.rcv_wscale
        if cfg.sack and (not syn_ack or self._sack_ok):
            seg.sack_permitted = True
        if cfg.timestamps and (not syn_ack or self._ts_ok):
            seg.ts = (self._ts_now(now), self._ts_recent if syn_ack else 0)
        return seg

    def segments_to_send(self, *, now: float) -> list[Segment]:
        """Everything sendable now: control segments, SYN, data, FIN, ACK."""
        out = self._pending
        self._pending = []
        st = self.state
        if st is SYN_SENT or st is SYN_RECEIVED:
            if self.snd_nxt == self.iss:
                out.append(self._syn_segment(now))
                self._sent(sq.add(self.iss, 1), now, retransmit=self._retries > 0)
            elif self._ack_now and st is SYN_RECEIVED:
                out.append(self._make(self.snd_nxt, ACK, b"", now))
            return out
        if st is CLOSED:
            return out
        if st in SENDING:
            self._output_data(out, now)
        if self._ack_now:
            out.append(self._make(self._ack_seq(), ACK, b"", now))
        return out

    def _ack_seq(self) -> int:
        """The sequence number for a segment without data: SND.MAX (not a
        rewound SND.NXT, whose old number the peer would find unacceptable
        and drop with the ACK it carries), but not beyond the peer's window
        (RFC 9293 §3.10.7.4 acceptability; as Linux's tcp_acceptable_seq)."""
        una = self.snd_una
        if sq.sub(self.snd_max, una) <= self.snd_wnd:
            return self.snd_max
        return sq.add(una, self.snd_wnd)

    def _output_data(self, out: list[Segment], now: float) -> None:
        """Send data and FIN as the windows allow (RFC 9293 §3.8.6.2.1 sender
        SWS avoidance, §3.7.4 Nagle, RFC 5681 cwnd, RFC 6582 recovery)."""
        mss = self._seg_payload
        if self._rx_slow and self._sack_ok and self._ooo:
            # MUST-16: SACK blocks we carry eat into the payload.
            limit = MAX_SACK_BLOCKS_WITH_TS if self._ts_ok else MAX_SACK_BLOCKS
            mss -= sack_option_len(min(len(self._ooo), limit))
        buf = self._sendbuf
        buffered = len(buf)
        una = self.snd_una
        snd_base = self._snd_base
        fin_seq = self._fin_seq
        sb = self._sb
        if self._rexmit_una:
            # Fast retransmit / partial ACK (RFC 5681 §3.2, RFC 6582 §3.2,
            # RFC 6675 §5 step 4.2: the first segment presumed dropped).
            self._rexmit_una = False
            n = min(mss, buffered - sq.sub(una, snd_base))
            if n > 0 or fin_seq == una:
                self._retransmit(out, una, max(n, 0), now)
        sack_recovery = self._in_recovery and sb is not None
        if sack_recovery:
            self._sack_retransmit(out, mss, now)
        if (una == self.snd_max and now - self._last_send > self._rto
                and buffered > sq.sub(una, snd_base)):
            # RFC 5681 §4.1: new data after an idle period longer than the RTO.
            self._cc.on_idle_restart(now=now, rto=self._rto)
            self._last_send = now
        force = self._force_send
        self._force_send = False
        end = (snd_base + buffered) & MASK
        cc = self._cc
        gso_max = self.config.gso_max
        max_segs = self.config.gso_max_segs
        while True:
            nxt = self.snd_nxt
            avail = ((end - nxt + HALF) & MASK) - HALF  # seq.sub(end, nxt)
            if avail <= 0:
                # The FIN, like data, waits for room in the window (a closed
                # window is probed by the persist timer, FIN included).
                if (fin_seq is not None and nxt == fin_seq
                        and sq.sub(sq.add(una, self.snd_wnd), nxt) > 0):
                    out.append(self._data_segment(nxt, 0, now, True))
                    self._sent(sq.add(nxt, 1), now, retransmit=sq.lt(nxt, self.snd_max))
                elif force and fin_seq is not None and nxt == fin_seq == una:
                    self._probe(out, now)
                break
            if sb is not None and sack_recovery:
                # RFC 6675 §5 step (C) rule 2: new data while pipe allows.
                in_flight = sb.pipe(una, self.snd_max, self._high_rxt, mss)
            else:
                in_flight = ((nxt - una + HALF) & MASK) - HALF
            cwnd = cc.cwnd + self._inflate
            if cwnd < mss:
                cwnd = mss
            wnd_room = ((una + self.snd_wnd - nxt + HALF) & MASK) - HALF
            room = cwnd - in_flight
            if wnd_room < room:
                room = wnd_room
            n = avail if avail < mss else mss
            if room < n:
                n = room
            # Data sent before (go-back-N after a timeout) is resent as the
            # window allows: SWS avoidance and Nagle shape only new data.
            resend = nxt != self.snd_max and sq.lt(nxt, self.snd_max)
            if n < mss and n < avail:
                # RFC 9293 §3.8.6.2.1: neither a full segment nor all that is
                # queued fits; send only at least half the peer's largest
                # window, or when the persist timer forces it.
                if force and in_flight == 0:
                    force = False
                    if n <= 0:
                        self._probe(out, now)  # RFC 9293 §3.8.6.1 zero-window probe
                        break
                elif n <= 0 or wnd_room > room or (not resend and n < (self.max_snd_wnd >> 1)):
                    break
            elif n < mss and in_flight and not self.nodelay and not resend:
                break  # Nagle (RFC 9293 §3.7.4): one small segment in flight at a time
            gso = 0
            if n == mss and gso_max >= 2 * mss and room >= 2 * mss and avail >= 2 * mss:
                # Segmentation offload: the full segments the windows allow now, as one
                # (the transmit path cuts it), and the short rest of the queue with them
                # when it would go at once anyway (no Nagle, all of it fits).
                limit = min(avail, room, gso_max)
                if max_segs and limit > max_segs * mss:
                    limit = max_segs * mss
                n = limit - limit % mss
                rest = avail - n
                if 0 < rest < mss and n + rest <= limit and self.nodelay and not resend:
                    n += rest
                gso = mss
            fin = fin_seq is not None and n == avail
            seg = self._data_segment(nxt, n, now, fin)
            seg.gso_size = gso
            out.append(seg)
            self._sent((nxt + n + 1 if fin else nxt + n) & MASK, now, retransmit=resend)
            if fin:
                break
        # Data waits with nothing in flight: the persist timer will probe the
        # window or push the held-back bytes (RFC 9293 §3.8.6.1).
        if (self.snd_nxt == self.snd_una and self._t_persist == INF and self._t_rto == INF
                and (sq.lt(self.snd_nxt, end) or self.snd_nxt == fin_seq)):
            self._arm_persist(now)

    def _retransmit(self, out: list[Segment], sseq: int, n: int, now: float) -> None:
        out.append(self._data_segment(sseq, n, now))
        self.retransmits += 1
        if not self._ts_ok:
            self._rtt_seq = None  # Karn's rule (timestamps disambiguate, RFC 7323 §4)
        end = sq.add(sseq, n)
        if sq.gt(end, self._high_rxt):
            self._high_rxt = end
        if self._t_rto == INF:
            self._t_rto = now + self._rto
        self._last_send = now

    def _sack_retransmit(self, out: list[Segment], mss: int, now: float) -> None:
        """RFC 6675 §5 step (C): while cwnd - pipe >= 1 SMSS, resend what
        NextSeg rule 1 finds (new data, rule 2, follows in the main loop)."""
        sb = self._sb
        assert sb is not None
        una = self.snd_una
        cwnd = self._cc.cwnd
        end_data = sq.add(self._snd_base, len(self._sendbuf))
        for _ in range(64):  # bounded per call; the next ACK resumes
            if cwnd - sb.pipe(una, self.snd_max, self._high_rxt, mss) < mss:
                return
            found = sb.next_seg(una, self.snd_max, self._high_rxt, mss)
            if found is None:
                return
            sseq, n = found
            n = min(n, sq.sub(end_data, sseq))
            if n <= 0:
                return  # only our FIN is missing: the RTO covers it
            self._retransmit(out, sseq, n, now)

    def _arm_persist(self, now: float) -> None:
        """The persist interval: the RTO with exponential back-off, bounded by
        ``persist_max`` (RFC 9293 §3.8.6.1, RFC 1122 §4.2.2.17)."""
        interval = self._rto * (1 << min(self._persist_backoff, 16))
        self._t_persist = now + min(max(interval, self.config.rto_min), self.config.persist_max)

    def _data_segment(self, sseq: int, n: int, now: float, fin: bool | None = None) -> Segment:
        """A data (and/or FIN) segment carrying bytes [sseq, sseq + n)."""
        payload = self._sendbuf.peek(sq.sub(sseq, self._snd_base), n) if n > 0 else b""
        if fin is None:
            fin = self._fin_seq is not None and sq.add(sseq, n) == self._fin_seq
        flags = ACK | PSH if n else ACK
        if fin:
            flags |= FIN
        return self._make(sseq, flags, payload, now)

    def _probe(self, out: list[Segment], now: float) -> None:
        """One byte beyond a zero window (RFC 9293 §3.8.6.1). It is sent at
        SND.UNA without advancing SND.NXT, so the RTO does not run for it;
        SND.MAX covers it so that an ACK of it is acceptable."""
        una = self.snd_una
        if una == self._fin_seq:
            out.append(self._data_segment(una, 0, now, True))  # only the FIN is left
        else:
            out.append(self._data_segment(una, 1, now, False))
        end = sq.add(una, 1)
        if sq.gt(end, self.snd_max):
            self.snd_max = end
        self._last_send = now
        self._arm_persist(now)

    def _sent(self, new_nxt: int, now: float, *, retransmit: bool) -> None:
        """Bookkeeping after sending up to ``new_nxt``: SND.MAX, the RTO timer
        (RFC 6298 §5.1), and Karn's timed segment."""
        self.snd_nxt = new_nxt
        if 0 < ((new_nxt - self.snd_max) & MASK) < HALF:  # seq.gt(new_nxt, SND.MAX)
            self.snd_max = new_nxt
            if self._rtt_seq is None and not retransmit:
                self._rtt_seq = new_nxt
                self._rtt_time = now
        if retransmit:
            self.retransmits += 1
            if not self._ts_ok:
                self._rtt_seq = None
        if self._t_rto == INF:
            self._t_rto = now + self._rto
        self._t_persist = INF
        self._last_send = now
