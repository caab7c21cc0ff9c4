"""The interface between a connection and its congestion controller.

The connection owns loss detection and recovery (RFC 6675, RFC 6582, RFC 8985);
the controller owns only ``cwnd`` and ``ssthresh`` and how they move. All
quantities are bytes; time comes in as ``now`` (seconds, float).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class CongestionControl(ABC):
    name: str = ""

    def __init__(self, *, mss: int, initial_window_segments: int = 10) -> None:
        self.mss = mss
        # RFC 6928 / RFC 5681 §3.1: IW in bytes, SSTHRESH "arbitrarily high".
        self.cwnd = initial_window_segments * mss
        self.ssthresh = 1 << 30

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    @abstractmethod
    def on_ack(self, acked: int, *, now: float, rtt: float | None, in_flight: int) -> None:
        """New data was cumulatively acknowledged outside loss recovery.

        ``acked`` bytes were newly acknowledged, ``rtt`` is this ACK's RTT
        sample (None under Karn's rule), ``in_flight`` the bytes outstanding
        before the ACK (growth is skipped when the window was not the limit,
        RFC 7661 §4.1).
        """

    @abstractmethod
    def on_congestion_event(self, *, now: float, in_flight: int) -> None:
        """Loss detected by duplicate ACKs/SACK/RACK: entering fast recovery.

        Called once per window of data (the connection enforces that).
        """

    @abstractmethod
    def on_recovery_exit(self, *, now: float) -> None:
        """Fast recovery ended (the recovery point was acknowledged, RFC 6582 §3.2 step 3)."""

    @abstractmethod
    def on_rto(self, *, now: float, in_flight: int) -> None:
        """The retransmission timer expired (RFC 5681 §3.1 eq. 4: cwnd to one segment)."""

    def on_idle_restart(self, *, now: float, rto: float) -> None:
        """Sending resumes after more than one RTO of silence (RFC 5681 §4.1):
        restart from min(IW, cwnd)."""
        self.cwnd = min(self.cwnd, 10 * self.mss)

    def set_mss(self, mss: int) -> None:
        """The effective MSS changed (handshake done, PMTU): rescale byte counts."""
        if mss != self.mss:
            self.cwnd = max(mss, self.cwnd * mss // self.mss)
            self.mss = mss
