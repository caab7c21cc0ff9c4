"""Event loops that add the bypass stack to a base loop, and the uvloop-style entry points.

``create_server``/``create_connection`` (and so ``start_server``,
``open_connection`` and every library built on them) go through the bypass
stack when the address belongs to the configured interface — a local address
of it for servers, a destination the kernel routes out of it for clients —
and to the base loop's kernel sockets otherwise. Sockets the program made
itself move over too (``Settings.adopt_sockets``): a listening socket bound to
the interface given to ``create_server(sock=...)``, and a socket connected
through ``sock_connect`` (how aiohttp's client and aiohappyeyeballs connect),
whose connection the stack opens and ``create_connection(sock=...)`` then
takes. Everything else (DNS, subprocesses, other sockets, timers) is the base
loop's, untouched.

Every stack serves its counters on a stats socket (statsserver.py) from the
moment it exists, whichever way the loop was made.

Base loops: asyncio's selector loop and uvloop's loop (when installed).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import ipaddress
import logging
import os
import socket
import ssl as ssl_module
import time
import weakref
from asyncio import sslproto
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

from . import kernel, strays
from .settings import KernelSocket, Settings
from .stack import NetStack
from .statsserver import StatsServer, snapshot
from .transport import XdpServer, XdpTransport

T = TypeVar("T")

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # uvloop is optional
    uvloop = None


logger = logging.getLogger("aioxdp")
_libc = ctypes.CDLL(None, use_errno=True)


def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host.split("%", 1)[0]).packed


def _tcp(sock: socket.socket) -> bool:
    return (sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM
            and not isinstance(sock, KernelSocket))


def _hold_port(sock: socket.socket) -> None:
    """Turn a listening socket the stack adopted into a bound, non-listening one.

    The port stays reserved against other kernel sockets, and a SYN that does
    not cross the XDP program (through ``lo``, or another interface for a
    wildcard socket) is refused with RST instead of waiting in a backlog that
    nobody accepts from. connect(AF_UNSPEC) is Linux's way out of LISTEN
    (tcp_disconnect); it lets go of a port the kernel picked (a bind to port
    0), which is then bound again.
    """
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return
    name = sock.getsockname()
    unspec = bytes(16)  # a struct sockaddr whose sa_family is AF_UNSPEC
    if _libc.connect(sock.fileno(), unspec, len(unspec)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"taking {name} from the kernel's listeners: {os.strerror(err)}")
    if sock.getsockname()[1] == 0:
        sock.bind(name)


# what sock_connect opens on the stack: (stack, remote, local or None: the stack chooses)
_Opening = tuple[NetStack, tuple[bytes, int], tuple[bytes, int] | None]


class _Unclaimed(asyncio.Protocol):
    """The protocol of a bypass connection until its owner's is known.

    ``sock_connect`` opens the connection before ``create_connection(sock=...)``
    names the protocol, and ``create_connection`` opens it before TLS wraps the
    protocol. Reading is held meanwhile (the core keeps the bytes, and the
    window tells the peer to wait once they fill it); what was delivered before
    the hold is passed on, in order.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.error = exc

    def pass_to(self, transport: XdpTransport, protocol: asyncio.BaseProtocol) -> None:
        """Make ``protocol`` the transport's, as if it had been there from the start."""
        transport.set_protocol(protocol)
        transport.resume_reading()  # what the core held comes with its next service run
        protocol.connection_made(transport)
        for data in self.data:
            transport._data_received(data)
        if self.eof:
            transport._eof_received()


def _abandon(transport: XdpTransport) -> None:
    """A socket connected on the stack went away without ``create_connection(sock=...)``
    (a happy-eyeballs runner-up): so does its connection. After the loop closed, the
    stack has reset it already."""
    if isinstance(transport.get_protocol(), _Unclaimed) and not transport._loop.is_closed():
        transport.abort()


