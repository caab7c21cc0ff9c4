"""The transmission control block (RFC 9293 §3.3.1): every variable of one
connection, declared and initialised in one place.

``Connection`` is built in layers that share this block: ``Output``
(output.py) builds segments, ``Timers`` (timers.py) fires deadlines, and
``Connection`` (connection.py) runs the state machine and the API.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from . import seq as sq
from .buffers import Reassembly, SendBuffer
from .config import TcpConfig
from .congestion import make_congestion
from .events import ConnectionClosed, Event
from .options import DEFAULT_MSS_V4, default_mss, receive_window_scale
from .rtt import RttEstimator
from .sack import Scoreboard
from .segment import Segment

if TYPE_CHECKING:
    from .connection import Connection

INF: Final = float("inf")
MASK: Final = sq.MASK
# Quick ACKs at the start of a connection (as Linux), so slow start is not slowed.
QUICKACK_SEGMENTS: Final = 16


class State(enum.IntEnum):
    """RFC 9293 §3.3.2 connection states."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


CLOSED: Final = State.CLOSED
LISTEN: Final = State.LISTEN
SYN_SENT: Final = State.SYN_SENT
SYN_RECEIVED: Final = State.SYN_RECEIVED
ESTABLISHED: Final = State.ESTABLISHED
FIN_WAIT_1: Final = State.FIN_WAIT_1
FIN_WAIT_2: Final = State.FIN_WAIT_2
CLOSE_WAIT: Final = State.CLOSE_WAIT
CLOSING: Final = State.CLOSING
LAST_ACK: Final = State.LAST_ACK
TIME_WAIT: Final = State.TIME_WAIT

# States in which we may (re)send data or our FIN.
SENDING: Final = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
# States in which the peer's data is still accepted (RFC 9293 §3.10.7.4 seventh).
RECEIVING: Final = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})


