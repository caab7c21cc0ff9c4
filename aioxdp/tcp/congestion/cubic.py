"""CUBIC congestion control (RFC 9438).

Slow start is the standard one with HyStart++ (RFC 9406, recommended by
RFC 9438 §4.10) in the first slow start: when the round-trip time starts to
climb, growth slows to a quarter for a few rounds and then congestion
avoidance begins, instead of overshooting into a burst of losses. In
congestion avoidance the window follows the cubic
W_cubic(t) = C*(t - K)^3 + W_max of the time since the stage began, never
below the Reno-friendly estimate W_est. The formulas work in segments, as
the RFC writes them; ``cwnd`` stays in bytes, with the sub-byte remainder of
each per-ACK increment carried so that slow growth is not rounded away.
"""

from __future__ import annotations

from typing import Final

from .base import CongestionControl

C: Final = 0.4  # RFC 9438 §5.1: segments / s^3
BETA: Final = 0.7  # RFC 9438 §4.6: beta_cubic
# RFC 9438 §4.3: AIMD increase that matches Reno's average rate at this beta.
ALPHA: Final = 3 * (1 - BETA) / (1 + BETA)
RTT_GAIN: Final = 0.125  # smoothing of the RTT the curve looks ahead by (RFC 6298 alpha)

# RFC 9406 §4.3 HyStart++ constants.
MIN_RTT_THRESH: Final = 0.004
MAX_RTT_THRESH: Final = 0.016
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5
INF: Final = float("inf")


