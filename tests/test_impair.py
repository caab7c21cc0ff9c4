"""The BPF link impairment really drops and duplicates, and counts what it did.

ping is the probe: only ICMP is impaired (``protocol=IPPROTO_ICMP``), so ARP
and IPv6 housekeeping pass untouched and every drop the program counts is an
echo request ping saw lost.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading

import pytest

from aioxdp.impair import Counters, Impairment
from aioxdp.topology import Topology

pytestmark = pytest.mark.netns

PINGS = 200


def ping(topo: Topology, count: int = PINGS) -> str:
    """Echo requests from the client to the server: ``count`` of them, 10 ms
    apart, then at most 1 s of waiting for the last reply."""
    return topo.exec(topo.client_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.01",
                     "-W", "1", topo.server_ip, check=False).stdout


def received(output: str) -> int:
    match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert match, output
    assert int(match[1]) == PINGS, output
    return int(match[2])


def test_loss_drops_about_that_share(topology: Topology) -> None:
    ping(topology, 1)  # resolve neighbours before the impairment
    with Impairment(topology, topology.client_if, loss=0.10,
                    protocol=socket.IPPROTO_ICMP) as link:
        lost = PINGS - received(ping(topology))
        counters = link.counters()
    assert counters.seen == PINGS
    assert counters.dropped == lost
    assert counters.duplicated == 0
    assert 0.03 * PINGS <= lost <= 0.20 * PINGS


def test_zero_loss_drops_nothing(topology: Topology) -> None:
    with Impairment(topology, topology.client_if, loss=0.0) as link:
        assert received(ping(topology)) == PINGS
        counters = link.counters()
    assert counters.seen >= PINGS  # every packet, ARP included, was looked at
    assert counters.dropped == 0


def test_duplication_gives_dup_replies(topology: Topology) -> None:
    ping(topology, 1)
    with Impairment(topology, topology.client_if, loss=0.0, duplicate=0.5,
                    protocol=socket.IPPROTO_ICMP) as link:
        output = topology.exec(topology.client_ns, "ping", "-n", "-c", "20", "-i", "0.01",
                               "-W", "1", topology.server_ip).stdout
        counters = link.counters()
    dups = output.count("DUP!")
    assert (counters.seen, counters.dropped) == (20, 0)
    # ping exits on its 20th distinct reply: duplicates still on the way then (the last
    # one's, or an earlier one's overtaken on a loaded machine) are never counted
    assert 0 < dups <= counters.duplicated


def test_ingress_and_rate_change(topology: Topology) -> None:
    """At the server's ingress; all-loss then no loss on the same attachment."""
    ping(topology, 1)
    with Impairment(topology, topology.server_if, loss=1.0, direction="ingress",
                    protocol=socket.IPPROTO_ICMP) as link:
        assert received(ping(topology)) == 0
        link.set_rates(loss=0.0)
        assert received(ping(topology)) == PINGS
        assert link.counters() == Counters(seen=2 * PINGS, dropped=PINGS, duplicated=0)


def test_duplicate_at_ingress(topology: Topology) -> None:
    """Every echo request reaches the server twice, so every reply has a DUP!."""
    ping(topology, 1)
    with Impairment(topology, topology.server_if, loss=0.0, duplicate=1.0,
                    direction="ingress", protocol=socket.IPPROTO_ICMP) as link:
        output = topology.exec(topology.client_ns, "ping", "-n", "-c", "10", "-i", "0.01",
                               "-W", "1", topology.server_ip).stdout
        counters = link.counters()
    assert counters == Counters(seen=10, dropped=0, duplicated=10)
    assert output.count("DUP!") >= 9  # ping may leave before the last one's


def test_detaches_on_exit(topology: Topology) -> None:
    with Impairment(topology, topology.client_if, loss=1.0):
        pass
    assert topology.exec(topology.client_ns, "tc", "filter", "show", "dev",
                         topology.client_if, "egress").stdout.strip() == ""
    assert "clsact" not in topology.exec(topology.client_ns, "tc", "qdisc", "show", "dev",
                                         topology.client_if).stdout
    assert received(ping(topology)) == PINGS


def retransmitted_segments(topo: Topology, ns: str) -> int:
    """The namespace's TCP RetransSegs counter (RFC 4022), from /proc/net/snmp."""
    header, values = (line.split() for line in topo.exec(ns, "cat", "/proc/net/snmp")
                      .stdout.splitlines() if line.startswith("Tcp:"))
    return int(values[header.index("RetransSegs")])


def gso_max_segs(topo: Topology) -> int:
    link = topo.ip(topo.client_ns, "-d", "-j", "link", "show", "dev", topo.client_if).stdout
    return int(json.loads(link)[0]["gso_max_segs"])


def test_tcp_loss_is_a_wire_loss(topology: Topology) -> None:
    """A dropped segment is resent by TCP's loss recovery and the data arrives whole.

    This is what makes the egress drop usable for TCP tests: the sending
    kernel is told "sent", so it must detect the loss as it would on a wire.
    """
    topo = topology
    payload = random.Random(7).randbytes(2_000_000)
    with topo.server():
        listener = socket.create_server((topo.server_ip, 5001))
    listener.settimeout(30)
    received_data = bytearray()

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            conn.settimeout(30)
            while chunk := conn.recv(1 << 16):
                received_data.extend(chunk)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    before = retransmitted_segments(topo, topo.client_ns)
    assert gso_max_segs(topo) == 65535
    with Impairment(topo, topo.client_if, loss=0.05, protocol=socket.IPPROTO_TCP) as link:
        assert gso_max_segs(topo) == 1
        with topo.client():
            sender = socket.create_connection((topo.server_ip, 5001), timeout=30)
        with sender:
            sender.sendall(payload)
        server.join(60)
        counters = link.counters()
    assert gso_max_segs(topo) == 65535
    assert bytes(received_data) == payload
    # one draw per segment, not per 64 KiB GSO batch
    assert counters.seen >= len(payload) // 1448
    assert counters.dropped > 0
    # every dropped segment was sent again, but for bare ACKs, which TCP never
    # resends: the client sends two (the handshake's last, and the one of the
    # server's FIN)
    assert retransmitted_segments(topo, topo.client_ns) - before >= counters.dropped - 2
