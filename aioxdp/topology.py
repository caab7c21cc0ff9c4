"""Throwaway test topologies: two network namespaces joined by a veth pair.

Tests, the demo and the benchmarks all run on one of these, so that every
packet stays between namespaces this process created, on addresses in
198.18.0.0/15 (RFC 2544's benchmarking range) and, for IPv6, 2001:2::/48
(RFC 5180's). Everything is removed on exit, also after a failure.

The "server" end is where aioxdp runs; the "client" end is an ordinary Linux
host. Its veth has tx checksum offload turned off: otherwise the sending
kernel leaves TCP checksums partial and the AF_XDP socket sees frames that
fail verification (MACHINE-NOTES.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the calling thread into network namespace ``name`` for the block.

    Sockets opened inside stay in that namespace after the block ends. Only
    the calling thread moves; /sys is not remounted (use ``ip netns exec`` for
    commands that read /sys/class/net).
    """
    own = os.open(f"/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Topology:
    """Namespaces ``<prefix>-srv`` and ``<prefix>-cli`` joined by one veth pair.

    ``queues`` > 1 makes a multi-queue veth (for per-queue AF_XDP sockets).
    """

    queues: int = 1
    mtu: int = 1500
    prefix: str = field(default_factory=lambda: f"ax{os.getpid() % 100000}x{next(_counter)}")
    server_ip: str = "198.18.0.1"
    client_ip: str = "198.18.0.2"
    prefixlen: int = 24
    server_ip6: str = "2001:2::1"
    client_ip6: str = "2001:2::2"
    prefixlen6: int = 64

    @property
    def server_ns(self) -> str:
        return f"{self.prefix}-srv"

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def server_if(self) -> str:
        return f"{self.prefix}s"[:15]

    @property
    def client_if(self) -> str:
        return f"{self.prefix}c"[:15]

    def up(self) -> Topology:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            run("ip", "netns", "add", ns)
            self.ip(ns, "link", "set", "lo", "up")
        q = str(self.queues)
        run("ip", "link", "add", self.server_if, "numtxqueues", q, "numrxqueues", q,
            "type", "veth", "peer", "name", self.client_if, "numtxqueues", q, "numrxqueues", q)
        for ns, dev, ip4, ip6 in ((self.server_ns, self.server_if, self.server_ip, self.server_ip6),
                                  (self.client_ns, self.client_if, self.client_ip, self.client_ip6)):
            run("ip", "link", "set", dev, "netns", ns)
            # no duplicate address detection: the link-local address is usable at
            # once, so IPv6 neighbour resolution works right after up()
            self.exec(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
            self.ip(ns, "link", "set", dev, "mtu", str(self.mtu))
            self.ip(ns, "addr", "add", f"{ip4}/{self.prefixlen}", "dev", dev)
            self.ip(ns, "-6", "addr", "add", f"{ip6}/{self.prefixlen6}", "dev", dev, "nodad")
            self.ip(ns, "link", "set", dev, "up")
        # full checksums from the Linux peer, as a real wire carries them
        self.exec(self.client_ns, "ethtool", "-K", self.client_if, "tx", "off")

    def down(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            run("ip", "netns", "del", ns, check=False)

    def ip(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "-n", ns, *args)

    def exec(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *cmd, check=check)

    def popen(self, ns: str, *cmd: str, **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)  # type: ignore[call-overload]

    def server(self) -> contextlib.AbstractContextManager[None]:
        """``with topo.server():`` — run the block inside the server namespace."""
        return in_netns(self.server_ns)

    def client(self) -> contextlib.AbstractContextManager[None]:
        return in_netns(self.client_ns)

    def __enter__(self) -> Topology:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