class HyStart:
    """HyStart++ state (RFC 9406 §4.2) for one slow start.

    A round ends when the bytes outstanding at its start have been
    acknowledged (the controller does not see sequence numbers; this stands
    in for "SND.UNA passes windowEnd = SND.NXT").
    """

    __slots__ = ("round_left", "last_min", "cur_min", "samples", "css_baseline", "css_rounds")

    def __init__(self) -> None:
        self.round_left = 0
        self.last_min = INF  # lastRoundMinRTT
        self.cur_min = INF  # currentRoundMinRTT
        self.samples = 0  # rttSampleCount
        self.css_baseline: float | None = None  # cssBaselineMinRtt; None: not in CSS
        self.css_rounds = 0

    def next_round_if_due(self, in_flight: int) -> bool:
        """Start a new round when the last one is acknowledged; True when that
        completes CSS_ROUNDS rounds of conservative slow start."""
        if self.round_left > 0:
            return False
        self.round_left = in_flight
        self.last_min, self.cur_min, self.samples = self.cur_min, INF, 0
        if self.css_baseline is None:
            return False
        self.css_rounds += 1
        return self.css_rounds >= CSS_ROUNDS

    def sample(self, acked: int, rtt: float | None) -> None:
        """After this ACK's growth: track the round's minimum RTT and switch
        between slow start and CSS on a delay rise or fall."""
        self.round_left -= acked
        if rtt is not None:
            self.cur_min = min(self.cur_min, rtt)
            self.samples += 1
        if self.samples < N_RTT_SAMPLE or self.cur_min == INF:
            return
        if self.css_baseline is None:
            if self.last_min < INF:
                thresh = max(MIN_RTT_THRESH, min(self.last_min / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
                if self.cur_min >= self.last_min + thresh:
                    self.css_baseline, self.css_rounds = self.cur_min, 0  # to CSS
        elif self.cur_min < self.css_baseline:
            self.css_baseline = None  # the delay rise was spurious: back to slow start


class Cubic(CongestionControl):
    name = "cubic"

    def __init__(self, *, mss: int, initial_window_segments: int = 10) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self.w_max: float | None = None  # bytes; None: take cwnd_epoch (RFC 9438 §4.8)
        self.cwnd_prior: float | None = None  # cwnd when the last congestion event hit
        self.k = 0.0  # seconds from the epoch start to the plateau W_max
        self.t_epoch: float | None = None  # start of the current avoidance stage
        self.cwnd_epoch = 0
        self.w_est = 0.0  # bytes (RFC 9438 §4.3)
        self.alpha = ALPHA
        self.srtt: float | None = None
        self._last_ack: float | None = None
        self._carry = 0.0  # fractional bytes of growth not yet added to cwnd
        self.hystart: HyStart | None = HyStart()  # None after the first slow start

    # --- the curve, in bytes ------------------------------------------------------------------

    def w_cubic(self, t: float) -> float:
        """RFC 9438 §4.2 eq. 1 at ``t`` seconds into the stage, in bytes."""
        assert self.w_max is not None
        return (C * (t - self.k) ** 3) * self.mss + self.w_max

    def _start_epoch(self, now: float) -> None:
        """The congestion avoidance stage begins (RFC 9438 §4.2, §4.3, §4.8)."""
        self.t_epoch = now
        self.cwnd_epoch = self.cwnd
        self.w_est = float(self.cwnd)
        self.alpha = ALPHA
        self._carry = 0.0
        if self.w_max is None or self.w_max < self.cwnd:
            # After a timeout or a slow start that ended without loss the
            # plateau is the current window: K = 0, pure convex growth
            # (RFC 9438 §4.8, §4.10).
            if self.w_max is None and self.cwnd_prior is None:
                self.cwnd_prior = float(self.cwnd)
            self.w_max = float(self.cwnd)
            self.k = 0.0
        else:
            # RFC 9438 §4.2 eq. 2: K = cbrt((W_max - cwnd_epoch) / C), in segments.
            self.k = ((self.w_max - self.cwnd_epoch) / self.mss / C) ** (1 / 3)

    # --- CongestionControl --------------------------------------------------------------------

    def on_ack(self, acked: int, *, now: float, rtt: float | None, in_flight: int) -> None:
        super().on_ack(acked, now=now, rtt=rtt, in_flight=in_flight)
        if rtt is not None:
            self.srtt = rtt if self.srtt is None else self.srtt + RTT_GAIN * (rtt - self.srtt)
        last, self._last_ack = self._last_ack, now
        if acked <= 0:
            return
        if not self.cwnd_limited(in_flight):
            # RFC 9438 §5.8: no growth while application-limited, and t must not
            # count that time: push the epoch forward by it.
            if self.t_epoch is not None and last is not None:
                self.t_epoch += now - last
            return
        if self.in_slow_start:
            if self.hystart is not None:
                self._hystart_slow_start(acked, rtt, in_flight)
                return
            acked = self.slow_start(acked)
            if acked == 0:
                return
        if self.t_epoch is None:
            self._start_epoch(now)
        self._avoid(acked, now)

    def _hystart_slow_start(self, acked: int, rtt: float | None, in_flight: int) -> None:
        """RFC 9406 §4.2: slow start, or conservative slow start (a quarter of the
        growth) once the RTT has risen, then congestion avoidance from cwnd.
        As in the RFC, each ACK grows the window first, then moves the state."""
        hs = self.hystart
        assert hs is not None
        css_done = hs.next_round_if_due(in_flight)
        if hs.css_baseline is None:
            self.slow_start(acked)
        else:
            grow = min(acked, 2 * self.mss) // CSS_GROWTH_DIVISOR
            self.cwnd += max(0, min(grow, self.ssthresh - self.cwnd))
        if css_done:
            self.ssthresh = self.cwnd  # CSS done: congestion avoidance from here
            self.hystart = None
        else:
            hs.sample(acked, rtt)

    def _avoid(self, acked: int, now: float) -> None:
        assert self.t_epoch is not None
        cwnd = self.cwnd + self._carry
        # RFC 9438 §4.3: W_est += alpha * segments_acked / cwnd (segments);
        # alpha becomes 1 once W_est reaches the window before the last reduction.
        self.w_est += self.alpha * acked * self.mss / cwnd
        if self.cwnd_prior is not None and self.w_est >= self.cwnd_prior:
            self.alpha = 1.0
        t = now - self.t_epoch
        if self.w_cubic(t) < self.w_est:
            new = self.w_est  # Reno-friendly region
        else:
            # RFC 9438 §4.4/§4.5: aim for W_cubic one RTT ahead, clamped to
            # [cwnd, 1.5 cwnd]; close (target - cwnd)/cwnd per segment acked.
            target = self.w_cubic(t + (self.srtt or 0.0))
            target = min(max(target, cwnd), 1.5 * cwnd)
            new = cwnd + (target - cwnd) * acked / cwnd
        if new > cwnd:
            self.cwnd = int(new)
            self._carry = new - self.cwnd

    def loss_ssthresh(self, in_flight: int) -> int:
        # RFC 9438 §4.6: ssthresh = flight_size * beta_cubic, at least 2 SMSS.
        return max(int(in_flight * BETA), 2 * self.mss)

    def _remember_peak(self, cwnd: int) -> None:
        """RFC 9438 §4.6 cwnd_prior and §4.7 fast convergence of W_max, for
        a reduction from ``cwnd``."""
        self.cwnd_prior = float(cwnd)
        if self.w_max is not None and cwnd < self.w_max:
            # Still below the last plateau: release bandwidth to newer flows.
            self.w_max = cwnd * (1 + BETA) / 2
        else:
            self.w_max = float(cwnd)

    # The base class saves the state for undo() first, so the bookkeeping
    # below runs after it, on the window from before the reduction.

    def on_congestion_event(self, *, now: float, in_flight: int) -> None:
        cwnd = self.cwnd
        self.hystart = None  # RFC 9406 §4.2: a loss ends slow start, HyStart++ with it
        super().on_congestion_event(now=now, in_flight=in_flight)
        self._remember_peak(cwnd)
        self.t_epoch = None
        self._carry = 0.0

    def on_rto(self, *, now: float, in_flight: int) -> None:
        # RFC 9438 §4.8: Reno's window collapse with a beta_cubic ssthresh;
        # the next stage starts with K = 0 and W_max = cwnd_epoch.
        cwnd, first = self.cwnd, not self._after_rto
        self.hystart = None  # later slow starts are the standard one
        super().on_rto(now=now, in_flight=in_flight)
        if first:
            self.cwnd_prior = float(cwnd)
        self.w_max = None
        self.t_epoch = None
        self._carry = 0.0

    def save_state(self) -> dict[str, object]:
        # RFC 9438 §4.9: W_max, K, t_epoch, cwnd_epoch, W_est and cwnd_prior with the window.
        state = super().save_state()
        for name in ("w_max", "k", "t_epoch", "cwnd_epoch", "w_est", "alpha", "cwnd_prior"):
            state[name] = getattr(self, name)
        return state

    def on_idle_restart(self, *, now: float, rto: float) -> None:
        super().on_idle_restart(now=now, rto=rto)
        self.t_epoch = None  # slow start back up, then a fresh stage
        self._carry = 0.0

    def set_mss(self, mss: int) -> None:
        old = self.mss
        super().set_mss(mss)
        scale = mss / old
        if self.w_max is not None:
            self.w_max *= scale
        if self.cwnd_prior is not None:
            self.cwnd_prior *= scale
        self.w_est *= scale
