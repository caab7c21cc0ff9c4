"""Lifecycle behaviour as asyncio on Linux has it, compared on real processes.

The same server program (tests/lifecycle_program.py) runs in the server namespace on
the kernel stack and on aioxdp, and a real Linux socket in the client namespace says
what it saw (EOF, a reset, a complete response): Ctrl-C with an idle client,
``transport.abort()``, ``server.close()`` in the middle of a request. Then the ports:
a served (address, port) is held against kernel sockets in both orders, a killed
stack's reserved range is released by the next one, and a kernel server bound inside
the stack's port range gets its own clients.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aioxdp import kernel
from aioxdp.topology import Topology

from .stackhelpers import BASE_LOOPS, peer_python, peer_server, run_on_stack
from .test_loop import ECHO_CLIENT, Echo

pytestmark = pytest.mark.netns

PORT = 8000
ROOT = Path(__file__).resolve().parent.parent
STACKS = ["kernel", "aioxdp"]
RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"


def start_program(topo: Topology, stack: str, scenario: str, host: str | None = None,
                  port: int = PORT) -> subprocess.Popen[str]:
    """tests/lifecycle_program.py on ``stack`` in the server namespace, once it listens:
    on the kernel (a listening socket in ``ss``) or on the bypass stack (none there)."""
    host = topo.server_ip if host is None else host
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.server_ns, sys.executable, "-m", "tests.lifecycle_program",
         stack, topo.server_if, host, str(port), scenario],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.kill()
        raise AssertionError(f"{stack} {scenario}: {line!r} {proc.communicate()[1]}")
    listening = topo.exec(topo.server_ns, "ss", "-Hltn", f"sport = :{port}").stdout.strip()
    assert bool(listening) == (stack == "kernel"), listening
    return proc


def client(topo: Topology, source: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", topo.client_ns, sys.executable, "-c", textwrap.dedent(source),
         *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], what: str) -> tuple[int, str, str]:
    """Wait for ``proc``; one that hangs is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what} hung: {err[-2000:]}") from None
    return proc.returncode, out, err


IDLE_CLIENT = """
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=25)
    # once greeted, the server accepted: a connection still in a kernel listener's
    # accept queue would be reset when the listener closes
    assert s.recv(6) == b"hello\\n"
    print("connected", flush=True)
    try:
        print("eof" if s.recv(10) == b"" else "data")
    except ConnectionResetError:
        print("reset")
"""


def ctrl_c_with_idle_client(topo: Topology, stack: str) -> tuple[int, str, str]:
    server = start_program(topo, stack, "serve")
    idle = client(topo, IDLE_CLIENT, topo.server_ip, str(PORT))
    try:
        assert idle.stdout is not None and idle.stdout.readline() == "connected\n"
        server.send_signal(signal.SIGINT)
        code, _out, err = finish(server, f"{stack} server after SIGINT")
        _code, seen, _err = finish(idle, "idle client")
    except BaseException:
        server.kill()
        idle.kill()
        raise
    return code, err.strip().splitlines()[-1], seen.strip()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="from 3.12 asyncio's wait_closed "
                    "waits for the idle client, on either stack: the program does not end")
def test_ctrl_c_ends_a_server_with_an_idle_client_as_on_the_kernel(topology: Topology) -> None:
    """`async with server: await server.serve_forever()` ended by SIGINT while a client
    sits idle: on 3.11 asyncio's Server.wait_closed returns at once once the server is
    closed, so the program ends with KeyboardInterrupt on either stack, and the client
    reads EOF (the kernel closes the socket at exit; aioxdp's loop.close() sends FIN)."""
    on_kernel = ctrl_c_with_idle_client(topology, "kernel")
    on_aioxdp = ctrl_c_with_idle_client(topology, "aioxdp")
    assert on_aioxdp == on_kernel == (-signal.SIGINT, "KeyboardInterrupt", "eof")


ABORT_CLIENTS = {
    # bytes sent and read by the server, which aborts
    "abort-read": """
        import socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=25)
        s.sendall(b"x")
        try:
            print("eof" if s.recv(10) == b"" else "data")
        except ConnectionResetError:
            print("reset")
    """,
    "abort-linger": None,  # the same client
    # the server pauses reading after "paused": "unread" waits in its receive buffer
    # until a second connection's bytes make it abort the first
    "abort-unread": """
        import socket, sys
        addr = (sys.argv[1], int(sys.argv[2]))
        a = socket.create_connection(addr, timeout=25)
        a.sendall(b"first")
        assert a.recv(10) == b"paused"
        a.sendall(b"unread")
        b = socket.create_connection(addr, timeout=25)
        b.sendall(b"go")
        try:
            print("eof" if a.recv(10) == b"" else "data")
        except ConnectionResetError:
            print("reset")
    """,
}


