"""XdpTransport against a real core Connection, without a network: what asyncio promises
about reading while paused, and how closing ends the connection."""

from __future__ import annotations

import asyncio

from aioxdp.tcp.connection import Connection
from aioxdp.tcp.tcb import CLOSED, FIN_WAIT_1
from aioxdp.transport import SEND_BUFFER, XdpTransport

from .tcp.packetscript import passive


class _Stack:
    """What a transport asks of its NetStack: a flush soon, and to be forgotten."""

    def wakeup(self) -> None:
        pass

    def forget(self, conn: Connection) -> None:
        pass


class _PausesAtOnce(asyncio.Protocol):
    def __init__(self) -> None:
        self.heard: list[object] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.heard.append(data)

    def eof_received(self) -> bool:
        self.heard.append("eof")
        return True


def _paused_transport() -> tuple[XdpTransport, _PausesAtOnce, Connection]:
    conn = passive().conn  # ESTABLISHED
    protocol = _PausesAtOnce()
    transport = XdpTransport(asyncio.get_running_loop(), _Stack(), conn,  # type: ignore[arg-type]
                             protocol)
    transport._start()
    # the core queued these before connection_made paused reading (one batch brought the
    # handshake's ACK and the first bytes); the stack dispatches them after it
    transport._data_received(b"first")
    transport._eof_received()
    return transport, protocol, conn


def test_events_dispatched_after_pause_reading_wait_for_resume_reading() -> None:
    async def main() -> None:
        transport, protocol, _conn = _paused_transport()
        assert not transport.is_reading()
        await asyncio.sleep(0)
        assert protocol.heard == []
        transport.resume_reading()
        assert transport.is_reading() and protocol.heard == []  # not from inside the call
        await asyncio.sleep(0)
        assert protocol.heard == [b"first", "eof"]
        transport.close()

    asyncio.run(main())


def test_closing_with_bytes_never_read_resets_as_a_socket_does() -> None:
    """RFC 2525 §2.17, Linux tcp_close: unread data makes close() a RST, not a FIN."""
    async def main() -> None:
        transport, protocol, conn = _paused_transport()
        transport.close()
        assert conn.state is CLOSED and protocol.heard == []
        read, _protocol, conn = _paused_transport()
        read.resume_reading()
        await asyncio.sleep(0)
        read.close()
        assert conn.state is FIN_WAIT_1

    asyncio.run(main())


def test_abort_drops_what_is_beyond_the_socket_send_buffer() -> None:
    """asyncio's abort() clears the transport's own write buffer; what a socket's send
    buffer (SEND_BUFFER here) holds still goes out before the FIN."""
    async def main() -> None:
        conn = passive().conn
        transport = XdpTransport(asyncio.get_running_loop(), _Stack(), conn,  # type: ignore[arg-type]
                                 asyncio.Protocol())
        transport._start()
        transport.write(bytes(SEND_BUFFER + 5000))
        assert transport.get_write_buffer_size() == 5000
        transport.abort()
        assert conn.send_buffer_size == SEND_BUFFER
        assert conn.state is FIN_WAIT_1  # a FIN after those bytes, no RST

    asyncio.run(main())
