"""Bulk transfer on one flow: aioxdp against kernel+uvloop in one run on one topology.

    .venv/bin/python bench/bulk_bench.py [--quick] [--repeat 3] [--duration 10]
        [--cases proto-get proto-put http-get http-post http-post-100k]
        [--configs kernel+uvloop aioxdp+uvloop ...] [--mode skb|native]
        [--bulk-size 100000000] [--upload-size 100000] [--upload-connections 4]
        [--server-tso on|off] [--mtu 1500]

Cases (every one against a fresh server process per measurement; MB = 10^6 bytes):
- proto-get, proto-put: --bulk-size bytes (100 MB) from the server to the
  client / from the client to the server through an asyncio.Protocol
  (servers.py ``bulk``), one connection per transfer, client bench/c/bulk_client.c;
- http-get, http-post: the same through aiohttp (servers.py ``http-bulk``):
  ``GET /bytes/N`` streamed by the server, ``POST /upload`` read as it arrives;
  client ``curl -o /dev/null`` / ``curl --data-binary @file``, one connection
  per transfer;
- http-post-100k: many --upload-size (100 KB) POSTs to the same aiohttp
  handler, wrk (one thread, --upload-connections keep-alive connections, 4)
  with bench/wrk_post.lua.

A transfer is one flow; a measured window is transfers one after another for
about --duration seconds (common.transfers), so the CPU accounting, which
moves in 10 ms ticks, has a window of seconds even when the kernel moves
100 MB in a tenth of one. One client process does as many transfers as the
warm-up's rate says fill the window (curl: all on one keep-alive connection;
bulk_client: a connection each), because starting a process per transfer
would cost more CPU than a fast transfer and charge it to every GB. Bounded:
at most 1000 transfers a window, each process killed after 3 × --duration +
15 s, every client with its own time limit. --warmup (at least one transfer,
one per process) is not measured.

Reported, medians over --repeat interleaved rounds (bench/rounds.py, the same
harness and fairness rules as http_bench.py: server on core 0 with its receive
work there, load on core 1, bench/common.py): throughput (MB/s, and Gbit/s;
for single transfers the bytes over the sum of the transfers' own times, as
the client clocks them from connect to the last byte, so starting a client
process is left out), the server process's CPU-s per GB, the whole machine's
CPU-s per GB (both over the whole window), each ÷ kernel+uvloop of the same
run; the load generator's CPU share, the server veth's packets per MB, errors.
The header and the JSON's meta say which TCP core the aioxdp servers ran.

Segment sizes on veth: the client veth has TSO off (bench/common.py), so
uploads arrive as MSS-sized segments (~690 per MB) on both stacks. The server
veth keeps TSO: the kernel server sends 64 KB super-packets (~16 per MB) that
veth hands to the client unsegmented, where a NIC would cut them on the wire
and the client's kernel would take ~690 segments per MB (GRO). The server's
own cost is what it would be with a TSO NIC; the client side's share of the
machine CPU is lower than on a wire. aioxdp sends wire-sized frames
(~690 per MB). ``--server-tso off`` makes the kernel segment in software just
before the device (its GSO), so the client gets wire-sized segments from both.

``--mtu`` sets both veths' MTU before any server starts (9000: jumbo frames;
aioxdp then announces MSS 8960 and sends and receives frames of several UMEM
frames, AF_XDP multi-buffer). Both stacks run on the same MTU in one run;
comparing MTUs takes runs of their own, kernel ratios within each.

Output (--output NAME, default bulk_bench): bench/results/NAME.{json,md,png};
--report-only redoes the table and plot from the JSON.
"""

from __future__ import annotations

import argparse

import rounds
from common import (
    WRK_POST,
    Finished,
    Load,
    bulk_client,
    bulk_client_binary,
    bulk_file,
    curl_client,
    transfers,
    wrk,
)
from rounds import Bench, Case, Metric

from aioxdp.topology import Topology

BULK_PORT, HTTP_PORT = 7008, 8081
CASES = ["proto-get", "proto-put", "http-get", "http-post", "http-post-100k"]
METRICS = [
    Metric("mb_per_s", "MB/s", 1.0, "{:,.0f}"),
    Metric("server_cpu_per_gb", "server CPU-s / GB", 1.0, "{:.3f}"),
    Metric("machine_cpu_per_gb", "machine CPU-s / GB", 1.0, "{:.3f}"),
]
EXTRA = [
    Metric("mb_per_s", "Gbit/s", 8e-3, "{:.2f}"),
    Metric("requests", "transfers (req)", 1.0, "{:,.0f}"),
    Metric("latency_p50", "p50 ms per transfer (req)", 1e3, "{:,.1f}"),
]


