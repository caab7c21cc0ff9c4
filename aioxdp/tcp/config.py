"""Tunables of the TCP core, with the defaults Linux uses where an RFC leaves a choice."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TcpConfig:
    # Segment sizes. mss is what we announce over IPv4, the interface MTU less 40 at
    # most (RFC 9293 §3.7.1); IPv6 connections announce 20 bytes less (options.local_mss).
    mss: int = 1460
    # Floor for the peer's announced MSS: Linux's net.ipv4.tcp_min_snd_mss, whose
    # default is 48 (CVE-2019-11479 asked for a floor; RFC 9293 MUST-16: never send
    # more than the peer announced, so a floor above what peers announce breaks them).
    # Raise it to refuse tiny-MSS peers' costs.
    min_mss: int = 48
    # Floor of the MSS an ICMP "fragmentation needed" may lower a connection to: a
    # forged one must not cut it to tiny segments (Linux: route min_pmtu, 552 bytes).
    min_pmtu_mss: int = 536

    # Buffers (bytes). The receive buffer bounds the advertised window and the
    # out-of-order queue; the send buffer bound is enforced by the transport.
    rcv_buf: int = 256 * 1024
    max_ooo_segments: int = 256  # TCP-CHECKLIST 15

    # Options offered in our SYN / SYN-ACK.
    window_scaling: bool = True
    sack: bool = True
    timestamps: bool = True

    # Segmentation offload: the largest payload of one data segment handed to the
    # transmit path, which cuts it into wire segments of the MSS (Segment.gso_size).
    # 0: none (the core emits wire-sized segments). Set by the I/O layer that can cut.
    gso_max: int = 0
    # ... and into how many wire segments at most (Linux's gso_max_segs): a small MSS
    # must not make one such segment more frames than the transmit path takes at once.
    # 0: no bound beyond gso_max.
    gso_max_segs: int = 0

    # Nagle (RFC 9293 §3.7.4); asyncio's transports set TCP_NODELAY, so do we.
    nodelay: bool = True
    # Delayed ACK (RFC 9293 §3.8.6.3; RFC 1122 4.2.3.2): bound on the delay in seconds.
    delayed_ack: float = 0.04

    # Retransmission timer (RFC 6298). Linux's floor of 200 ms rather than the RFC's 1 s.
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    max_retransmits: int = 15  # then the connection fails with TimeoutError
    syn_retries: int = 6

    # TIME-WAIT lasts 2*MSL (RFC 9293 §3.4.2).
    msl: float = 30.0

    # Keepalive (RFC 9293 §3.8.4, RFC 1122 4.2.3.6): off unless idle is set.
    keepalive_idle: float | None = None
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9

    # Persist timer bound for zero-window probes (RFC 9293 §3.8.6.1).
    persist_max: float = 60.0

    # Congestion control: "cubic" or "newreno" (aioxdp.tcp.congestion).
    congestion: str = "cubic"
    initial_window_segments: int = 10  # RFC 6928

    # Connection table limits (TCP-CHECKLIST 23, 24).
    max_connections: int = 65536
    syn_backlog: int = 1024
