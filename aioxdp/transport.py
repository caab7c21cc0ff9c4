"""asyncio transports and servers over the userspace TCP core.

A thin shell, as aioquic's asyncio layer is over its connection: the
``Connection`` owns every byte and timer; this module turns core events into
Protocol callbacks and Transport calls into core calls, with asyncio's own
flow-control mix-in (``_FlowControlMixin``) so that write-buffer limits,
``pause_writing``/``resume_writing`` and their error routing behave exactly
as on asyncio's socket transports (and so ``loop.sendfile``'s fallback and
``asyncio.sslproto`` accept these transports).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import sys
from asyncio import sslproto, transports
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .tcp.connection import Connection

if TYPE_CHECKING:
    from .stack import Listener, NetStack

logger = logging.getLogger("aioxdp")

# Bytes the core may hold unacknowledged before they count against the
# transport's write buffer: the equivalent of a kernel socket's send buffer
# (net.ipv4.tcp_wmem's default). Without it every byte in flight would count
# as "buffered" and a sender would pause once a window is in flight.
SEND_BUFFER = 256 * 1024


def sockaddr(addr: bytes, port: int) -> tuple[Any, ...]:
    """The address tuple asyncio users expect from getpeername()/getsockname().

    A wildcard listener (``b""``: every address of the interface) shows as
    ``("0.0.0.0", port)``, as a socket bound to INADDR_ANY does.
    """
    if not addr:
        return ("0.0.0.0", port)
    if len(addr) == 16:
        return (str(ipaddress.IPv6Address(addr)), port, 0, 0)
    return (str(ipaddress.IPv4Address(addr)), port)


class XdpSocket:
    """A stand-in for ``get_extra_info("socket")`` and ``Server.sockets``.

    There is no kernel socket behind a bypass connection, but libraries read
    these (aiohttp sets TCP_NODELAY and SO_KEEPALIVE, prints listening
    addresses). Options that mean something to the core are applied to it;
    others are remembered and read back, as a socket would.
    """

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, local: tuple[bytes, int], remote: tuple[bytes, int] | None = None,
                 conn: Connection | None = None) -> None:
        self.family = socket.AF_INET6 if len(local[0]) == 16 else socket.AF_INET
        self._local = local
        self._remote = remote
        self._conn = conn
        self._options: dict[tuple[int, int], int | bytes] = {}
        # SO_LINGER on with a zero timeout: closing resets (Linux tcp_close -> tcp_disconnect)
        self.reset_on_close = False

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> tuple[Any, ...]:
        return sockaddr(*self._local)

    def getpeername(self) -> tuple[Any, ...]:
        if self._remote is None:
            raise OSError(107, "Transport endpoint is not connected")
        return sockaddr(*self._remote)

    def setsockopt(self, level: int, option: int, value: int | bytes, *_: object) -> None:
        self._options[(level, option)] = value if isinstance(value, bytes) else int(value)
        if self._conn is not None and (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            self._conn.nodelay = bool(value)
        if (level, option) == (socket.SOL_SOCKET, socket.SO_LINGER) and isinstance(value, bytes):
            onoff, seconds = struct.unpack_from("ii", value)
            self.reset_on_close = bool(onoff) and seconds == 0

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int | bytes:
        value = self._options.get((level, option), 0)
        if buflen is None:
            return value if isinstance(value, int) else 0
        return value if isinstance(value, bytes) else bytes(buflen)

    def __repr__(self) -> str:
        return f"<aioxdp.XdpSocket family={self.family!r} laddr={self.getsockname()}>"


class XdpTransport(transports._FlowControlMixin, asyncio.Transport):
    """``asyncio.Transport`` for one bypass-stack TCP connection."""

    # set by _FlowControlMixin.__init__ (typeshed does not declare them)
    _loop: asyncio.AbstractEventLoop
    _protocol_paused: bool
    _low_water: int
    _high_water: int

    # loop.sendfile falls back to reads and writes; loop.start_tls may wrap us
    _sendfile_compatible = asyncio.constants._SendfileMode.FALLBACK  # type: ignore[attr-defined]
    _start_tls_compatible = True

    def __init__(self, loop: asyncio.AbstractEventLoop, stack: NetStack, conn: Connection,
                 protocol: asyncio.BaseProtocol, server: XdpServer | None = None) -> None:
        sock = XdpSocket(conn.local, conn.remote, conn)
        extra = {"peername": sock.getpeername(), "sockname": sock.getsockname(), "socket": sock}
        super().__init__(extra, loop)
        self._sock = sock
        self._stack = stack
        self._conn = conn
        self._protocol: asyncio.BaseProtocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._server = server
        self._closing = False  # close() or abort() called, or the connection is gone
        self._lost = False  # connection_lost() scheduled
        self._eof = False  # write_eof() called
        self._writes_after_close = 0
        self._paused = False  # pause_reading() in force
        # What the stack dispatched after the protocol paused reading -- events the core
        # queued before the pause, in the same batch as the handshake, say -- which
        # asyncio never hands over while paused: it waits here, as bytes wait in a paused
        # socket's receive buffer, and goes up in order before the core's own held bytes
        # (the core stays paused until it is delivered). None stands for the EOF.
        self._stash: list[bytes | None] = []
        if server is not None:
            server._attach(self)

    # -- called by the stack for core events ------------------------------------------------

    def _start(self) -> None:
        self._protocol.connection_made(self)

    def _data_received(self, data: bytes) -> None:
        if self._lost:
            return
        if self._paused or self._stash:
            self._stash.append(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            if self._buffered:
                self._feed_buffered(data)
            else:
                self._protocol.data_received(data)  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _feed_buffered(self, data: bytes) -> None:
        """BufferedProtocol: copy into the buffers the protocol hands out (asyncio.protocols)."""
        proto: asyncio.BufferedProtocol = self._protocol  # type: ignore[assignment]
        view = memoryview(data)
        while view:
            buf = memoryview(proto.get_buffer(len(view))).cast("B")
            if not buf:
                raise RuntimeError("get_buffer() returned an empty buffer")
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]

    def _eof_received(self) -> None:
        if self._lost:
            return
        if self._paused or self._stash:
            self._stash.append(None)
            return
        self._deliver_eof()

    def _deliver_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _write_space(self) -> None:
        if self._lost:
            return  # closed or aborted: the core drains on, the protocol hears no more
        self._maybe_resume_protocol()  # type: ignore[attr-defined]

    def _connection_closed(self, error: BaseException | None) -> None:
        if not self._lost:
            self._closing = True
            self._lost = True
            self._call_connection_lost(error)

    # -- asyncio.Transport ----------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing:
            # asyncio's socket transports drop such writes and warn after a few
            self._writes_after_close += 1
            if self._writes_after_close == 5:
                logger.warning("socket.send() raised exception.")
            return
        if not data:
            return
        self._conn.send(bytes(data) if not isinstance(data, bytes) else data)
        self._stack.wakeup()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        self._conn.shutdown()
        self._stack.wakeup()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_conn()
        self._stack.wakeup()
        self._schedule_connection_lost(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._force_close(None)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        if not self._closing and not self._paused:
            self._paused = True
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._stash:
            self._loop.call_soon(self._unstash)  # as asyncio's, from the next iteration
        else:
            self._conn.resume_reading()
            self._stack.wakeup()

    def _unstash(self) -> None:
        """Hand over what waited in ``_stash``, then what the core held meanwhile."""
        stash = self._stash
        while stash and not self._paused and not self._lost:
            item = stash.pop(0)
            if item is None:
                self._deliver_eof()
            else:
                self._deliver(item)
        if not stash and not self._paused and not self._closing:
            self._conn.resume_reading()
            self._stack.wakeup()

    def is_reading(self) -> bool:
        return not self._closing and not self._paused

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return max(0, self._conn.send_buffer_size - SEND_BUFFER)

    def _maybe_pause_protocol(self) -> None:
        if self._conn.send_buffer_size <= SEND_BUFFER + self._high_water:
            return  # get_write_buffer_size() <= high water: the mix-in would do nothing
        super()._maybe_pause_protocol()  # type: ignore[misc]
        if self._protocol_paused:
            # ask the core for one SendBufferDrained when we fall to the low mark
            self._conn.write_watermark = SEND_BUFFER + self._low_water

    # -- internals ---------------------------------------------------------------------

    def _schedule_connection_lost(self, exc: BaseException | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            self._stack.forget(self._conn)
            if self._server is not None:
                self._server._detach(self)
                self._server = None

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol,
            })
        if not self._lost:
            self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        """What asyncio's socket transports do on abort() and on a fatal error: close the
        socket at once (``_SelectorTransport._force_close``), connection_lost soon and no
        callback after it. Closing a Linux socket (tcp_close) sends a FIN after what its
        send buffer holds -- here, what the core holds -- and a RST instead only when
        received data lies unread (RFC 2525 §2.17; data held while reading is paused);
        data arriving later is answered with RST (RFC 1122 §4.2.2.13). The core's
        ``close()`` makes exactly those choices, and then finishes the FIN exchange on its
        own, as an orphaned kernel socket does. Bytes the core holds beyond SEND_BUFFER
        and has not sent count as asyncio's own write buffer, which is dropped
        (``_buffer.clear()`` there)."""
        self._closing = True
        self._conn.drop_unsent(SEND_BUFFER)
        self._close_conn()
        self._stack.wakeup()
        self._schedule_connection_lost(exc)

    def _close_conn(self) -> None:
        """The socket's close(): FIN, or RST where Linux sends one (see _force_close;
        SO_LINGER with a zero timeout always resets, RFC 9293 §3.10.5 ABORT)."""
        if self._sock.reset_on_close or any(self._stash):
            self._conn.abort()  # any(): bytes the protocol never read (None is the EOF)
        else:
            self._conn.close()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return (f"<XdpTransport {state} {self._conn.state.name} "
                f"local={self.get_extra_info('sockname')} peer={self.get_extra_info('peername')}>")


class XdpServer(asyncio.AbstractServer):
    """``asyncio.Server`` for bypass-stack listeners, with the running Python's semantics.

    ``close()`` stops listening and leaves accepted connections alone (their segments
    keep reaching the stack through the XDP program's ``flows`` map). ``wait_closed()``
    is asyncio's ``Server.wait_closed`` of the running version (Lib/asyncio/base_events.py),
    whose meaning changed twice (gh-79033):

    - 3.11: returns at once when the server is closed already, whatever is still
      connected; called before ``close()``, waits for the close and the last connection.
      So ``async with server: await server.serve_forever()`` ends on Ctrl-C with idle
      clients connected;
    - 3.12.0: returns at once also while the server is open with no connection;
    - 3.12.1 on: waits until the server is closed and every connection it accepted has
      gone (``close_clients()``/``abort_clients()``, 3.13, end them).
    """

    # the stack holds each served (address, port) with a bound kernel socket (NetStack.listen);
    # False for a server whose own kernel socket holds them (create_server(sock=...))
    _holds_ports: ClassVar[bool] = True

    def __init__(self, loop: asyncio.AbstractEventLoop, stack: NetStack,
                 protocol_factory: Callable[[], asyncio.BaseProtocol],
                 addresses: list[tuple[bytes, int]], backlog: int,
                 ssl: Any = None, ssl_handshake_timeout: float | None = None,
                 ssl_shutdown_timeout: float | None = None) -> None:
        self._loop = loop
        self._stack = stack
        self._protocol_factory = protocol_factory
        self._addresses = addresses
        self._backlog = backlog
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._listeners: list[Listener] = []
        self._transports: set[XdpTransport] = set()
        self._closed = False
        self._serving_forever_fut: asyncio.Future[None] | None = None
        # None once closed with no connection left, as asyncio's Server._waiters
        self._waiters: list[asyncio.Future[None]] | None = []

    # -- called by the stack / transports --

    def _accept(self, conn: Connection) -> XdpTransport:
        protocol = self._protocol_factory()
        if self._ssl is not None:
            protocol = sslproto.SSLProtocol(
                self._loop, protocol, self._ssl, None, server_side=True,  # type: ignore[arg-type]
                ssl_handshake_timeout=self._ssl_handshake_timeout,  # type: ignore[arg-type]
                ssl_shutdown_timeout=self._ssl_shutdown_timeout)
        return XdpTransport(self._loop, self._stack, conn, protocol, server=self)

    def _attach(self, transport: XdpTransport) -> None:
        self._transports.add(transport)

    def _detach(self, transport: XdpTransport) -> None:
        self._transports.discard(transport)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """asyncio's Server._wakeup, at the moment both conditions hold: closed, and no
        connection left."""
        if self._closed and not self._transports and self._waiters is not None:
            waiters, self._waiters = self._waiters, None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- asyncio.AbstractServer --

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return bool(self._listeners)

    @property
    def sockets(self) -> tuple[XdpSocket, ...]:
        return tuple(XdpSocket(addr) for addr in self._addresses) if not self._closed else ()

    async def start_serving(self) -> None:
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        if not self._listeners:
            try:
                for addr, port in self._addresses:
                    self._listeners.append(self._stack.listen(addr, port, self._backlog, self,
                                                              hold=self._holds_ports))
            except OSError:
                for listener in self._listeners:  # all addresses or none, as bind() does
                    self._stack.unlisten(listener)
                self._listeners = []
                raise
        # one iteration, as asyncio's start_serving yields once
        await asyncio.sleep(0)

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for listener in self._listeners:
            self._stack.unlisten(listener)
        self._listeners = []
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
        self._wake_waiters()

    def close_clients(self) -> None:
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        if self._waiters is None:
            return
        if sys.version_info < (3, 12) and self._closed:
            return
        if (3, 12) <= sys.version_info < (3, 12, 1) and not self._transports:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def __repr__(self) -> str:
        return f"<XdpServer sockets={self.sockets!r}>"
