"""Every example does what its docstring says, through the bypass stack.

Each runs in the server namespace of a Topology, the way its docstring says to
start it; the other end is ordinary Linux (python's socket module, curl,
a kernel HTTP server) in the client namespace. That the bypass stack carried
the traffic, and not the server namespace's kernel, is checked too: by the
XDP program's redirect counter, or by the client's source port.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aioxdp import statsserver, statsview
from aioxdp.demo import AppProcess, aioxdp_run
from aioxdp.settings import Settings
from aioxdp.topology import Topology

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# A kernel echo client: connects (retrying while the server starts), sends
# ``size`` bytes, half-closes, and exits 0 only if the same bytes came back.
ECHO_CLIENT = textwrap.dedent("""
    import socket, sys, time
    host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    payload = bytes(i % 251 for i in range(size))
    for _ in range(80):
        try:
            sock = socket.create_connection((host, port), timeout=10)
            break
        except OSError:
            time.sleep(0.25)
    else:
        sys.exit("could not connect")
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    got = bytearray()
    while chunk := sock.recv(65536):
        got += chunk
    sys.exit(0 if got == payload else f"sent {size} bytes, got {len(got)} back, different")
""")

# A kernel HTTP server for one request: answers, and prints the client's port.
ONE_SHOT_SERVER = textwrap.dedent("""
    import socket, sys
    listener = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    listener.settimeout(60)
    conn, (_addr, port) = listener.accept()
    request = b""
    while b"\\r\\n\\r\\n" not in request:
        request += conn.recv(4096)
    body = b"from the kernel stack"
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n"
                 % len(body) + body)
    conn.close()
    print(port, request.split(b"\\r\\n")[0].decode(), flush=True)
""")


def in_client(topo: Topology, *cmd: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", topo.client_ns, *cmd], capture_output=True,
                          text=True, timeout=timeout, check=False)


def redirected(topo: Topology) -> int:
    """The running app's XDP redirect counter, read through its stats socket."""
    snap = statsserver.query(statsserver.socket_path(topo.server_if, 0))
    assert snap["running"], snap
    return statsview.verdict_totals(snap["xdp"])[0]


def example(name: str, topo: Topology, *options: str) -> list[str]:
    """``python examples/NAME.py --interface IF ...``, as the docstrings say."""
    return [sys.executable, str(EXAMPLES / name), "--interface", topo.server_if, *options]


@pytest.mark.parametrize(("name", "launch", "port"), [
    ("echo_protocol", "script", 7007),  # python examples/echo_protocol.py ...
    ("echo_streams", "aioxdp run", 7008),  # aioxdp run examples.echo_streams:main ...
])
def test_echo_servers_echo(topology: Topology, tmp_path: Path, name: str, launch: str,
                           port: int) -> None:
    options = ("--host", topology.server_ip)
    cmd = example(f"{name}.py", topology, *options) if launch == "script" else aioxdp_run(
        f"examples.{name}:main", "--interface", topology.server_if, *options)
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        for size in (1, 200_000):
            echo = in_client(topology, sys.executable, "-c", ECHO_CLIENT, topology.server_ip,
                             str(port), str(size))
            assert echo.returncode == 0, f"{echo.stderr}\n{app.log_tail()}"
        assert redirected(topology) > 200_000 // 1500  # the bytes came through AF_XDP
        assert app.stop() == 0, app.log_tail()
        assert f"on {topology.server_ip}:{port}" in app.log.read_text()


def test_hello_aiohttp_as_a_script(topology: Topology, tmp_path: Path) -> None:
    cmd = example("hello_aiohttp.py", topology, "--host", topology.server_ip)
    url = f"http://{topology.server_ip}:8080"
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        hello = in_client(topology, "curl", "-sS", "-m", "2", "--retry", "30",
                          "--retry-connrefused", "--retry-delay", "1", "--retry-max-time", "30",
                          url + "/")
        assert hello.stdout == "Hello, world", f"{hello.stderr}\n{app.log_tail()}"
        echo = in_client(topology, "curl", "-sS", "-m", "5", "--data-binary",
                         "@" + str(EXAMPLES / "hello_aiohttp.py"), url + "/echo")
        assert echo.stdout == (EXAMPLES / "hello_aiohttp.py").read_text()
        assert redirected(topology) > 0
        assert app.stop() == 0, app.log_tail()


def test_hello_aiohttp_is_plain_aiohttp() -> None:
    """The app module itself knows nothing of aioxdp: only its __main__ block does."""
    source = (EXAMPLES / "hello_aiohttp.py").read_text()
    body = source.split('if __name__ == "__main__":')[0]
    assert "aioxdp" not in body.split('"""', 2)[2]  # outside the docstring
    assert "aioxdp run examples.hello_aiohttp:app --interface IF --host ADDR --port 8080" \
        in source


def test_fetch_from_kernel(topology: Topology) -> None:
    server = subprocess.Popen(
        ["ip", "netns", "exec", topology.client_ns, sys.executable, "-c", ONE_SHOT_SERVER,
         topology.client_ip, "8000"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "listening\n"
        fetch = subprocess.run(
            ["ip", "netns", "exec", topology.server_ns,
             *example("fetch_from_kernel.py", topology, "--host", topology.client_ip,
                      "--port", "8000")],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
        assert fetch.returncode == 0, fetch.stderr
        # text mode: the response's CRLFs read as "\n"
        assert fetch.stdout.startswith("HTTP/1.1 200 OK\n"), fetch.stdout
        assert fetch.stdout.endswith("\n\nfrom the kernel stack")
        port, request_line = server.communicate(timeout=10)[0].split(" ", 1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert request_line.strip() == "GET / HTTP/1.1"
    low, high = Settings().port_range
    assert low <= int(port) <= high  # a port of the bypass stack's range, not the kernel's
