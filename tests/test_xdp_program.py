"""The XDP program on a real veth pair: exactly our TCP flows reach the AF_XDP
socket, Linux keeps everything else, and a killed owner leaves nothing behind."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from aioxdp._xsk import XdpProgram, XskSocket
from aioxdp.topology import Topology

from .test_xsk import (
    MODES,
    SYN,
    Stack,
    connect_nonblocking,
    ether,
    inject,
    ip_packet,
    open_stack,
    packed_address,
    parse_tcp,
    tcp_header,
    wait_for,
    with_ref_checksums,
)

pytestmark = pytest.mark.netns

LISTEN_PORT = 7000


@pytest.fixture(params=MODES)
def stack(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Stack]:
    with open_stack(topology, request.param) as s:
        yield s


def syn_to(port: int):  # type: ignore[no-untyped-def]
    def match(f: bytes) -> bool:
        seg = parse_tcp(f)
        return seg is not None and seg.dport == port and seg.flags & SYN != 0
    return match


def xdp_attached(topo: Topology) -> bool:
    out = topo.ip(topo.server_ns, "link", "show", "dev", topo.server_if).stdout
    return re.search(r"\bprog/xdp|\bxdp(generic|drv)?\b", out) is not None


def test_only_owned_flows_are_redirected(stack: Stack) -> None:
    t, prog, xsk = stack.topo, stack.prog, stack.xsk
    for addr in (t.server_ip, t.server_ip6):
        prog.add_local_address(packed_address(addr))
        prog.add_listener(packed_address(addr), LISTEN_PORT)
    server = socket.create_server(("0.0.0.0", 0))  # a kernel server in the server namespace
    kernel_port = server.getsockname()[1]

    # ARP and ICMP still reach the kernel
    t.exec(t.client_ns, "ping", "-c1", "-W2", t.server_ip)
    t.exec(t.client_ns, "ping", "-6", "-c1", "-W2", t.server_ip6)
    # the kernel's own TCP server on another port still accepts
    with t.client():
        client = socket.create_connection((t.server_ip, kernel_port), timeout=5)
    with server, client:
        conn, _ = server.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"

    # SYNs to the owned (address, port) pairs arrive on the AF_XDP socket, intact
    for addr in (t.server_ip, t.server_ip6):
        with connect_nonblocking(t, addr, LISTEN_PORT) as c:
            frames = wait_for(xsk, syn_to(LISTEN_PORT))
            seg = next(s for f in frames if (s := parse_tcp(f)) and s.dport == LISTEN_PORT)
            assert seg.sport == c.getsockname()[1]
            assert seg.dst == packed_address(addr)
            assert seg.flags == SYN
    counters = prog.counters()
    assert counters["redirected"] >= 2
    assert counters["passed_not_ip"] >= 1  # ARP
    assert counters["passed_not_tcp"] >= 2  # ICMP echo, ICMPv6 ND
    assert counters["passed_not_ours"] >= 3  # handshake with the kernel's server
    assert counters["redirect_no_socket"] == counters["dropped_malformed"] == 0
    assert xsk.stats()["rx_dropped_checksum"] == 0


def test_wildcard_listener_and_port_range_follow_local_addresses(stack: Stack) -> None:
    t, prog, xsk = stack.topo, stack.prog, stack.xsk
    local = packed_address(t.server_ip)
    prog.add_local_address(local)
    prog.add_listener(bytes(4), 7100)
    prog.set_port_range(40000, 40100)
    for port in (7100, 40050):
        with connect_nonblocking(t, t.server_ip, port):
            wait_for(xsk, syn_to(port))
    redirected = prog.counters()["redirected"]

    # no longer a local address: the kernel answers (with a reset) instead
    prog.remove_local_address(local)
    for port in (7100, 40050):
        with t.client():
            c = socket.socket()
        with c, pytest.raises(ConnectionRefusedError):
            c.settimeout(5)
            c.connect((t.server_ip, port))
    assert prog.counters()["redirected"] == redirected

    # and a specific listener no longer redirects once removed
    prog.add_listener(local, 7200)
    prog.remove_listener(local, 7200)
    prog.remove_listener(local, 7200)  # removing twice is harmless
    with t.client():
        c = socket.socket()
    with c, pytest.raises(ConnectionRefusedError):
        c.settimeout(5)
        c.connect((t.server_ip, 7200))


def test_ours_without_a_socket_is_passed_and_counted(topology: Topology) -> None:
    with topology.server():
        ifindex = socket.if_nametoindex(topology.server_if)
        with XdpProgram.load(ifindex) as prog:
            prog.add_listener(packed_address(topology.server_ip), 7300)
            with topology.client():
                c = socket.socket()
            with c, pytest.raises(ConnectionRefusedError):
                c.settimeout(5)
                c.connect((topology.server_ip, 7300))
            assert prog.counters()["redirect_no_socket"] >= 1


def test_load_sizes_the_flows_map(topology: Topology) -> None:
    """``max_flows`` sizes ``flows`` (the stack passes its max_connections, so the map's
    buckets, which every SYN in cookie mode looks into, are no bigger than needed):
    it takes that many connections and no more."""
    with topology.server():
        ifindex = socket.if_nametoindex(topology.server_if)
        with XdpProgram.load(ifindex, max_flows=8) as prog:
            local = packed_address(topology.server_ip)
            flows = [(local, 80, bytes([198, 18, 9, i]), 40000) for i in range(9)]
            assert prog.add_flows(flows) == 1
            assert len(prog.flows()) == 8


def test_truncated_headers_and_first_fragments_are_dropped(stack: Stack) -> None:
    t, prog = stack.topo, stack.prog
    prog.add_local_address(packed_address(t.server_ip))
    prog.add_listener(packed_address(t.server_ip), 2)

    def segment(dst: str) -> bytes:
        return with_ref_checksums(ether(stack.server_mac, stack.client_mac, ip_packet(
            packed_address(t.client_ip), packed_address(dst), 6, tcp_header(1, 2, 3))))

    half_tcp = 14 + 20 + 10
    fragment = bytearray(segment(t.server_ip))
    fragment[14 + 6] |= 0x20  # more fragments
    later = bytearray(segment(t.server_ip))
    later[14 + 7] = 1  # fragment offset 8: no ports to judge by, the kernel's
    inject(t, [segment(t.server_ip)[:half_tcp], segment("198.18.0.77")[:half_tcp],
               bytes(fragment), bytes(later),
               # an IPv4 header shorter than 20 bytes
               stack.server_mac + stack.client_mac + b"\x08\x00\x45" + bytes(9)])
    # ping after them: once its ARP and ICMP are counted, the others were too
    t.exec(t.client_ns, "ping", "-c1", "-W2", t.server_ip)
    counters = prog.counters()
    assert counters["dropped_malformed"] == 2
    assert counters["dropped_fragment"] == 1  # a first fragment aimed at our port
    assert counters["passed_fragment"] == 1
    assert counters["passed_not_ours"] >= 1
    assert counters["redirected"] == 0


def test_single_vlan_tag_is_understood(stack: Stack) -> None:
    t = stack.topo
    stack.prog.add_listener(packed_address(t.server_ip), 7000)
    untagged = with_ref_checksums(ether(stack.server_mac, stack.client_mac, ip_packet(
        packed_address(t.client_ip), packed_address(t.server_ip), 6,
        tcp_header(5555, 7000, 99))))
    tagged = untagged[:12] + b"\x81\x00\x00\x07" + untagged[12:]  # 802.1Q, VLAN 7
    inject(t, [tagged])
    frames = wait_for(stack.xsk, lambda f: f == tagged)
    assert stack.xsk.stats()["rx_dropped_checksum"] == 0
    assert stack.prog.counters()["redirected"] == len(frames) == 1


CHILD = textwrap.dedent("""
    import socket, sys, time
    from aioxdp._xsk import XdpProgram
    prog = XdpProgram.load(socket.if_nametoindex(sys.argv[1]), mode=sys.argv[2])
    print("attached", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("mode", MODES)
def test_program_goes_away_with_a_killed_owner(topology: Topology, mode: str) -> None:
    child = topology.popen(topology.server_ns, sys.executable, "-c", CHILD,
                           topology.server_if, mode, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"attached\n"
        assert xdp_attached(topology)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # the link's last fd died with the process: the kernel detached it
    assert not xdp_attached(topology)


@pytest.mark.parametrize("mode", MODES)
def test_dispatcher_attach_redirects_and_detaches_on_close(topology: Topology, mode: str) -> None:
    with topology.server():
        ifindex = socket.if_nametoindex(topology.server_if)
        with XdpProgram.load(ifindex, mode=mode, attach="dispatcher") as prog, \
                XskSocket(topology.server_if, 0, prog, mode=mode) as xsk:  # type: ignore[arg-type]
            prog.add_listener(packed_address(topology.server_ip), 7400)
            assert xdp_attached(topology)
            with connect_nonblocking(topology, topology.server_ip, 7400):
                wait_for(xsk, syn_to(7400))
    assert not xdp_attached(topology)
