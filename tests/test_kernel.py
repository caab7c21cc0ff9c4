"""aioxdp.kernel against the real kernel, from a thread moved into the server
namespace with setns() — the way the stack runs in tests and the demo."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from aioxdp import kernel
from aioxdp.kernel import Address, NeighbourUnreachable
from aioxdp.topology import Topology

pytestmark = pytest.mark.netns

T = TypeVar("T")
V4, V6 = socket.AF_INET, socket.AF_INET6


def packed(text: str) -> bytes:
    return socket.inet_pton(V6 if ":" in text else V4, text)


def ip_json(topo: Topology, ns: str, *args: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(topo.ip(ns, "-j", "-d", *args).stdout)


def mac_of(topo: Topology, ns: str, dev: str) -> bytes:
    return bytes.fromhex(ip_json(topo, ns, "link", "show", "dev", dev)[0]["address"]
                         .replace(":", ""))


def in_server_thread(topo: Topology, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread inside the server namespace; return its result.

    Only that thread moves: the test's own thread (and /proc/self) stay in
    the namespace the process started in.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with topo.server():
                result.append(fn())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    return result[0]


# --- interfaces ------------------------------------------------------------------

def test_interface_matches_ip_link_and_addr() -> None:
    with Topology(queues=4) as topo:
        # the IPv6 link-local address appears a moment after the link goes up
        facts = in_server_thread(topo, lambda: kernel.interface(topo.server_if))
        link = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]
        addrs = ip_json(topo, topo.server_ns, "addr", "show", "dev", topo.server_if)[0]
    assert facts.name == topo.server_if
    assert facts.index == link["ifindex"]
    assert facts.mac == bytes.fromhex(link["address"].replace(":", ""))
    assert facts.mtu == link["mtu"] == 1500
    assert facts.queues == link["num_rx_queues"] == 4
    expected = {
        Address(packed(a["local"]), a["prefixlen"], V4 if a["family"] == "inet" else V6)
        for a in addrs["addr_info"]
    }
    assert Address(packed(topo.server_ip), 24, V4) in expected
    assert Address(packed(topo.server_ip6), 64, V6) in expected
    assert set(facts.addresses) <= expected  # a link-local address may come later
    assert Address(packed(topo.server_ip), 24, V4) in facts.addresses
    assert Address(packed(topo.server_ip6), 64, V6) in facts.addresses


def test_interface_counts_queues_in_use() -> None:
    """Queues in use (ethtool -L), not queues allocated (what netlink reports)."""
    with Topology(queues=4) as topo:
        topo.exec(topo.server_ns, "ethtool", "-L", topo.server_if, "rx", "2")
        facts = in_server_thread(topo, lambda: kernel.interface(topo.server_if))
        link = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]
    assert (facts.queues, link["num_rx_queues"]) == (2, 4)


def test_interface_without_channels_or_mac(topology: Topology) -> None:
    """lo: no ethtool channels (netlink's count is used), an all-zero MAC."""
    lo = in_server_thread(topology, lambda: kernel.interface("lo"))
    assert (lo.index, lo.mac, lo.mtu, lo.queues) == (1, bytes(6), 65536, 1)
    assert Address(packed("127.0.0.1"), 8, V4) in lo.addresses


def test_unknown_interface_raises(topology: Topology) -> None:
    with pytest.raises(OSError):
        # exists in the client namespace only
        in_server_thread(topology, lambda: kernel.interface(topology.client_if))


# --- routes ----------------------------------------------------------------------

def test_next_hop_on_link_and_via_gateway(topology: Topology) -> None:
    topo = topology
    topo.ip(topo.server_ns, "route", "add", "198.19.0.0/24", "via", topo.client_ip)
    topo.ip(topo.server_ns, "-6", "route", "add", "2001:2:0:1::/64", "via", topo.client_ip6)
    topo.ip(topo.server_ns, "route", "add", "198.19.1.0/24", "via", "inet6", topo.client_ip6)

    def hops() -> list[tuple[bytes | None, int]]:
        return [kernel.next_hop(packed(a)) for a in (
            topo.client_ip, "198.19.0.7", topo.client_ip6, "2001:2:0:1::7", "198.19.1.7")]

    ifindex = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]["ifindex"]
    assert in_server_thread(topo, hops) == [
        (None, ifindex),
        (packed(topo.client_ip), ifindex),
        (None, ifindex),
        (packed(topo.client_ip6), ifindex),
        (packed(topo.client_ip6), ifindex),
    ]


def test_next_hop_without_route_raises(topology: Topology) -> None:
    with pytest.raises(OSError):
        in_server_thread(topology, lambda: kernel.next_hop(packed("198.19.9.9")))


# --- neighbours ------------------------------------------------------------------

