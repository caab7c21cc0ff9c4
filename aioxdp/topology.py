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
import ipaddress
import itertools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self

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
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
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

    def up(self) -> Self:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.server_ns, self.client_ns)

    def _up(self) -> None:
        self._add_namespaces()
        self._veth((self.server_ns, self.server_if), (self.client_ns, self.client_if))
        self._address(self.server_ns, self.server_if, self.server_ip, self.server_ip6, self.mtu)
        self._address(self.client_ns, self.client_if, self.client_ip, self.client_ip6, self.mtu)
        # full checksums from the Linux peer, as a real wire carries them
        self.exec(self.client_ns, "ethtool", "-K", self.client_if, "tx", "off")

    def _add_namespaces(self) -> None:
        for ns in self.namespaces:
            run("ip", "netns", "add", ns)
            self.ip(ns, "link", "set", "lo", "up")

    def _veth(self, end: tuple[str, str], peer: tuple[str, str]) -> None:
        """A veth pair of ``queues`` queues from (namespace, name) to (namespace, name)."""
        q = str(self.queues)
        run("ip", "link", "add", end[1], "numtxqueues", q, "numrxqueues", q,
            "type", "veth", "peer", "name", peer[1], "numtxqueues", q, "numrxqueues", q)
        for ns, dev in (end, peer):
            run("ip", "link", "set", dev, "netns", ns)

    def _address(self, ns: str, dev: str, ip4: str, ip6: str, mtu: int) -> None:
        """Addresses and MTU on ``dev``, then up."""
        # no duplicate address detection: the link-local address is usable at
        # once, so IPv6 neighbour resolution works right after up()
        self.exec(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
        self.ip(ns, "link", "set", dev, "mtu", str(mtu))
        self.ip(ns, "addr", "add", f"{ip4}/{self.prefixlen}", "dev", dev)
        self.ip(ns, "-6", "addr", "add", f"{ip6}/{self.prefixlen6}", "dev", dev, "nodad")
        self.ip(ns, "link", "set", dev, "up")

    def down(self) -> None:
        for ns in self.namespaces:
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

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


@dataclass
class RoutedTopology(Topology):
    """Server and client namespaces on two subnets, with a router namespace
    ``<prefix>-rtr`` between them, for path MTU discovery (RFC 1191, RFC 8201).

    The router forwards IPv4 and IPv6; its client-side link (both ends) has MTU
    ``router_mtu``, smaller than ``mtu`` on the server side, so it answers oversized
    segments carrying DF (all IPv6 ones) with ICMP "fragmentation needed" / "packet
    too big". The client's routes announce the MSS of an ``mtu``-sized path
    (``advmss``), as a host behind a wider link would: only path MTU discovery can
    find the bottleneck. Every veth that sends towards the server (the client's and
    the router's server-side one) has tx checksum offload off.
    """

    router_mtu: int = 1280
    client_ip: str = "198.18.1.2"
    client_ip6: str = "2001:2:0:1::2"
    router_server_ip: str = "198.18.0.254"
    router_server_ip6: str = "2001:2::fe"
    router_client_ip: str = "198.18.1.254"
    router_client_ip6: str = "2001:2:0:1::fe"

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-rtr"

    @property
    def router_server_if(self) -> str:
        """The router's end of the server link."""
        return f"{self.prefix}rs"[:15]

    @property
    def router_client_if(self) -> str:
        """The router's end of the client link."""
        return f"{self.prefix}rc"[:15]

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.server_ns, self.router_ns, self.client_ns)

    def _up(self) -> None:
        self._add_namespaces()
        rtr = self.router_ns
        self._veth((self.server_ns, self.server_if), (rtr, self.router_server_if))
        self._veth((rtr, self.router_client_if), (self.client_ns, self.client_if))
        self._address(self.server_ns, self.server_if, self.server_ip, self.server_ip6, self.mtu)
        self._address(rtr, self.router_server_if, self.router_server_ip, self.router_server_ip6,
                      self.mtu)
        self._address(rtr, self.router_client_if, self.router_client_ip, self.router_client_ip6,
                      self.router_mtu)
        self._address(self.client_ns, self.client_if, self.client_ip, self.client_ip6,
                      self.router_mtu)
        self.exec(rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.exec(rtr, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self._route(self.server_ns, self.client_ip, self.router_server_ip)
        self._route(self.server_ns, self.client_ip6, self.router_server_ip6)
        self._route(self.client_ns, self.server_ip, self.router_client_ip,
                    "advmss", str(self.mtu - 40))  # IPv4 + TCP headers
        self._route(self.client_ns, self.server_ip6, self.router_client_ip6,
                    "advmss", str(self.mtu - 60))  # IPv6 + TCP headers
        for ns, dev in ((self.client_ns, self.client_if), (rtr, self.router_server_if)):
            self.exec(ns, "ethtool", "-K", dev, "tx", "off")

    def _route(self, ns: str, to: str, via: str, *options: str) -> None:
        """A route in ``ns`` to the subnet of address ``to``, through ``via``."""
        plen = self.prefixlen6 if ":" in to else self.prefixlen
        net = ipaddress.ip_interface(f"{to}/{plen}").network
        self.ip(ns, "-6" if net.version == 6 else "-4", "route", "add", str(net), "via", via,
                *options)
