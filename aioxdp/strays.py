"""A loud warning when a program that asked for aioxdp serves on the kernel stack anyway.

``aioxdp.install()`` sets the event loop policy, but a loop made without the
policy never sees it: uvicorn (0.36 and later) passes its own loop factory to
``asyncio.Runner``, so ``aioxdp.install()`` + ``uvicorn.run(app)`` serves from
uvloop's or asyncio's plain loop, on kernel sockets, and nothing says so. A
server on the kernel stack must bind a kernel socket, and ``socket.bind`` is an
audit event (PEP 578) that asyncio's loop and uvloop both raise, so an audit
hook sees the moment: a TCP socket bound to an address of the bypass interface
(or to every address) while a loop that is not aioxdp's runs in this thread.
That is one warning (a log record on the ``aioxdp`` logger, which Python prints
to stderr even where logging is not configured), once per process, naming the
way out.

An audit hook cannot be removed: :func:`watch` installs one per process and
later calls only update what it checks. It costs one comparison per audit
event; the hot path raises none (AF_XDP rings are driven from C).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable

from . import kernel

logger = logging.getLogger("aioxdp")

ADVICE = ("uvicorn: --loop aioxdp:new_event_loop (or uvicorn.run(app, "
          "loop=\"aioxdp:new_event_loop\")); asyncio.Runner(loop_factory=aioxdp.new_event_loop)")


class _Watch:
    """The state the one audit hook reads: which loops are aioxdp's, which interface."""

    def __init__(self) -> None:
        self.is_ours: Callable[[asyncio.AbstractEventLoop], bool] | None = None
        self.interface: str | None = None
        self.warned = False
        self.busy = threading.local()  # the hook's own netlink query binds a socket too

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if event != "socket.bind" or self.warned or self.is_ours is None:
            return
        if getattr(self.busy, "active", False):
            return
        sock, address = args
        if not isinstance(sock, socket.socket) or sock.family not in (
                socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return
        loop = asyncio._get_running_loop()
        if loop is None or self.is_ours(loop):
            return
        interface = self.interface or os.environ.get("AIOXDP_INTERFACE")
        if not interface or not isinstance(address, tuple):
            return
        self.busy.active = True
        try:
            self._check(loop, interface, address)
        finally:
            self.busy.active = False

    def _check(self, loop: asyncio.AbstractEventLoop, interface: str,
               address: tuple[object, ...]) -> None:
        host, port = str(address[0]).split("%", 1)[0], address[1]
        try:
            packed = ipaddress.ip_address(host or "0.0.0.0").packed
            ours = {addr for addr, _plen, _family in kernel.interface(interface).addresses}
        except (ValueError, OSError):
            return  # a name, or no such interface here: nothing to compare with
        if not (packed in ours or not any(packed)):
            return
        self.warned = True
        message = (f"a kernel TCP socket was bound to {host or '*'}:{port}, an address of "
                   f"AIOXDP_INTERFACE={interface}, from a {type(loop).__module__}."
                   f"{type(loop).__qualname__} that is not aioxdp's loop: its connections use "
                   f"the KERNEL stack, not the bypass stack. aioxdp.install() reaches only "
                   f"loops made through the event loop policy; {ADVICE}")
        # a log record, not warnings.warn: under -W error an exception raised here would
        # come out of the program's bind, and a warning must not change what runs
        logger.warning("%s", message)


_watch = _Watch()
_installed = False


def watch(is_ours: Callable[[asyncio.AbstractEventLoop], bool], *,
          interface: str | None = None) -> None:
    """Warn once when a TCP socket is bound to an address of ``interface`` (default:
    ``AIOXDP_INTERFACE`` when the bind happens) while a loop runs for which ``is_ours``
    is false. The loop module passes ``is_ours`` in: this module is below it."""
    global _installed
    _watch.is_ours = is_ours
    _watch.interface = interface
    if not _installed:
        sys.addaudithook(_watch)
        _installed = True