class _AdoptedServer(XdpServer):
    """An XdpServer made from the caller's listening socket (``create_server(sock=...)``).

    The socket, no longer listening, holds the port while the server listens,
    and is closed with it, as asyncio's Server closes its sockets.
    """

    _holds_ports = False  # the socket is the hold: NetStack.listen makes none of its own

    def __init__(self, sock: socket.socket, *args: Any) -> None:
        super().__init__(*args)
        self._kernel_socket = sock

    def close(self) -> None:
        super().close()
        self._kernel_socket.close()


class _XdpLoopMixin:
    """The bypass-stack half of an aioxdp loop; the base loop is the next class in the MRO."""

    _aioxdp_settings: Settings | None
    _aioxdp_stack: NetStack | None
    _aioxdp_stats: StatsServer | None
    # sockets sock_connect connected on the stack -> their connection, until
    # create_connection(sock=...) takes it, and the finalizer that drops it otherwise
    _aioxdp_unclaimed: weakref.WeakKeyDictionary[socket.socket,
                                                 tuple[XdpTransport, weakref.finalize]]
    _aioxdp_warned: set[tuple[str, int]]

    def _aioxdp_init(self, settings: Settings | None) -> None:
        self._aioxdp_settings = settings
        self._aioxdp_stack = None
        self._aioxdp_stats = None
        self._aioxdp_unclaimed = weakref.WeakKeyDictionary()
        self._aioxdp_warned = set()

    @property
    def xdp_stack(self) -> NetStack | None:
        """The running bypass stack (None until a server or connection needs it)."""
        return self._aioxdp_stack

    @property
    def xdp_settings(self) -> Settings:
        """The loop's settings; without explicit ones, ``AIOXDP_*`` as they are
        when the stack is first needed (so a test fixture may set them late)."""
        if self._aioxdp_settings is None:
            self._aioxdp_settings = Settings.from_env()
        return self._aioxdp_settings

    def _stack(self) -> NetStack | None:
        settings = self.xdp_settings
        if self._aioxdp_stack is None and settings.interface is not None:
            kernel.require_capabilities(settings.interface)
            try:
                self._aioxdp_stack = NetStack(self, settings)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EEXIST) or settings.attached:
                    raise
                # typically a second process of a server that forks workers sharing
                # one listening socket (uvicorn/gunicorn --workers): each would load
                # its own program on the same interface
                raise OSError(exc.errno, (
                    f"{settings.interface} already has an XDP program attached, most likely "
                    "another aioxdp process's. Several processes cannot each run a stack on "
                    "one interface (as a server's own worker processes sharing one listening "
                    "socket would): serve the app from aioxdp's workers instead, one per RX "
                    f"queue on one shared program: aioxdp run MODULE:APP --workers N ({exc})"
                )) from exc
        return self._aioxdp_stack

    async def _bypass(self) -> NetStack | None:
        """The stack (made now if there is none), its stats socket served from the start."""
        stack = self._stack()
        if stack is not None and self._aioxdp_stats is None and self.xdp_settings.stats:
            settings = self.xdp_settings
            collect = functools.partial(snapshot, self, settings,  # type: ignore[arg-type]
                                        time.time())
            self._aioxdp_stats = stats = StatsServer(settings, collect)
            try:
                if await stats.start():
                    logger.info("stats: %s (aioxdp stats)", stats.path)
            except OSError as exc:  # /run not writable: the stack works without
                logger.warning("no stats socket (%s): %s", stats.path, exc)
        return stack

    async def _resolve(self, host: str | None, port: int, family: int, flags: int) -> list[bytes]:
        infos = await self.getaddrinfo(  # type: ignore[attr-defined]
            host, port, family=family, type=socket.SOCK_STREAM, flags=flags)
        return [_packed(info[4][0]) for info in infos]

    # -- servers -------------------------------------------------------------------------

    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: Any = None, port: int | None = None, *,
                            family: int = socket.AF_UNSPEC, flags: int = socket.AI_PASSIVE,
                            sock: Any = None, backlog: int = 100, ssl: Any = None,
                            reuse_address: bool | None = None, reuse_port: bool | None = None,
                            ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None,
                            start_serving: bool = True, **kwargs: Any) -> asyncio.AbstractServer:
        base = super().create_server  # type: ignore[misc]
        stack: NetStack | None = None
        listen: list[tuple[bytes, int]] = []
        if sock is None:
            stack = await self._bypass()
            if stack is not None:
                addresses = await self._server_addresses(stack, host, family, flags)
                if addresses:
                    port = int(port or 0) or stack.listen_port()
                    listen = [(addr, port) for addr in addresses]
        elif host is None and port is None and _tcp(sock) and self.xdp_settings.adopt_sockets:
            stack, listen = await self._adopt_listener(sock)
        if not listen:
            return await base(protocol_factory, host, port, family=family, flags=flags, sock=sock,
                              backlog=backlog, ssl=ssl, reuse_address=reuse_address,
                              reuse_port=reuse_port, ssl_handshake_timeout=ssl_handshake_timeout,
                              ssl_shutdown_timeout=ssl_shutdown_timeout,
                              start_serving=start_serving, **kwargs)
        assert stack is not None
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError("ssl argument must be an SSLContext or None")
        args: tuple[Any, ...] = (self, stack, protocol_factory, listen, backlog, ssl,
                                 ssl_handshake_timeout, ssl_shutdown_timeout)
        server = XdpServer(*args) if sock is None else _AdoptedServer(sock, *args)
        if start_serving:
            await server.start_serving()
        return server

    async def _server_addresses(self, stack: NetStack, host: Any, family: int,
                                flags: int) -> list[bytes]:
        """The bypass addresses to listen on: the interface's own, or wildcard (b"")."""
        if host in (None, "", "0.0.0.0", "::"):
            return [b""]
        hosts = [host] if isinstance(host, str) else list(host)
        addresses: list[bytes] = []
        for h in hosts:
            addresses.extend(a for a in await self._resolve(h, 0, family, flags) if stack.owns(a))
        return list(dict.fromkeys(addresses))

    async def _adopt_listener(self, sock: socket.socket
                              ) -> tuple[NetStack | None, list[tuple[bytes, int]]]:
        """The stack and where to listen for a socket the caller bound (and maybe set
        listening) itself, if it is bound to the interface: one of its addresses, or
        the wildcard (the interface's addresses, as ``create_server(host=None)``).
        The socket is then taken from the kernel's listeners (_hold_port)."""
        host, port = sock.getsockname()[:2]
        if not port:
            return None, []  # not bound: the kernel picks a port when it listens
        stack = await self._bypass()
        addr = _packed(host)
        if stack is None or (any(addr) and not stack.owns(addr)):
            return stack, []
        _hold_port(sock)
        return stack, [(addr if any(addr) else b"", port)]

    # -- clients -------------------------------------------------------------------------

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str | None = None, port: int | None = None, *,
                                ssl: Any = None, family: int = 0, proto: int = 0, flags: int = 0,
                                sock: Any = None, local_addr: tuple[str, int] | None = None,
                                server_hostname: str | None = None,
                                ssl_handshake_timeout: float | None = None,
                                ssl_shutdown_timeout: float | None = None,
                                **kwargs: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        tls = (ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            claimed = self._aioxdp_unclaimed.pop(sock, None)
            if claimed is not None:
                if host is not None or port is not None:
                    raise ValueError("host/port and sock can not be specified at the same time")
                if ssl and server_hostname is None:
                    raise ValueError("You must set server_hostname when using ssl without a host")
                transport, finalizer = claimed
                finalizer.detach()
                sock.close()  # never connected: its connection is the stack's
                return await self._hand_over(transport, protocol_factory, ssl, server_hostname,
                                             *tls)
            self._note_kernel_socket(sock)
        base = super().create_connection  # type: ignore[misc]
        stack = await self._bypass() if sock is None and host is not None else None
        remote = None
        if stack is not None:
            for addr in await self._resolve(host, port or 0, family, flags):
                if stack.reaches(addr):
                    remote = addr
                    break
        if remote is None:
            return await base(protocol_factory, host, port, ssl=ssl, family=family, proto=proto,
                              flags=flags, sock=sock, local_addr=local_addr,
                              server_hostname=server_hostname,
                              ssl_handshake_timeout=ssl_handshake_timeout,
                              ssl_shutdown_timeout=ssl_shutdown_timeout, **kwargs)
        assert stack is not None and port is not None
        local = None
        if local_addr is not None:
            local = (_packed(local_addr[0]) if local_addr[0] else b"", int(local_addr[1]))
        transport = await stack.connect((remote, port), local, _Unclaimed)
        hostname = server_hostname if server_hostname is not None else host
        return await self._hand_over(transport, protocol_factory, ssl, hostname, *tls)

    async def _hand_over(self, transport: XdpTransport,
                         protocol_factory: Callable[[], asyncio.BaseProtocol], ssl: Any,
                         server_hostname: str | None, ssl_handshake_timeout: float | None,
                         ssl_shutdown_timeout: float | None
                         ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """Give a connection the stack opened with an _Unclaimed protocol its own: the
        caller's, or asyncio's SSLProtocol around it, as base_events does over a socket;
        returns once connection_made has run (with TLS: once the handshake is done)."""
        unclaimed = transport.get_protocol()
        assert isinstance(unclaimed, _Unclaimed)
        try:
            if unclaimed.lost:
                raise unclaimed.error or ConnectionResetError(
                    "the connection was closed before create_connection took it")
            if not ssl:
                protocol = protocol_factory()
                unclaimed.pass_to(transport, protocol)
                return transport, protocol
            context = (ssl if isinstance(ssl, ssl_module.SSLContext)
                       else ssl_module.create_default_context())
            waiter: asyncio.Future[None] = self.create_future()  # type: ignore[attr-defined]
            app_protocol = protocol_factory()
            ssl_protocol = sslproto.SSLProtocol(
                self, app_protocol, context, waiter, server_side=False,  # type: ignore[arg-type]
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]
                ssl_shutdown_timeout=ssl_shutdown_timeout)
            unclaimed.pass_to(transport, ssl_protocol)
            await waiter
        except BaseException:
            transport.close()
            raise
        return ssl_protocol._app_transport, app_protocol  # type: ignore[return-value]

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """Connect ``sock``: on the bypass stack when ``adopt_sockets`` allows and the
        destination is routed out of the interface. The kernel socket then stays
        unconnected; its connection is the stack's, and waits (reading held) for
        ``create_connection(sock=sock)`` to give it a protocol, which is what
        aiohappyeyeballs' callers (aiohttp's client) do with the socket next. One
        dropped instead (a happy-eyeballs runner-up) takes its connection along."""
        opening = await self._adopt_connect(sock, address)
        if opening is None:
            return await super().sock_connect(sock, address)  # type: ignore[misc,no-any-return]
        stack, remote, local = opening
        transport = await stack.connect(remote, local, _Unclaimed)
        finalizer = weakref.finalize(sock, _abandon, transport)
        finalizer.atexit = False
        self._aioxdp_unclaimed[sock] = (transport, finalizer)
        return None

    async def _adopt_connect(self, sock: socket.socket, address: Any) -> _Opening | None:
        """(stack, remote, local) for a socket ``sock_connect`` should connect on the
        stack; None: the kernel's (also for a socket bound to a port of its own, which
        the stack's port range would not hold)."""
        settings = self.xdp_settings
        if (settings.interface is None or not settings.adopt_sockets or not _tcp(sock)
                or not isinstance(address, tuple) or sock in self._aioxdp_unclaimed):
            return None
        host, port = address[0], int(address[1])
        lhost, lport = sock.getsockname()[:2]
        if lport:
            return None
        stack = await self._bypass()
        if stack is None:
            return None
        try:
            remote = _packed(host)
        except ValueError:  # a name: resolved as the base loop's sock_connect would
            remote = (await self._resolve(host, port, sock.family, 0))[0]
        laddr = _packed(lhost)
        try:
            if not stack.reaches(remote) or (any(laddr) and not stack.owns(laddr)):
                return None
        except OSError:  # no route: the kernel's connect says so
            return None
        return stack, (remote, port), ((laddr, 0) if any(laddr) else None)

    def _note_kernel_socket(self, sock: Any) -> None:
        """``create_connection(sock=...)`` of a socket the kernel connected: towards the
        interface's side that is a connection which could have been the stack's. Said
        once per destination, loudly: nothing else would show it."""
        settings = self.xdp_settings
        if settings.interface is None or not isinstance(sock, socket.socket) or not _tcp(sock):
            return
        try:
            peer = sock.getpeername()[:2]
        except OSError:
            return
        if peer in self._aioxdp_warned:
            return
        self._aioxdp_warned.add(peer)
        addr = _packed(peer[0])
        try:
            if self._aioxdp_stack is not None:
                routed_out = self._aioxdp_stack.reaches(addr)
            else:
                routed_out = kernel.next_hop(addr)[1] == kernel.interface(settings.interface).index
        except OSError:
            return
        if routed_out:
            logger.warning(
                "create_connection(sock=...) to %s port %d: the kernel connected this socket, "
                "so its connection stays on the kernel stack, not on %s's bypass stack. Connect "
                "it with loop.sock_connect (with AIOXDP_ADOPT_SOCKETS on), or pass host and "
                "port instead of sock", peer[0], peer[1], settings.interface)

    # A socket sock_connect connected on the stack is not connected in the kernel, so
    # the loop's own reads and writes of it would fail with a bare ENOTCONN or EPIPE;
    # they fail with what happened and what to do instead. (Calls on the socket itself,
    # sock.send(), cannot be seen.) Sockets that are not such a socket pass through.

    def _refuse_unclaimed(self, sock: Any, call: str) -> None:
        if sock in self._aioxdp_unclaimed:
            raise OSError(errno.ENOTCONN, (
                f"loop.{call}() on a socket that loop.sock_connect connected on "
                f"{self.xdp_settings.interface}'s bypass stack, where it is no kernel "
                "socket: hand it to loop.create_connection(sock=...) and use the transport, "
                "or keep such sockets on the kernel with AIOXDP_ADOPT_SOCKETS=0"))

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        self._refuse_unclaimed(sock, "sock_recv")
        return await super().sock_recv(sock, n)  # type: ignore[misc,no-any-return]

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        self._refuse_unclaimed(sock, "sock_recv_into")
        return await super().sock_recv_into(sock, buf)  # type: ignore[misc,no-any-return]

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        self._refuse_unclaimed(sock, "sock_sendall")
        return await super().sock_sendall(sock, data)  # type: ignore[misc,no-any-return]

    # -- things asyncio's base loop does generically, which uvloop limits to its own transports --

    async def start_tls(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol,
                        sslcontext: Any, **kwargs: Any) -> asyncio.Transport:
        if isinstance(transport, XdpTransport):
            return await asyncio.BaseEventLoop.start_tls(  # type: ignore[return-value]
                self, transport, protocol, sslcontext, **kwargs)  # type: ignore[arg-type]
        return await super().start_tls(transport, protocol, sslcontext, **kwargs)  # type: ignore[misc]

    async def sendfile(self, transport: asyncio.WriteTransport, file: Any, offset: int = 0,
                       count: int | None = None, *, fallback: bool = True) -> int:
        if isinstance(transport, XdpTransport):
            if not fallback:
                raise RuntimeError("sendfile on a bypass transport needs fallback=True")
            return await asyncio.BaseEventLoop._sendfile_fallback(  # type: ignore[attr-defined]
                self, transport, file, offset, count)
        return await super().sendfile(transport, file, offset, count,  # type: ignore[misc]
                                      fallback=fallback)

    def close(self) -> None:
        if self._aioxdp_stats is not None:
            self._aioxdp_stats.stop()
        if self._aioxdp_stack is not None:
            self._aioxdp_stack.close()
        super().close()  # type: ignore[misc]

    async def shutdown_xdp(self, timeout: float = 1.0) -> None:
        """Let connections the application closed finish their FIN exchange (bounded)."""
        if self._aioxdp_stack is not None:
            await self._aioxdp_stack.drain(timeout)


class XdpSelectorEventLoop(_XdpLoopMixin, asyncio.SelectorEventLoop):  # type: ignore[misc]
    """asyncio's selector loop with the bypass stack."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self._aioxdp_init(settings)


if uvloop is not None:
    class XdpUvloopLoop(_XdpLoopMixin, uvloop.Loop):  # type: ignore[misc,name-defined]
        """uvloop's loop with the bypass stack."""

        def __init__(self, settings: Settings | None = None) -> None:
            super().__init__()
            self._aioxdp_init(settings)


def loop_class(base: str = "auto") -> type[asyncio.AbstractEventLoop]:
    if base == "uvloop" or (base == "auto" and uvloop is not None):
        if uvloop is None:
            raise RuntimeError("loop 'uvloop' (AIOXDP_LOOP, --loop) needs uvloop, which is not "
                               "installed: pip install 'aioxdp[uvloop]', or use loop 'auto'")
        return XdpUvloopLoop
    return XdpSelectorEventLoop


def new_event_loop(settings: Settings | None = None, **options: Any) -> asyncio.AbstractEventLoop:
    """A new aioxdp loop; ``options`` are Settings fields (interface=..., mode=...).

    Without settings or options the loop reads ``AIOXDP_*`` when it first
    needs the stack; only the base loop is chosen now (``AIOXDP_LOOP``).
    """
    if settings is None and options:
        settings = Settings.from_env(**options)
    base = settings.loop if settings is not None else Settings.from_env().loop
    return loop_class(base)(settings)  # type: ignore[call-arg]


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """``asyncio.set_event_loop_policy(aioxdp.EventLoopPolicy())``, as with uvloop."""

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        super().__init__()
        self._settings = settings
        self._options = options

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop(self._settings, **self._options)


def install(settings: Settings | None = None, **options: Any) -> None:
    """Make aioxdp the loop of every ``asyncio.run``/``new_event_loop`` from now on.

    A loop made without the policy (uvicorn 0.36+ passes its own factory to
    ``asyncio.Runner``) stays a plain one on kernel sockets: the first TCP socket
    such a loop binds to the interface's addresses is then warned about, with the
    way out (``uvicorn --loop aioxdp:new_event_loop``; strays.py)."""
    asyncio.set_event_loop_policy(EventLoopPolicy(settings, **options))
    interface = settings.interface if settings is not None else options.get("interface")
    strays.watch(lambda loop: isinstance(loop, _XdpLoopMixin), interface=interface)


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None,
        settings: Settings | None = None, **options: Any) -> T:
    """``asyncio.run`` on an aioxdp loop; closed connections get to finish before exit."""

    async def wrapper() -> T:
        try:
            return await main
        finally:
            loop = asyncio.get_running_loop()
            if isinstance(loop, _XdpLoopMixin):
                await loop.shutdown_xdp()

    try:
        loop = new_event_loop(settings, **options)
    except BaseException:
        main.close()  # never to run: no "coroutine was never awaited" on top of the error
        raise
    with asyncio.Runner(debug=debug, loop_factory=lambda: loop) as runner:
        return runner.run(wrapper())