def abort_seen_by_peer(topo: Topology, stack: str, scenario: str) -> str:
    server = start_program(topo, stack, scenario)
    source = ABORT_CLIENTS[scenario] or ABORT_CLIENTS["abort-read"]
    try:
        _code, seen, err = finish(client(topo, source, topo.server_ip, str(PORT)), "client")
        assert finish(server, f"{stack} server")[0] == 0
    finally:
        server.kill()
    assert seen, err
    return seen.strip()


@pytest.mark.parametrize("scenario, expected", [
    ("abort-read", "eof"),      # Linux close(): FIN after what the send buffer holds
    ("abort-unread", "reset"),  # received data left unread: RST (RFC 2525 §2.17)
    ("abort-linger", "reset"),  # SO_LINGER on, 0 s: RST
])
def test_abort_reaches_the_peer_as_a_socket_close_does(topology: Topology, scenario: str,
                                                       expected: str) -> None:
    assert abort_seen_by_peer(topology, "kernel", scenario) == expected
    assert abort_seen_by_peer(topology, "aioxdp", scenario) == expected


MID_REQUEST_CLIENT = """
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=25)
    s.sendall(b"first line\\n")
    got = b""
    while not got.endswith(b"closed\\n"):
        got += s.recv(100)
    s.sendall(b"second line\\n")   # reaches the server after its listener closed
    body = 0
    try:
        while chunk := s.recv(65536):
            body += len(chunk)
        print("eof", body)
    except ConnectionResetError:
        print("reset", body)
"""


@pytest.mark.parametrize("stack", STACKS)
def test_server_close_lets_a_request_in_flight_finish(topology: Topology, stack: str) -> None:
    """server.close() between two lines of a request: the rest of the request reaches
    the server, the whole response reaches the client, and the connection ends with a
    FIN. On aioxdp the listener is gone from the XDP program by then, and the
    connection's segments still come by its `flows` entry (without it Linux would
    answer them with RST)."""
    from .lifecycle_program import RESPONSE_BYTES

    server = start_program(topology, stack, "close-mid-request")
    try:
        _code, seen, err = finish(client(topology, MID_REQUEST_CLIENT, topology.server_ip,
                                         str(PORT)), "client")
        assert finish(server, f"{stack} server")[0] == 0
    finally:
        server.kill()
    assert seen.split() == ["eof", str(RESPONSE_BYTES)], err


# -- ports --------------------------------------------------------------------------------


def kernel_server_error(topo: Topology, host: str) -> str:
    """What a kernel asyncio server on (host, PORT) says when it cannot bind."""
    proc = subprocess.run(
        ["ip", "netns", "exec", topo.server_ns, sys.executable, "-m", "tests.lifecycle_program",
         "kernel", topo.server_if, host, str(PORT), "serve"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc
    return proc.stderr.strip().splitlines()[-1]


def bind_error(*sockaddr: object) -> str:
    """asyncio's create_server error for an address in use (base_events.py)."""
    return (f"OSError: [Errno {errno.EADDRINUSE}] error while attempting to bind on address "
            f"{sockaddr!r}: address already in use")


def test_a_port_a_kernel_server_listens_on_is_refused_as_a_second_kernel_server_is(
        topology: Topology) -> None:
    t = topology
    kernel_server = start_program(t, "kernel", "serve")
    try:
        # what a second kernel server gets
        assert kernel_server_error(t, t.server_ip) == bind_error(t.server_ip, PORT)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for host in (t.server_ip, None):  # the address, and every address
                with pytest.raises(OSError) as refused:
                    await loop.create_server(Echo, host, PORT)
                assert refused.value.errno == errno.EADDRINUSE
            assert f"OSError: {refused.value}" == bind_error("0.0.0.0", PORT)
            # the stack serves other ports; the kernel server still listens on its own
            server = await loop.create_server(Echo, t.server_ip, PORT + 1)
            async with server:
                await peer_python(t, ECHO_CLIENT, t.server_ip, str(PORT + 1), "1")
            listening = t.exec(t.server_ns, "ss", "-Hltn", f"sport = :{PORT}").stdout
            assert listening.strip()

        run_on_stack(t, main)
    finally:
        kernel_server.kill()
        kernel_server.communicate()


def test_a_kernel_server_cannot_take_a_port_the_stack_serves(topology: Topology) -> None:
    t = topology

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, [t.server_ip, t.server_ip6], PORT)
        async with server:
            # kernel servers on either address, and on every address, are refused (the
            # latter at whichever wildcard getaddrinfo gives first: both are in use)
            for host, shown in ((t.server_ip, [(t.server_ip, PORT)]),
                                (t.server_ip6, [(t.server_ip6, PORT, 0, 0)]),
                                ("", [("0.0.0.0", PORT), ("::", PORT, 0, 0)])):
                error = await asyncio.to_thread(kernel_server_error, t, host)
                assert error in [bind_error(*sockaddr) for sockaddr in shown]
            await peer_python(t, ECHO_CLIENT, t.server_ip, str(PORT), "1")
        # the stack let go of the port with its server: a kernel server gets it
        kernel_server = await asyncio.to_thread(start_program, t, "kernel", "serve")
        kernel_server.kill()
        kernel_server.communicate()

    run_on_stack(t, main)


KILLED_STACK = """
    import asyncio, sys, aioxdp

    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_server(asyncio.Protocol, sys.argv[1], int(sys.argv[2]))
        print("ready", flush=True)
        await asyncio.sleep(60)

    aioxdp.run(main(), interface=sys.argv[3])
"""


def reserved(topo: Topology) -> str:
    return topo.exec(topo.server_ns, "cat", RESERVED).stdout.strip()


def test_a_killed_stack_s_reserved_ports_are_released_by_the_next(topology: Topology) -> None:
    """SIGKILL leaves the port range reserved (nothing of the process runs again); the
    record it left under /run/aioxdp lets the next stack in the namespace tell the range
    from an administrator's reservation, and release it when it is done."""
    t = topology
    lo, hi = 61000, 64999
    # an administrator's own reservation inside the range outlives every stack
    t.exec(t.server_ns, "sysctl", "-qw", f"net.ipv4.ip_local_reserved_ports={lo + 5}")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", t.server_ns, sys.executable, "-c", textwrap.dedent(KILLED_STACK),
         t.server_ip, str(PORT), t.server_if], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        records = [name for name in os.listdir(kernel.RUN_DIR) if f"-{proc.pid}-" in name]
        assert len(records) == 1
    finally:
        proc.kill()
        proc.communicate()
    assert reserved(t) == f"{lo}-{hi}"  # leaked

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, t.server_ip, PORT)
        async with server:
            await peer_python(t, ECHO_CLIENT, t.server_ip, str(PORT), "1")
        assert await asyncio.to_thread(reserved, t) == f"{lo}-{hi}"

    run_on_stack(t, main)
    assert reserved(t) == str(lo + 5)
    assert not os.path.exists(os.path.join(kernel.RUN_DIR, records[0]))