class Tcb:
    """The variables; methods here are the few every layer needs."""

    __slots__ = (
        "state", "local", "remote", "listener", "config", "events", "wake",
        "write_watermark", "nodelay",
        # counters for statistics: segments resent, retransmission timeouts, fast recoveries,
        # segments taken by header prediction and by the general path of receive
        "retransmits", "timeouts", "recoveries", "fast_path", "slow_path",
        # send sequence space (RFC 9293 §3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "snd_wscale", "_snd_base", "_sendbuf", "_fin_seq",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "rcv_wscale", "_rcv_off", "_ooo", "_ooo_fin",
        "_held", "_paused", "_eof_pending", "_eof_delivered", "_rx_slow",
        # options
        "mss", "_seg_payload", "_ws_ok", "_sack_ok", "_ts_ok", "_ts_offset", "_ts_recent",
        "_ts_recent_time", "_last_ack_sent",
        # timers and their state
        "_t_rto", "_t_delack", "_t_persist", "_t_keepalive", "_t_2msl",
        "_retries", "_persist_backoff", "_persist_probes", "_keepalive_probes",
        "_force_send",
        # ack generation
        "_ack_now", "_rcv_unacked", "_rcv_mss", "_quickacks", "_challenge_count",
        "_challenge_window", "_pending",
        # rtt, congestion and recovery
        "_rtt", "_rto", "_cc", "_sb", "_rtt_seq", "_rtt_time", "_dupacks", "_in_recovery",
        "_recover", "_high_rxt", "_eifel_ts", "_inflate", "_rexmit_una", "_last_send", "_last_rcv",
        # lifecycle
        "_active", "_app_closed", "_closed_reported", "_soft_error",
    )

    def __init__(self, *, local: tuple[bytes, int], remote: tuple[bytes, int], iss: int,
                 config: TcpConfig, now: float, events: deque[Event] | None = None,
                 listener: object = None) -> None:
        self.state = CLOSED
        self.local = local
        self.remote = remote
        self.listener = listener
        self.config = config
        self.events: deque[Event] = deque() if events is None else events
        self.wake: Callable[[Any], None] | None = None
        self.write_watermark: int | None = None
        self.nodelay = config.nodelay  # per connection, like TCP_NODELAY
        self.retransmits = 0
        self.timeouts = 0
        self.recoveries = 0
        self.fast_path = 0
        self.slow_path = 0

        iss &= MASK
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self._snd_base = sq.add(iss, 1)  # sequence number of the send buffer's offset 0
        self._sendbuf = SendBuffer()
        self._fin_seq: int | None = None

        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised
        self.rcv_wscale = receive_window_scale(config.rcv_buf) if config.window_scaling else 0
        self._rcv_off = 0  # stream offset of rcv_nxt
        self._ooo = Reassembly(max_bytes=config.rcv_buf, max_pieces=config.max_ooo_segments)
        self._ooo_fin: int | None = None  # stream offset of a FIN that arrived out of order
        self._held = bytearray()  # in-order bytes kept while reading is paused
        self._paused = False
        # True while in-order data cannot take the fast path: out-of-order
        # data or FIN queued, reading paused, or the application closed.
        self._rx_slow = False
        self._eof_pending = False
        self._eof_delivered = False

        self.mss = default_mss(remote[0])  # peer's MSS (what we may send), before options
        self._seg_payload = self.mss
        self._ws_ok = False
        self._sack_ok = False
        self._ts_ok = False
        # RFC 7323 §5.4: a per-connection offset for TSval; the ISS is already
        # an unpredictable per-connection value (RFC 6528).
        self._ts_offset = iss
        self._ts_recent = 0
        self._ts_recent_time = now
        self._last_ack_sent = 0

        self._t_rto = INF
        self._t_delack = INF
        self._t_persist = INF
        self._t_keepalive = INF
        self._t_2msl = INF
        self._retries = 0
        self._persist_backoff = 0
        self._persist_probes = 0
        self._keepalive_probes = 0
        self._force_send = False

        self._ack_now = False
        self._rcv_unacked = 0
        self._rcv_mss = DEFAULT_MSS_V4
        self._quickacks = QUICKACK_SEGMENTS
        self._challenge_count = 0
        self._challenge_window = -INF
        self._pending: list[Segment] = []  # control segments built eagerly (RST, challenge ACK)

        self._rtt = RttEstimator(initial=config.rto_initial, minimum=config.rto_min,
                                 maximum=config.rto_max)
        self._rto = self._rtt.rto  # cached: read on every ACK, changes only on samples
        self._cc = make_congestion(config.congestion, mss=config.mss,
                                   initial_window_segments=config.initial_window_segments)
        self._sb: Scoreboard | None = None  # with SACK: RFC 6675 loss recovery
        self._rtt_seq: int | None = None  # Karn: the segment end being timed
        self._rtt_time = 0.0
        self._dupacks = 0
        self._in_recovery = False
        self._recover = iss
        self._high_rxt = iss
        self._eifel_ts: int | None = None  # RFC 3522 RetransmitTS
        self._inflate = 0
        self._rexmit_una = False
        self._last_send = now
        self._last_rcv = now

        self._active = False
        self._app_closed = False
        self._closed_reported = False
        self._soft_error: str | None = None  # the last ICMP error (RFC 1122 §4.2.3.9)

    def __repr__(self) -> str:
        return (f"<Connection {self.local[1]}->{self.remote[1]} {self.state.name} "
                f"una={self.snd_una} nxt={self.snd_nxt} rcv={self.rcv_nxt}>")

    def _notify(self) -> None:
        wake = self.wake
        if wake is not None:
            wake(self)

    def _to_closed(self, error: BaseException | None) -> None:
        self.state = CLOSED
        self._t_rto = self._t_persist = self._t_keepalive = self._t_delack = self._t_2msl = INF
        self._ack_now = False
        self._report_closed(error)

    def _report_closed(self, error: BaseException | None) -> None:
        if not self._closed_reported:
            self._closed_reported = True
            self.events.append(ConnectionClosed(cast("Connection", self), error))