def cases(args: argparse.Namespace) -> dict[str, Case]:
    size = args.bulk_size

    def protocol(direction: str) -> Case:
        def load(topo: Topology, seconds: int, warm: Load | None) -> tuple[Load, Finished]:
            return transfers(lambda count, timeout: bulk_client(
                topo, BULK_PORT, direction, size, count, timeout), size, seconds, warm)

        return Case(f"proto-{direction}", "bulk", BULK_PORT, load)

    def http(upload: bool) -> Case:
        def load(topo: Topology, seconds: int, warm: Load | None) -> tuple[Load, Finished]:
            url = f"http://{topo.server_ip}:{HTTP_PORT}/"
            url += "upload" if upload else f"bytes/{size}"
            source = bulk_file(size) if upload else None
            return transfers(lambda count, timeout: curl_client(
                topo, url, size, count, timeout, source), size, seconds, warm)

        return Case("http-post" if upload else "http-get", "http-bulk", HTTP_PORT, load)

    def many_uploads(topo: Topology, seconds: int, _: Load | None) -> tuple[Load, Finished]:
        load, finished = wrk(topo, f"http://{topo.server_ip}:{HTTP_PORT}/upload",
                             args.upload_connections, seconds,
                             script=(str(WRK_POST), str(args.upload_size)))
        load.bytes = load.requests * args.upload_size
        return load, finished

    return {
        "proto-get": protocol("get"),
        "proto-put": protocol("put"),
        "http-get": http(upload=False),
        "http-post": http(upload=True),
        "http-post-100k": Case("http-post-100k", "http-bulk", HTTP_PORT, many_uploads),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bulk-size", type=int, default=100_000_000,
                        help="bytes per single-flow transfer")
    parser.add_argument("--upload-size", type=int, default=100_000,
                        help="bytes per POST in http-post-100k")
    parser.add_argument("--upload-connections", type=int, default=4,
                        help="wrk's connections in http-post-100k")
    parser.add_argument("--mtu", type=int, default=1500,
                        help="MTU of both veths (9000: jumbo frames)")
    parser.add_argument("--server-tso", choices=("on", "off"), default="on",
                        help="TSO on the server veth (off: the kernel segments in software "
                        "before the device, so the client gets wire-sized segments)")


def setup(topo: Topology, args: argparse.Namespace) -> None:
    """The kernel server's TSO on veth, and both veths' MTU, as asked (``--server-tso``,
    ``--mtu``, module doc)."""
    topo.exec(topo.server_ns, "ethtool", "-K", topo.server_if, "tso", args.server_tso)
    for ns, dev in ((topo.server_ns, topo.server_if), (topo.client_ns, topo.client_if)):
        topo.ip(ns, "link", "set", "dev", dev, "mtu", str(args.mtu))


def prepare(args: argparse.Namespace, selected: dict[str, Case]) -> None:
    """Compile the client and write the upload file before any clock starts."""
    if not 0 < args.bulk_size <= 1 << 32 or not 0 < args.upload_size <= 1 << 26:
        raise SystemExit("need 0 < --bulk-size <= 4 GiB and 0 < --upload-size <= 64 MiB")
    if not 1280 <= args.mtu <= 65535:  # IPv6's minimum (the topology has both) .. veth's maximum
        raise SystemExit("need 1280 <= --mtu <= 65535")
    bulk_client_binary()
    if "http-post" in selected:
        bulk_file(args.bulk_size)


BENCH = Bench(
    name="bulk_bench", title="single-flow bulk transfer, aioxdp vs kernel", cases=cases,
    all_cases=CASES, metrics=METRICS, baselines=["kernel+uvloop"], default_cases=CASES,
    default_configs=["kernel+uvloop", "aioxdp+uvloop"], packets_unit="MB", quick=(1, 2, 1),
    add_arguments=add_arguments, extra_metrics=EXTRA, prepare=prepare, setup=setup,
    meta_keys=("bulk_size", "upload_size", "upload_connections", "server_tso", "mtu"))


if __name__ == "__main__":
    rounds.main(BENCH, __doc__ or "")