def test_a_kernel_server_bound_inside_the_port_range_is_the_kernel_s(
        topology: Topology) -> None:
    """The kernel never picks a port of the stack's range itself (reserved), but a
    program may bind one explicitly, before or after the stack starts: the XDP program
    passes it every tuple of no stack connection that a kernel socket has, so its
    clients are served, while the stack's own outgoing connections in the range work."""
    t = topology
    in_range = 62000  # in 61000-64999
    seen = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, t.server_ip, PORT)
        async with server:
            await peer_python(t, ECHO_CLIENT, t.server_ip, str(PORT), "1")
            kernel_server = await asyncio.to_thread(start_program, t, "kernel", "abort-read",
                                                    None, in_range)
            try:
                _code, out, _err = await peer_python(t, ABORT_CLIENTS["abort-read"] or "",
                                                     t.server_ip, str(in_range))
                seen.append(out.decode().strip())
            finally:
                kernel_server.kill()
                kernel_server.communicate()
            # the stack's own connections from its range are unaffected
            proc = await peer_server(t, """
                import socket
                srv = socket.create_server(("0.0.0.0", 9000))
                c, _ = srv.accept()
                while data := c.recv(65536):
                    c.sendall(data)
            """, 9000)
            reader, writer = await asyncio.open_connection(t.client_ip, 9000)
            assert 61000 <= writer.get_extra_info("sockname")[1] <= 64999
            writer.write(b"ping")
            seen.append((await asyncio.wait_for(reader.readexactly(4), 10)).decode())
            writer.close()
            await proc.wait()

    run_on_stack(t, main)
    assert seen == ["eof", "ping"]  # the kernel server read the byte and closed


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_after_abort_the_protocol_hears_only_connection_lost(topology: Topology,
                                                             base: str) -> None:
    """abort() with much written and unacknowledged: connection_lost(None) comes on a
    later iteration, and nothing after it (no data, EOF or resume_writing), while the
    peer still gets a FIN after the bytes the stack held."""
    t = topology
    heard: list[str] = []
    total = 4 << 20

    class Writer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            heard.append("data")
            if heard.count("data") == 1:
                self.transport.write(b"x" * total)
                self.transport.abort()
                heard.append("aborted")

        def eof_received(self) -> bool:
            heard.append("eof")
            return False

        def pause_writing(self) -> None:
            heard.append("pause")

        def resume_writing(self) -> None:
            heard.append("resume")

        def connection_lost(self, exc: BaseException | None) -> None:
            heard.append(f"lost {exc}")

    async def main() -> str:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Writer, t.server_ip, PORT)
        async with server:
            _code, out, _err = await peer_python(t, """
                import socket, sys
                s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=25)
                s.sendall(b"go")
                got = 0
                try:
                    while chunk := s.recv(65536):
                        got += len(chunk)
                    print("eof", got > 0)
                except ConnectionResetError:
                    print("reset", got > 0)
            """, t.server_ip, str(PORT))
        return out.decode().strip()

    seen = run_on_stack(t, main, loop=base)
    assert heard[heard.index("aborted") + 1:] == ["lost None"], heard
    assert seen == "eof True"
