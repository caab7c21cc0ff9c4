"""NewReno window growth: slow start and AIMD congestion avoidance (RFC 5681, RFC 6582).

Loss recovery itself (which segment to resend, when recovery ends) is the
connection's job; this class only moves ``cwnd`` and ``ssthresh``.
"""

from __future__ import annotations

from .base import CongestionControl


class NewReno(CongestionControl):
    name = "newreno"

    def __init__(self, *, mss: int, initial_window_segments: int = 10) -> None:
        super().__init__(mss=mss, initial_window_segments=initial_window_segments)
        self._bytes_acked = 0  # RFC 3465 §2.1 counter for congestion avoidance

    def on_ack(self, acked: int, *, now: float, rtt: float | None, in_flight: int) -> None:
        super().on_ack(acked, now=now, rtt=rtt, in_flight=in_flight)
        if acked <= 0 or not self.cwnd_limited(in_flight):
            return  # RFC 7661 §4.3: no growth for a window that was not used
        if self.in_slow_start:
            acked = self.slow_start(acked)
        # RFC 5681 §3.1 congestion avoidance, counted in bytes (RFC 3465 §2.1):
        # one SMSS per cwnd of acknowledged data, i.e. about one per RTT.
        self._bytes_acked += acked
        while self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def loss_ssthresh(self, in_flight: int) -> int:
        # RFC 5681 §3.1 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS).
        return max(in_flight // 2, 2 * self.mss)

    def on_congestion_event(self, *, now: float, in_flight: int) -> None:
        super().on_congestion_event(now=now, in_flight=in_flight)
        self._bytes_acked = 0

    def on_rto(self, *, now: float, in_flight: int) -> None:
        super().on_rto(now=now, in_flight=in_flight)
        self._bytes_acked = 0
