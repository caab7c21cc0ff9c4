"""Events the core hands to the layer above, in the order they happened.

Each names the connection it concerns, so one queue can serve a whole
connection table; the asyncio layer maps them onto Protocol callbacks.

Plain classes rather than frozen dataclasses: one is made per delivered
segment, and a frozen dataclass costs some 300 ns to build (its ``__init__``
goes through ``object.__setattr__``) where a plain compiled class costs 50.
They compare equal by kind and fields, as the dataclasses did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection


class Event:
    """The base of every event: the connection it concerns."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def fields(self) -> tuple[Any, ...]:
        return (self.conn,)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Event) \
            and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.fields()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.fields()!r}"


class ConnectionEstablished(Event):
    """The handshake completed. ``listener`` is the listening key for a passive open."""

    __slots__ = ("listener",)

    def __init__(self, conn: Connection, listener: Any = None) -> None:
        self.conn = conn
        self.listener = listener

    def fields(self) -> tuple[Any, ...]:
        return (self.conn, self.listener)


class DataReceived(Event):
    """In-order bytes from the peer (only while reading is not paused)."""

    __slots__ = ("data",)

    def __init__(self, conn: Connection, data: bytes) -> None:
        self.conn = conn
        self.data = data

    def fields(self) -> tuple[Any, ...]:
        return (self.conn, self.data)


class EndOfStream(Event):
    """The peer's FIN arrived in order, after all of its data: no more bytes will come."""

    __slots__ = ()


class SendBufferDrained(Event):
    """Queued-but-unacknowledged bytes fell to ``conn.write_watermark`` or below."""

    __slots__ = ()


class ConnectionClosed(Event):
    """The connection is gone. ``error`` is None for an orderly close, else
    ConnectionResetError (RST), ConnectionRefusedError (RST to our SYN),
    TimeoutError (retransmissions or keepalive gave up) or ConnectionAbortedError."""

    __slots__ = ("error",)

    def __init__(self, conn: Connection, error: BaseException | None = None) -> None:
        self.conn = conn
        self.error = error

    def fields(self) -> tuple[Any, ...]:
        return (self.conn, self.error)
