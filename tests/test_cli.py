"""The ``aioxdp`` command: argument errors, stats formatting, topo up/down, run, stats, demo.

The namespace tests run the real thing: ``python -m aioxdp run`` in the server
namespace of a Topology, clients (curl, python) in the client namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioxdp import cli, statsserver, statsview, topo_cli
from aioxdp.demo import AppProcess, aioxdp_run, xdp_attached
from aioxdp.settings import Settings
from aioxdp.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
PORT = 8080
METRICS_PORT = 9100


def aioxdp(*args: str, timeout: float = 60.0,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aioxdp", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, check=False,
                          env=None if env is None else {**os.environ, **env})


# -- argument errors: exit status 2 and one clear line ------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["run"], "the following arguments are required: MODULE:APP"),
    (["run", "examples.hello_aiohttp"], "expected MODULE:APP"),
    (["run", "no_such_module_here:app", "--interface", "lo"], "no module named"),
    (["run", "examples.hello_aiohttp:nope", "--interface", "lo"], "has no attribute 'nope'"),
    (["run", "examples.hello_aiohttp:app"], "no interface: pass --interface"),
    (["run", "examples.hello_aiohttp:app", "--interface", "nosuchdev0"], "no interface named"),
    (["run", "examples.hello_aiohttp:app", "--interface", "lo", "--port", "0"], "1-65535"),
    (["run", "examples.hello_aiohttp:app", "--interface", "lo", "--mode", "x"], "invalid choice"),
    (["run", "examples.hello_aiohttp:app", "--interface", "lo", "--port", "8080",
      "--metrics", "8080"], "is the app's port"),
    (["run", "examples.hello_aiohttp:app", "--interface", "lo", "--metrics", "62000"],
     "in the stack's port range"),
    (["run", "examples.hello_aiohttp:app", "--interface", "lo", "--metrics", "nohost:1"],
     "not an IP address"),
    (["stats", "--watch", "0"], "must be positive"),
    (["topo", "up", "--prefix", "far-too-long-prefix"], "prefix must be"),
    (["topo", "up", "--queues", "0"], "must be at least 1"),
    (["topo"], "required: ACTION"),
    ([], "required: COMMAND"),
])
def test_argument_errors_exit_2(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AIOXDP_INTERFACE", raising=False)
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.strip().splitlines()[-1].startswith("aioxdp")  # argparse's "prog: error: ..."


def test_bad_environment_is_an_argument_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOXDP_MODE", "turbo")
    result = aioxdp("run", "examples.hello_aiohttp:app", "--interface", "lo")
    assert result.returncode == 2
    assert "mode must be 'skb' or 'native'" in result.stderr


def test_console_entry_point_runs_the_same_cli() -> None:
    result = aioxdp("--help")
    assert result.returncode == 0
    for command in ("run", "stats", "topo", "demo"):
        assert command in result.stdout
    script = Path(sys.executable).parent / "aioxdp"  # pyproject's [project.scripts]
    if script.exists():
        bad = subprocess.run([str(script), "run", "nocolon"], capture_output=True, text=True)
        assert bad.returncode == 2
        assert "aioxdp run: error: expected MODULE:APP" in bad.stderr


# -- stats: formatting and the unix socket ------------------------------------------------------

SNAPSHOT = {
    "pid": 42, "interface": "eth9", "queue": 1, "mode": "native", "poll": "busy", "uptime": 75.5,
    "running": True, "addresses": ["198.18.0.1"],
    "xdp": {"passed_not_ip": 3, "passed_not_tcp": 7, "passed_not_ours": 2, "redirected": 1000,
            "redirect_no_socket": 1, "dropped_malformed": 4},
    "xsk": {"rx": 1000, "fill_ring": 2048},
    "tcp": {"connections": {"ESTABLISHED": 3}, "retransmissions": 5, "srtt": 0.00125},
    "parse_drops": 0,
}


def test_verdict_totals_group_the_xdp_counters() -> None:
    assert statsview.verdict_totals(SNAPSHOT["xdp"]) == (1000, 13, 4)  # type: ignore[arg-type]


def test_format_snapshot_shows_every_section() -> None:
    text = statsview.format_snapshot(SNAPSHOT)
    assert text.startswith("eth9 queue 1 — pid 42, up 1m15s, native XDP, busy poll")
    assert "1,000 redirected to the stack, 13 passed to Linux, 4 dropped" in text
    for line in ("XDP verdicts", "AF_XDP socket", "  fill ring  2,048", "TCP", "    ESTABLISHED",
                 "  retransmissions  5", "  srtt             0.00125", "parse drops  0"):
        assert line in text


@pytest.mark.parametrize("snap", [{}, {"xdp": {}}, {"interface": "x", "tcp": "n/a"},
                                  {"running": False, "error": "boom"}])
def test_format_snapshot_survives_missing_and_odd_keys(snap: dict[str, object]) -> None:
    assert statsview.format_snapshot(snap)


def test_prometheus_text_has_every_number_once() -> None:
    text = statsserver.prometheus_text(SNAPSHOT)
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines())
    labels = '{interface="eth9",queue="1"}'
    assert samples[f"aioxdp_up{labels}"] == "1"
    assert samples[f"aioxdp_xdp_redirected{labels}"] == "1000"
    assert samples[f"aioxdp_tcp_connections_ESTABLISHED{labels}"] == "3"
    assert samples[f"aioxdp_tcp_srtt{labels}"] == "0.00125"
    assert not any(name.startswith(("aioxdp_pid", "aioxdp_queue")) for name in samples)
    assert len(samples) == len(text.splitlines())


def test_plain_makes_core_values_json_ready() -> None:
    import enum

    class State(enum.Enum):
        ESTABLISHED = 4

    data = statsserver.plain({State.ESTABLISHED: 2, "addr": b"\xc6\x12\x00\x01",
                              "key": b"\x01\x02", ("a", 1): {1, 2}})
    assert data == {"ESTABLISHED": 2, "addr": "198.18.0.1", "key": "0102", '["a", 1]': [1, 2]}
    json.dumps(data)


@pytest.fixture
def stats_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(statsserver, "STATS_DIR", tmp_path)
    return tmp_path


async def test_stats_socket_serves_snapshots_and_is_removed(stats_dir: Path) -> None:
    settings = Settings(interface="eth9", queue=1)
    calls = []

    def collect() -> dict[str, object]:
        calls.append(1)
        return {**SNAPSHOT, "calls": len(calls)}

    server = statsserver.StatsServer(settings, collect)
    assert await server.start()
    # named after the namespace too: eth9 of another namespace has a socket of its own
    assert server.path == stats_dir / f"eth9-1@{statsserver.netns_inode()}.sock"
    assert statsserver.socket_path("eth9", 1) == server.path
    first, problems = await asyncio.to_thread(statsserver.query_all, "eth9")
    second = await asyncio.to_thread(statsserver.query, server.path)
    assert problems == []
    assert first[0]["xdp"] == SNAPSHOT["xdp"]
    assert (first[0]["calls"], second["calls"]) == (1, 2)  # fresh numbers on every connect
    assert first[0]["socket"] == str(server.path)
    assert await asyncio.to_thread(statsserver.query_all, "eth1") == ([], [])
    await server.close()
    assert not server.path.exists()


async def test_stale_socket_is_reported_then_replaced(stats_dir: Path) -> None:
    stale = statsserver.socket_path("eth9", 0)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # the file stays after close, as after a SIGKILL
    snapshots, problems = statsserver.query_all()
    assert snapshots == [] and "stale socket" in problems[0]
    server = statsserver.StatsServer(Settings(interface="eth9"), lambda: {"pid": 1})
    assert await server.start()
    assert (await asyncio.to_thread(statsserver.query, stale))["pid"] == 1
    await server.close()


def test_stats_command_without_stacks_says_so(stats_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stats", "--interface", "eth9"]) == 1
    assert "no running aioxdp stack for eth9 answered" in capsys.readouterr().out
    assert cli.main(["stats", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == []


# -- namespace tests: the real thing ------------------------------------------------------------


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.netns
def test_topo_up_then_down_leaves_nothing() -> None:
    prefix = f"axt{time.monotonic_ns() % 10**8}"
    up = aioxdp("topo", "up", "--prefix", prefix, "--queues", "2")
    try:
        assert up.returncode == 0, up.stderr
        assert {f"{prefix}-srv", f"{prefix}-cli"} <= netns_names()
        assert f"ip netns exec {prefix}-srv" in up.stdout
        assert f"aioxdp topo down --prefix {prefix}" in up.stdout
        record = json.loads(topo_cli.topo_record(prefix).read_text())
        assert record["server_if"] == f"{prefix}s" and record["queues"] == 2
        ethtool = subprocess.run(["ip", "netns", "exec", f"{prefix}-srv", "ethtool", "-l",
                                  f"{prefix}s"], capture_output=True, text=True).stdout
        assert re.search(r"Current hardware settings:.*?RX:\s+2", ethtool, re.DOTALL)
        again = aioxdp("topo", "up", "--prefix", prefix)
        assert again.returncode == 1 and "already exist" in again.stderr
        assert {f"{prefix}-srv", f"{prefix}-cli"} <= netns_names()  # the failed `up` kept them
    finally:
        down = aioxdp("topo", "down", "--prefix", prefix)
    assert down.returncode == 0
    assert f"removed topology {prefix!r}" in down.stdout
    assert not {f"{prefix}-srv", f"{prefix}-cli"} & netns_names()
    assert not topo_cli.topo_record(prefix).exists()
    assert "no topology to remove" in aioxdp("topo", "down", "--prefix", prefix).stdout


@pytest.mark.netns
def test_topo_down_without_prefix_removes_every_recorded_one(tmp_path: Path) -> None:
    prefixes = [f"axr{time.monotonic_ns() % 10**7}{i}" for i in range(2)]
    # records of its own: a bare `topo down` must not take down what others left up
    env = {"AIOXDP_RUN_DIR": str(tmp_path)}
    try:
        for prefix in prefixes:
            assert aioxdp("topo", "up", "--prefix", prefix, env=env).returncode == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f"topo-{prefix}.json" for prefix in prefixes]
        down = aioxdp("topo", "down", env=env)
        assert down.returncode == 0
        for prefix in prefixes:
            assert f"removed topology {prefix!r}" in down.stdout
        assert not {f"{p}-{side}" for p in prefixes for side in ("srv", "cli")} & netns_names()
        assert list(tmp_path.iterdir()) == []
    finally:
        for prefix in prefixes:
            Topology(prefix=prefix).down()


def client(topo: Topology, *cmd: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", topo.client_ns, *cmd], capture_output=True,
                          text=True, timeout=timeout, check=False)


def curl_until_answered(topo: Topology, app: AppProcess, url: str, *args: str,
                        attempts: int = 80) -> str:
    """curl from the client namespace, retrying while the app starts (bounded)."""
    for _ in range(attempts):
        result = client(topo, "curl", "-sS", "-m", "2", *args, url)
        if result.returncode == 0:
            return result.stdout
        assert app.alive(), f"the app exited ({app.proc.returncode}):\n{app.log_tail()}"
        time.sleep(0.25)
    raise AssertionError(f"no answer from {url}: {result.stderr}\n{app.log_tail()}")


@pytest.fixture
def hello(topology: Topology, tmp_path: Path) -> Iterator[AppProcess]:
    """examples/hello_aiohttp.py served by `aioxdp run` in the server namespace."""
    cmd = aioxdp_run("examples.hello_aiohttp:app", "--interface", topology.server_if,
                     "--host", topology.server_ip, "--port", str(PORT),
                     "--metrics", str(METRICS_PORT))
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        yield app


@pytest.mark.netns
def test_run_serves_then_detaches_on_sigterm(topology: Topology, hello: AppProcess) -> None:
    url = f"http://{topology.server_ip}:{PORT}"
    assert curl_until_answered(topology, hello, url + "/") == "Hello, world"
    assert curl_until_answered(topology, hello, url + "/echo", "--data-binary", "ping") == "ping"
    assert xdp_attached(topology)
    sock = statsserver.socket_path(topology.server_if, 0)
    assert sock.exists()
    assert hello.stop() == 0, hello.log_tail()
    assert not xdp_attached(topology), hello.log_tail()
    assert not sock.exists()
    reserved = subprocess.run(
        ["ip", "netns", "exec", topology.server_ns, "cat",
         "/proc/sys/net/ipv4/ip_local_reserved_ports"], capture_output=True, text=True).stdout
    assert reserved.strip() == ""
    # and the port now belongs to nobody: Linux answers the SYN with a reset
    refused = client(topology, "curl", "-sS", "-m", "2", url + "/")
    assert refused.returncode == 7, refused  # curl: "Failed to connect"


@pytest.mark.netns
def test_stats_and_metrics_while_running(topology: Topology, hello: AppProcess) -> None:
    url = f"http://{topology.server_ip}:{PORT}/"
    for _ in range(3):
        assert curl_until_answered(topology, hello, url) == "Hello, world"
    ping = client(topology, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1",
                  topology.server_ip)
    assert ping.returncode == 0, ping.stdout  # ICMP: passed to Linux, which answers
    result = aioxdp("stats", "--json", "--interface", topology.server_if)
    assert result.returncode == 0, result.stderr
    (snap,) = json.loads(result.stdout)
    assert snap["pid"] == hello.proc.pid
    assert (snap["interface"], snap["queue"], snap["running"]) == (topology.server_if, 0, True)
    assert topology.server_ip in snap["addresses"]
    redirected, passed, _dropped = statsview.verdict_totals(snap["xdp"])
    assert redirected >= 3 * 4  # each curl: SYN, request, ACKs, FIN...
    assert passed >= 2  # the echo requests
    table = aioxdp("stats", "--interface", topology.server_if)
    assert table.returncode == 0
    assert f"{topology.server_if} queue 0 — pid {hello.proc.pid}" in table.stdout
    assert "XDP verdicts" in table.stdout
    # Prometheus, from the client namespace, on the kernel stack of the same address
    metrics = client(topology, "curl", "-sS", "-m", "3",
                     f"http://{topology.server_ip}:{METRICS_PORT}/metrics")
    assert metrics.returncode == 0, metrics.stderr
    samples = dict(line.rsplit(" ", 1) for line in metrics.stdout.splitlines())
    labels = f'{{interface="{topology.server_if}",queue="0"}}'
    assert float(samples[f"aioxdp_xdp_redirected{labels}"]) >= redirected


@pytest.mark.netns
@pytest.mark.parametrize("target", ["aioxdp.demo:hello_app", "async_factory:make_app"])
def test_run_accepts_app_factories(topology: Topology, tmp_path: Path, target: str) -> None:
    """A function returning the app, plain (the demo's fallback) or async."""
    (tmp_path / "async_factory.py").write_text(
        "from aioxdp.demo import hello_app\n\n\n"
        "async def make_app():\n    return hello_app()\n")
    cmd = aioxdp_run(target, "--interface", topology.server_if, "--host", topology.server_ip,
                     "--port", str(PORT))
    with AppProcess(topology, cmd, cwd=tmp_path, log=tmp_path / "app.log") as app:
        url = f"http://{topology.server_ip}:{PORT}/"
        assert curl_until_answered(topology, app, url) == "Hello, world"
        assert app.stop() == 0, app.log_tail()
    assert "on the bypass stack" in app.log.read_text()


@pytest.mark.netns
def test_run_without_host_serves_every_address_of_the_device(topology: Topology,
                                                             tmp_path: Path) -> None:
    cmd = aioxdp_run("examples.hello_aiohttp:app", "--interface", topology.server_if)
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        for host in (topology.server_ip, f"[{topology.server_ip6}]"):
            url = f"http://{host}:{PORT}/"
            assert curl_until_answered(topology, app, url) == "Hello, world"
        assert app.stop() == 0, app.log_tail()
    assert "on the bypass stack" in app.log.read_text()


@pytest.mark.netns
def test_demo_runs_end_to_end() -> None:
    result = aioxdp("demo", "--duration", "2", "--connections", "10", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("requests/s", "latency avg / p99", "packets redirected to the stack",
                "packets passed to Linux", "packets dropped by XDP", "clean exit on SIGTERM"):
        assert row in result.stdout
    redirected = re.search(r"packets redirected to the stack \(XDP\)\s+([\d,]+)", result.stdout)
    assert redirected and int(redirected[1].replace(",", "")) > 100
    namespaces = re.search(r"(\S+-srv) \(.*?\) <-> (\S+-cli)", result.stderr)
    assert namespaces, result.stderr
    assert not {namespaces[1], namespaces[2]} & netns_names()  # its topology is gone


@pytest.mark.netns
def test_filter_command_blocks_and_unblocks_a_client_of_a_running_app(
        topology: Topology, tmp_path: Path) -> None:
    """``aioxdp filter`` from another process (ip netns exec) edits the running server's rules."""
    cmd = aioxdp_run("examples.hello_aiohttp:app", "--interface", topology.server_if,
                     "--host", topology.server_ip, "--port", str(PORT))
    url = f"http://{topology.server_ip}:{PORT}/"

    def aioxdp_in_server_ns(*args: str) -> subprocess.CompletedProcess[str]:
        return topology.exec(topology.server_ns, sys.executable, "-m", "aioxdp", *args,
                             "--interface", topology.server_if, check=False)

    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        assert curl_until_answered(topology, app, url) == "Hello, world"
        denied = aioxdp_in_server_ns("filter", "deny", f"{topology.client_ip}/32")
        assert denied.returncode == 0, denied.stderr
        assert client(topology, "curl", "-sS", "-m", "1", url).returncode != 0
        listing = aioxdp_in_server_ns("filter", "list", "--json")
        assert f"{topology.client_ip}/32" in listing.stdout
        assert aioxdp_in_server_ns("filter", "remove", f"{topology.client_ip}/32").returncode == 0
        assert curl_until_answered(topology, app, url) == "Hello, world"
        assert app.stop() == 0, app.log_tail()


@pytest.mark.netns
def test_run_with_two_workers_serves_and_stats_sums_them(tmp_path: Path) -> None:
    """``aioxdp run --workers 2`` on a two-queue veth (native mode: generic XDP sees
    every frame on queue 0): both workers answer, and ``aioxdp stats`` adds a sum row."""
    with Topology(queues=2) as topo:
        cmd = aioxdp_run("examples.hello_aiohttp:app", "--interface", topo.server_if,
                         "--host", topo.server_ip, "--port", str(PORT), "--mode", "native",
                         "--workers", "2")
        url = f"http://{topo.server_ip}:{PORT}/"
        with AppProcess(topo, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
            assert curl_until_answered(topo, app, url) == "Hello, world"
            for _ in range(3):  # both stats sockets up
                stats = aioxdp("stats", "--interface", topo.server_if)
                if "2 workers" in stats.stdout:
                    break
                time.sleep(0.5)
            # many source ports spread over both queues
            for _ in range(20):
                assert client(topo, "curl", "-sS", "-m", "2", url).stdout == "Hello, world"
            stats = aioxdp("stats", "--interface", topo.server_if)
            assert f"{topo.server_if}: 2 workers" in stats.stdout, stats.stdout + stats.stderr
            sum_row = next(line for line in stats.stdout.splitlines()
                           if line.strip().startswith("sum"))
            assert sum_row
            snaps = json.loads(aioxdp("stats", "--interface", topo.server_if, "--json").stdout)
            assert sorted(s["queue"] for s in snaps) == [0, 1]
            assert all(s["xsk"]["rx"] > 0 for s in snaps), "a worker received nothing"
            assert app.stop() == 0, app.log_tail()
        assert not xdp_attached(topo)
