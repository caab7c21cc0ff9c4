"""Event loops that add the bypass stack to a base loop, and the uvloop-style entry points.

``create_server``/``create_connection`` (and so ``start_server``,
``open_connection`` and every library built on them) go through the bypass
stack when the address belongs to the configured interface — a local address
of it for servers, a destination the kernel routes out of it for clients —
and to the base loop's kernel sockets otherwise. Everything else (DNS,
subprocesses, other sockets, timers) is the base loop's, untouched.

Base loops: asyncio's selector loop and uvloop's loop (when installed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl as ssl_module
from asyncio import sslproto
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

from .settings import Settings
from .stack import NetStack
from .transport import XdpServer, XdpTransport

T = TypeVar("T")

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # uvloop is optional
    uvloop = None


def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host.split("%", 1)[0]).packed


class _XdpLoopMixin:
    """The bypass-stack half of an aioxdp loop; the base loop is the next class in the MRO."""

    _aioxdp_settings: Settings | None
    _aioxdp_stack: NetStack | None

    def _aioxdp_init(self, settings: Settings | None) -> None:
        self._aioxdp_settings = settings
        self._aioxdp_stack = None

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
        if self._aioxdp_stack is None and self.xdp_settings.interface is not None:
            self._aioxdp_stack = NetStack(self, self.xdp_settings)  # type: ignore[arg-type]
        return self._aioxdp_stack

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
        stack = self._stack() if sock is None else None
        addresses = await self._server_addresses(stack, host, family, flags) if stack else None
        if not addresses:
            return await base(protocol_factory, host, port, family=family, flags=flags, sock=sock,
                              backlog=backlog, ssl=ssl, reuse_address=reuse_address,
                              reuse_port=reuse_port, ssl_handshake_timeout=ssl_handshake_timeout,
                              ssl_shutdown_timeout=ssl_shutdown_timeout,
                              start_serving=start_serving, **kwargs)
        assert stack is not None
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError("ssl argument must be an SSLContext or None")
        port = int(port or 0) or stack.listen_port()
        server = XdpServer(self, stack, protocol_factory,  # type: ignore[arg-type]
                           [(addr, port) for addr in addresses], backlog, ssl,
                           ssl_handshake_timeout, ssl_shutdown_timeout)
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

    # -- clients -------------------------------------------------------------------------

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str | None = None, port: int | None = None, *,
                                ssl: Any = None, family: int = 0, proto: int = 0, flags: int = 0,
                                sock: Any = None, local_addr: tuple[str, int] | None = None,
                                server_hostname: str | None = None,
                                ssl_handshake_timeout: float | None = None,
                                ssl_shutdown_timeout: float | None = None,
                                **kwargs: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        base = super().create_connection  # type: ignore[misc]
        stack = self._stack() if sock is None and host is not None else None
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
        if not ssl:
            transport = await stack.connect((remote, port), local, protocol_factory)
            return transport, transport.get_protocol()
        # TLS: asyncio's own SSLProtocol over our transport, as base_events does
        context = (ssl if isinstance(ssl, ssl_module.SSLContext)
                   else ssl_module.create_default_context())
        hostname = server_hostname if server_hostname is not None else host
        waiter: asyncio.Future[None] = self.create_future()  # type: ignore[attr-defined]
        app_protocol = protocol_factory()
        ssl_protocol = sslproto.SSLProtocol(
            self, app_protocol, context, waiter, server_side=False,  # type: ignore[arg-type]
            server_hostname=hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        transport = await stack.connect((remote, port), local, lambda: ssl_protocol)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return ssl_protocol._app_transport, app_protocol  # type: ignore[return-value]

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
            raise RuntimeError("uvloop is not installed: pip install 'aioxdp[uvloop]'")
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
    """Make aioxdp the loop of every ``asyncio.run``/``new_event_loop`` from now on."""
    asyncio.set_event_loop_policy(EventLoopPolicy(settings, **options))


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

    with asyncio.Runner(debug=debug,
                        loop_factory=lambda: new_event_loop(settings, **options)) as runner:
        return runner.run(wrapper())

