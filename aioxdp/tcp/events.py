"""Events the core hands to the layer above, in the order they happened.

Each names the connection it concerns, so one queue can serve a whole
connection table; the asyncio layer maps them onto Protocol callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection


@dataclass(frozen=True, slots=True)
class ConnectionEstablished:
    """The handshake completed. ``listener`` is the listening key for a passive open."""

    conn: Connection
    listener: Any = None


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order bytes from the peer (only while reading is not paused)."""

    conn: Connection
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer's FIN arrived in order, after all of its data: no more bytes will come."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class SendBufferDrained:
    """Queued-but-unacknowledged bytes fell to ``conn.write_watermark`` or below."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is gone. ``error`` is None for an orderly close, else
    ConnectionResetError (RST), ConnectionRefusedError (RST to our SYN),
    TimeoutError (retransmissions or keepalive gave up) or ConnectionAbortedError."""

    conn: Connection
    error: BaseException | None = None


Event = ConnectionEstablished | DataReceived | EndOfStream | SendBufferDrained | ConnectionClosed
