"""aioxdp against the kernel stack, each under asyncio and uvloop, in one run on one topology.

    .venv/bin/python bench/http_bench.py [--quick] [--repeat 3] [--duration 10]
        [--cases http-c50 http-c500 echo] [--configs kernel+asyncio ...] [--mode skb|native]

Cases (every one against a fresh server process per measurement):
- http-c50, http-c500: aiohttp hello world, wrk (one thread) with 50 / 500
  connections, keep-alive;
- echo: a 64-byte ping-pong against an asyncio.Protocol echo server,
  --echo-connections (100) connections, from bench/c/echo_client.c.

Configurations: kernel+asyncio, kernel+uvloop, aioxdp+asyncio, aioxdp+uvloop,
one server core each (bench/common.py has the fairness rules). Every
measurement is repeated --repeat times, the repeats interleaved (all cases
and configurations once, then again, the order of configurations rotated
each round) so slow drift in the machine's load hits every configuration
alike; the tables show medians. Each load runs --warmup seconds before the
measured --duration.

Output (--output NAME, default http_bench): bench/results/NAME.json (every
run), NAME.md (the table, also printed) and NAME.png (the ratios, absolute
values on the bars); --report-only redoes the last two from the JSON. The
header line and the JSON's meta say which TCP core the aioxdp servers ran
("compiled" or "pure", as each server reported it). The rounds, medians,
ratios and output are bench/rounds.py's, shared with bulk_bench.py.
"""

from __future__ import annotations

import argparse

import rounds
from common import echo_client_binary, echo_load, wrk
from rounds import CONFIGS, Bench, Case, Metric

HTTP_PORT, ECHO_PORT = 8080, 7007
METRICS = [
    Metric("rps", "req/s", 1.0, "{:,.0f}"),
    Metric("latency_p99", "p99 ms", 1e3, "{:.2f}"),
    Metric("server_cpu_per_1k", "server CPU-s / 1k req", 1.0, "{:.4f}"),
    Metric("machine_cpu_per_1k", "machine CPU-s / 1k req", 1.0, "{:.4f}"),
]


def cases(args: argparse.Namespace) -> dict[str, Case]:
    def http(connections: int) -> Case:
        return Case(f"http-c{connections}", "http", HTTP_PORT,
                    lambda topo, seconds, _: wrk(topo, f"http://{topo.server_ip}:{HTTP_PORT}/",
                                                 connections, seconds))

    return {
        "http-c50": http(50),
        "http-c500": http(500),
        "echo": Case("echo", "echo", ECHO_PORT,
                     lambda topo, seconds, _: echo_load(topo, ECHO_PORT, args.echo_connections,
                                                        seconds, args.echo_size)),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--echo-connections", type=int, default=100)
    parser.add_argument("--echo-size", type=int, default=64)


def prepare(args: argparse.Namespace, selected: dict[str, Case]) -> None:
    if "echo" in selected:
        echo_client_binary()


BENCH = Bench(
    name="http_bench", title="aioxdp vs kernel stack", cases=cases,
    all_cases=["http-c50", "http-c500", "echo"], metrics=METRICS,
    baselines=["kernel+asyncio", "kernel+uvloop"],
    default_cases=["http-c50", "http-c500", "echo"], default_configs=CONFIGS,
    packets_unit="req", quick=(1, 3, 1), add_arguments=add_arguments,
    meta_keys=("echo_connections", "echo_size"), prepare=prepare)


if __name__ == "__main__":
    rounds.main(BENCH, __doc__ or "")