def wait_link_local(topo: Topology) -> None:
    """Wait (at most 5 s) for duplicate address detection of the server's link-local
    address, which takes a second or two after the link comes up.

    Linux sends a neighbour solicitation that no packet prompted from the
    link-local address only, and not while it is tentative (RFC 4862 §5.4:
    a tentative address is not used); until then a resolution asked for with
    NTF_USE sends nothing.
    """
    for _ in range(50):
        if not topo.ip(topo.server_ns, "-6", "addr", "show", "dev", topo.server_if,
                       "tentative").stdout.strip():
            return
        time.sleep(0.1)
    pytest.fail("the link-local address stayed tentative")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_neighbour_mac_resolves_after_flush(topology: Topology, family: str) -> None:
    topo = topology
    peer = packed(topo.client_ip if family == "ipv4" else topo.client_ip6)
    # make the server learn the client's address the usual way, then forget it
    topo.exec(topo.client_ns, "ping", "-c", "1", "-W", "1",
              topo.server_ip if family == "ipv4" else topo.server_ip6)
    topo.ip(topo.server_ns, "neigh", "flush", "all")
    if family == "ipv6":
        wait_link_local(topo)
    ifindex = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]["ifindex"]

    def resolve() -> tuple[bytes | None, bytes, bytes | None]:
        before = kernel.lookup_neighbour(ifindex, peer)
        mac = kernel.neighbour_mac(ifindex, peer)
        return before, mac, kernel.lookup_neighbour(ifindex, peer)

    before, mac, after = in_server_thread(topo, resolve)
    assert before is None
    assert mac == after == mac_of(topo, topo.client_ns, topo.client_if)


def test_resolve_neighbour_in_a_running_loop(topology: Topology) -> None:
    import asyncio

    topo = topology
    ifindex = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]["ifindex"]
    mac = in_server_thread(
        topo, lambda: asyncio.run(kernel.resolve_neighbour(ifindex, packed(topo.client_ip))))
    assert mac == mac_of(topo, topo.client_ns, topo.client_if)


def test_neighbour_nobody_answers(topology: Topology) -> None:
    """An on-link address nobody holds: ARP goes out, nothing comes back."""
    topo = topology
    ifindex = ip_json(topo, topo.server_ns, "link", "show", "dev", topo.server_if)[0]["ifindex"]
    with pytest.raises(NeighbourUnreachable):
        in_server_thread(topo, lambda: kernel.neighbour_mac(
            ifindex, packed("198.18.0.99"), timeout=0.3))


# --- reserved ports --------------------------------------------------------------

def sysctl(topo: Topology, ns: str, name: str, value: str | None = None) -> str:
    if value is not None:
        topo.exec(ns, "sysctl", "-q", "-w", f"{name}={value}")
    return topo.exec(ns, "sysctl", "-n", name).stdout.strip()


def bound_ports(count: int) -> set[int]:
    """Ports the kernel picks for ``count`` successive bind(0) calls."""
    ports = set()
    for _ in range(count):
        with socket.socket() as s:
            s.bind(("198.18.0.1", 0))
            ports.add(s.getsockname()[1])
    return ports


def test_reserved_ports_are_never_picked(topology: Topology) -> None:
    topo = topology
    name = "net.ipv4.ip_local_reserved_ports"
    # a small ephemeral range, most of it ours: 100 binds show the kernel
    # avoids the reserved part; afterwards they land there too
    sysctl(topo, topo.server_ns, "net.ipv4.ip_local_port_range", "40000 40099")
    host_before = kernel.reserved_ports()

    def reserve_then_bind() -> tuple[str, set[int]]:
        kernel.reserve_ports(40000, 40089)
        return sysctl(topo, topo.server_ns, name), bound_ports(100)

    value, ports = in_server_thread(topo, reserve_then_bind)
    assert value == "40000-40089"
    assert ports <= set(range(40090, 40100))
    # /proc/sys/net followed the thread, not the process
    assert kernel.reserved_ports() == host_before

    def release_then_bind() -> set[int]:
        kernel.release_ports(40000, 40089)
        return bound_ports(100)

    ports = in_server_thread(topo, release_then_bind)
    assert sysctl(topo, topo.server_ns, name) == ""
    assert ports & set(range(40000, 40090))


def test_release_keeps_other_reservations(topology: Topology) -> None:
    topo = topology
    name = "net.ipv4.ip_local_reserved_ports"
    sysctl(topo, topo.server_ns, name, "40005,50000-50002")

    def reserve() -> str:
        kernel.reserve_ports(40000, 40009)
        return sysctl(topo, topo.server_ns, name)

    assert in_server_thread(topo, reserve) == "40000-40009,50000-50002"
    in_server_thread(topo, lambda: kernel.release_ports(40000, 40009))
    assert sysctl(topo, topo.server_ns, name) == "40005,50000-50002"


@pytest.mark.parametrize("text, ports", [
    ("", set()),
    ("\n", set()),
    ("8080", {8080}),
    ("8080,9148-9150\n", {8080, 9148, 9149, 9150}),
])
def test_reserved_ports_text_round_trip(text: str, ports: set[int]) -> None:
    assert kernel._parse_ports(text) == ports
    assert kernel._parse_ports(kernel._format_ports(ports)) == ports
