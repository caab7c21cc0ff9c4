"""How the bypass stack is configured: by arguments, else by environment variables.

The environment lets an unmodified program move onto the stack:
``AIOXDP_INTERFACE=eth1 python -m aioxdp run app:main`` or, for a program that
calls ``aioxdp.install()``, just the variables.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields

from .polling import MODES as POLL_MODES
from .tcp.config import TcpConfig

ENV_PREFIX = "AIOXDP_"


def _parse_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
        raise ValueError(f"port range must look like LOW-HIGH (e.g. 61000-64999), not {text!r}")
    low, high = int(lo), int(hi)
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"port range {text!r} must lie within 1024-65535")
    return low, high


def port_count(port_range: tuple[int, int]) -> int:
    return port_range[1] - port_range[0] + 1


def port_share(port_range: tuple[int, int], workers: int, index: int) -> tuple[int, int]:
    """Worker ``index``'s slice of ``port_range`` split ``workers`` ways."""
    span = port_count(port_range) // workers
    low = port_range[0] + index * span
    return low, low + span - 1


class KernelSocket(socket.socket):
    """A socket an aioxdp loop leaves on the kernel even where it would adopt it
    (``Settings.adopt_sockets``): for a server that must answer whatever state the
    bypass stack is in, such as the metrics endpoint (statsserver.py)."""


@dataclass
class Settings:
    """Where and how the stack runs.

    interface: the network device whose traffic the stack takes over (None:
      no bypass stack; every call goes to the base loop's kernel sockets).
    queue: the RX queue whose AF_XDP socket this loop owns.
    mode: "skb" (generic XDP, any driver) or "native" (driver XDP).
    poll: "wakeup" (sleep in the selector until the socket is readable),
      "busy" (poll the rings on every loop iteration: lowest latency, one
      core at 100%) or "adaptive" (poll while frames keep coming, sleep once
      they stop; aioxdp/polling.py has the rule).
    poll_budget_us: adaptive mode's longest polling after a batch before the
      loop sleeps, in µs, which is also the CPU a wake-up is taken to cost
      (polling.py weighs one against the other).
    port_range: local ports for outgoing connections; the kernel is told
      never to pick them (net.ipv4.ip_local_reserved_ports).
    zerocopy: ask for zero-copy AF_XDP (falls back to copy mode, with a
      log line, where the driver cannot).
    loop: the base event loop: "asyncio" (selector loop), "uvloop", or
      "auto" (uvloop when it is installed).
    workers: how many stacks share the interface, one per RX queue
      (aioxdp.workers); this one is number ``queue`` and allocates outgoing
      ports only from its share of ``port_range`` (:meth:`own_ports`).
    attached: use the XDP program another process attached (the workers'
      parent, which also configured its addresses and port range and
      reserved the ports) instead of loading one.
    secret: the key of ISNs and SYN cookies (None: a random one). Stacks
      sharing one XDP program must share it: the program answers SYNs with
      cookies any of them has to accept.
    stats: serve the stack's counters on its stats socket for ``aioxdp stats``
      (statsserver.py), whichever way the loop was made; False (or
      ``AIOXDP_STATS=0``) where /run is not writable or nobody should read them.
    adopt_sockets: sockets handed to the loop already made move onto the stack
      when they belong to the interface: a listening socket bound to one of its
      addresses (``create_server(sock=...)``, what ASGI servers pass for
      ``--fd`` or ``--workers``), and a socket connected through
      ``loop.sock_connect`` to a destination routed out of it (aiohttp's
      client, happy eyeballs). False keeps such sockets on the kernel, for a
      program that reads and writes them itself (``sock_recv``/``sock_sendall``).
    """

    interface: str | None = None
    queue: int = 0
    mode: str = "skb"
    poll: str = "wakeup"
    poll_budget_us: int = 15
    port_range: tuple[int, int] = (61000, 64999)
    zerocopy: bool = False
    loop: str = "auto"
    batch: int = 64
    frames: int = 4096
    workers: int = 1
    attached: bool = False
    secret: bytes | None = None
    stats: bool = True
    adopt_sockets: bool = True
    tcp: TcpConfig = field(default_factory=TcpConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("skb", "native"):
            raise ValueError(f"mode must be 'skb' or 'native', not {self.mode!r}")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"loop must be 'auto', 'asyncio' or 'uvloop', not {self.loop!r}")
        if self.poll not in POLL_MODES:
            raise ValueError(f"poll must be {one_of(POLL_MODES)}, not {self.poll!r}")
        if self.poll_budget_us < 0:
            raise ValueError(f"poll_budget_us must not be negative, not {self.poll_budget_us}")
        if self.workers > 1 and not (
                self.queue < self.workers <= port_count(self.port_range)):
            raise ValueError(f"queue {self.queue} of {self.workers} workers: needs "
                             "queue < workers <= the number of ports in port_range")

    def own_ports(self) -> tuple[int, int]:
        """This stack's share of ``port_range``: equal slices, one per worker, in
        queue order (the last ``port_count % workers`` ports go unused)."""
        if self.workers == 1:
            return self.port_range
        return port_share(self.port_range, self.workers, self.queue)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``AIOXDP_*`` variables; explicit ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or f.name == "tcp":
                continue
            try:
                values[f.name] = _from_text(f.name, raw)
            except ValueError as exc:  # one line naming the variable and what it takes
                raise ValueError(f"{name}={raw!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


_CHOICES = {"mode": ("skb", "native"), "poll": POLL_MODES,
            "loop": ("auto", "asyncio", "uvloop")}


def one_of(choices: tuple[str, ...]) -> str:
    """'a', 'b' or 'c': the choices as a message names them."""
    quoted = [repr(c) for c in choices]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


def _from_text(name: str, raw: str) -> object:
    """The value of field ``name`` that the text of its variable gives; ValueError saying
    what is expected."""
    if name == "port_range":
        return _parse_range(raw)
    if name in ("zerocopy", "attached", "stats", "adopt_sockets"):
        return raw.lower() in ("1", "yes", "true", "on")
    if name in ("queue", "batch", "frames", "workers", "poll_budget_us"):
        if not raw.strip().isdigit():
            raise ValueError(f"{name} must be a whole number (e.g. 0)")
        return int(raw)
    if name == "secret":
        try:
            return bytes.fromhex(raw)
        except ValueError:
            raise ValueError("secret must be hexadecimal") from None
    if name in _CHOICES and raw not in _CHOICES[name]:
        raise ValueError(f"{name} must be {one_of(_CHOICES[name])}")
    return raw
