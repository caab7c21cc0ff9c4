"""Serving applications as real processes (aioxdp/serving.py, aioxdp/strays.py): ASGI apps
through uvicorn's protocol, uvicorn's own command on an aioxdp loop, a one-line error for
what cannot be served, and a graceful shutdown on SIGINT/SIGTERM that lets the
application's own shutdown run while a request is in progress.

Every app runs in the server namespace of a fresh topology; its peer is curl in the client
namespace. That the bypass stack served is read off the system, not the app: no kernel
listener on the port (``ss``), and the XDP program's ``redirected`` counter moved.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aioxdp.demo import AppProcess, aioxdp_run
from aioxdp.protect import Protection
from aioxdp.topology import Topology

from .test_cli import aioxdp, client, curl_until_answered

pytestmark = pytest.mark.netns

PORT = 8080
MARK_TIMEOUT = 20.0  # seconds for an app to reach a step it reports in its marks file

# An ASGI app with a lifespan whose shutdown awaits (a cancelled shutdown never writes its
# mark), a slow request, and a page saying which loop served it.
ASGI_APP = '''
import asyncio
from pathlib import Path

MARKS = Path({marks!r})


def mark(text):
    with MARKS.open("a") as f:
        f.write(text + "\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                mark("startup")
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.sleep(0.2)
                mark("shutdown")
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    if scope["path"] == "/slow":
        mark("request")
        await asyncio.sleep(1.0)
        body = b"slow done"
    elif scope["path"] == "/loop":
        loop = asyncio.get_running_loop()
        body = f"{{type(loop).__name__}} {{getattr(loop, 'xdp_stack', None) is not None}}".encode()
    else:
        body = b"Hello, ASGI"
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": body}})
'''

AIOHTTP_APP = '''
import asyncio
from pathlib import Path

from aiohttp import web

MARKS = Path({marks!r})


def mark(text):
    with MARKS.open("a") as f:
        f.write(text + "\\n")


async def slow(request):
    mark("request")
    await asyncio.sleep(1.0)
    return web.Response(text="slow done")


async def on_shutdown(app):
    mark("shutdown")


async def on_cleanup(app):
    await asyncio.sleep(0.2)
    mark("cleanup")


app = web.Application()
app.router.add_get("/slow", slow)
app.on_shutdown.append(on_shutdown)
app.on_cleanup.append(on_cleanup)
'''

# An async main serving HTTP/1.0 by hand, whose finally awaits before it marks.
ASYNC_MAIN = '''
import asyncio
from pathlib import Path

MARKS = Path({marks!r})


def mark(text):
    with MARKS.open("a") as f:
        f.write(text + "\\n")


async def handle(reader, writer):
    await reader.readline()
    if (await reader.readuntil(b"\\r\\n\\r\\n")) is not None:
        mark("request")
        await asyncio.sleep(1.0)
        writer.write(b"HTTP/1.0 200 OK\\r\\ncontent-length: 9\\r\\n\\r\\nslow done")
        await writer.drain()
    writer.close()


async def main(host, port):
    server = await asyncio.start_server(handle, host, port)
    try:
        await server.serve_forever()
    finally:
        server.close()
        await asyncio.sleep(0.2)
        mark("finally")
'''


def write_app(tmp_path: Path, name: str, template: str) -> Path:
    """The app module ``name`` in ``tmp_path``; returns the file its marks go to."""
    marks = tmp_path / f"{name}.marks"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(template.format(marks=str(marks))))
    return marks


def read_marks(marks: Path) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


def wait_for_mark(marks: Path, text: str, app: AppProcess, *, count: int = 1) -> None:
    """Until ``text`` was marked ``count`` times (bounded; the app must stay up)."""
    deadline = time.monotonic() + MARK_TIMEOUT
    while read_marks(marks).count(text) < count:
        assert app.alive(), f"the app exited ({app.proc.returncode}):\n{app.log_tail()}"
        assert time.monotonic() < deadline, f"no {text!r} mark:\n{app.log_tail()}"
        time.sleep(0.05)


def kernel_listeners(topo: Topology, port: int) -> str:
    """``ss`` lines of kernel sockets listening on ``port`` in the server namespace."""
    return topo.exec(topo.server_ns, "ss", "-ltnH", f"sport = :{port}").stdout.strip()


def redirected(topo: Topology) -> int:
    """The XDP program's count of frames handed to the bypass stack."""
    with topo.server(), Protection.attach(topo.server_if) as protection:
        return protection.counters()["redirected"]


def test_run_serves_an_asgi_app_through_uvicorn(topology: Topology, tmp_path: Path) -> None:
    marks = write_app(tmp_path, "asgi_app", ASGI_APP)
    cmd = aioxdp_run("asgi_app:app", "--interface", topology.server_if,
                     "--host", topology.server_ip, "--port", str(PORT))
    url = f"http://{topology.server_ip}:{PORT}"
    with AppProcess(topology, cmd, cwd=tmp_path, log=tmp_path / "app.log") as app:
        assert curl_until_answered(topology, app, url + "/") == "Hello, ASGI"
        assert client(topology, "curl", "-sS", "-m", "5", url + "/loop").stdout.endswith(" True")
        assert kernel_listeners(topology, PORT) == ""
        assert redirected(topology) > 0
        assert read_marks(marks) == ["startup"]
        assert app.stop() == 0, app.log_tail()
    assert read_marks(marks) == ["startup", "shutdown"], app.log_tail()
    log = app.log.read_text()
    assert "on the bypass stack" in log and "Traceback" not in log


def test_run_serves_an_asgi_app_from_two_workers(tmp_path: Path) -> None:
    """``--workers 2`` on a two-queue veth (native XDP): each worker runs uvicorn's
    protocol and the app's lifespan on its own stack, and both serve."""
    marks = write_app(tmp_path, "asgi_app", ASGI_APP)
    with Topology(queues=2) as topo:
        cmd = aioxdp_run("asgi_app:app", "--interface", topo.server_if, "--host",
                         topo.server_ip, "--port", str(PORT), "--mode", "native",
                         "--workers", "2")
        url = f"http://{topo.server_ip}:{PORT}/"
        with AppProcess(topo, cmd, cwd=tmp_path, log=tmp_path / "app.log") as app:
            assert curl_until_answered(topo, app, url) == "Hello, ASGI"
            wait_for_mark(marks, "startup", app, count=2)
            for _ in range(20):  # many source ports: spread over both queues
                assert client(topo, "curl", "-sS", "-m", "2", url).stdout == "Hello, ASGI"
            snaps = json.loads(aioxdp("stats", "--interface", topo.server_if, "--json").stdout)
            assert sorted(snap["queue"] for snap in snaps) == [0, 1]
            assert all(snap["xsk"]["rx"] > 0 for snap in snaps), "a worker received nothing"
            assert kernel_listeners(topo, PORT) == ""
            assert app.stop() == 0, app.log_tail()
    assert sorted(read_marks(marks)) == ["shutdown", "shutdown", "startup", "startup"]


UNUSABLE = '''
number = 42


def needs_arguments(config, state):
    return None


def returns_text():
    return "not an app"


async def wants_host(host):
    return 0


class Handler:
    pass
'''


def test_unusable_targets_are_one_line_errors(topology: Topology, tmp_path: Path) -> None:
    """Exit status 2 and one line naming the problem, as an argument error: never a
    traceback. An ASGI app without uvicorn names the extra to install."""
    (tmp_path / "unusable.py").write_text(UNUSABLE)
    write_app(tmp_path, "asgi_app", ASGI_APP)
    no_uvicorn = ("import sys; sys.modules['uvicorn'] = None; from aioxdp.cli import main; "
                  "sys.exit(main(sys.argv[1:]))")
    cases = [
        (aioxdp_run("unusable:number"), "42 (int) is neither"),
        (aioxdp_run("unusable:needs_arguments"), "needs_arguments() needs config, state"),
        (aioxdp_run("unusable:returns_text"), "returns_text() returned str"),
        (aioxdp_run("unusable:wants_host"), "wants_host() needs host: pass --host"),
        (aioxdp_run("unusable:Handler"), "Handler() returned Handler"),
        ([sys.executable, "-c", no_uvicorn, "run", "asgi_app:app"],
         "app is an ASGI application: serving it needs uvicorn (pip install 'aioxdp[asgi]')"),
    ]
    for cmd, message in cases:
        result = topology.exec(topology.server_ns, "env", f"--chdir={tmp_path}", *cmd,
                               "--interface", topology.server_if, "--port", str(PORT),
                               check=False)
        errors = [line for line in result.stderr.splitlines() if ": error: " in line]
        assert result.returncode == 2, (cmd, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert len(errors) == 1 and message in errors[0], (message, result.stderr)


def test_workers_stop_at_a_target_they_cannot_serve(tmp_path: Path) -> None:
    """Each worker loads the target itself; one that cannot be served ends the run with
    status 2 and its one-line reason, instead of being restarted over and over."""
    (tmp_path / "unusable.py").write_text(UNUSABLE)
    with Topology(queues=2) as topo:
        result = topo.exec(topo.server_ns, "env", f"--chdir={tmp_path}",
                           *aioxdp_run("unusable:returns_text"), "--interface", topo.server_if,
                           "--mode", "native", "--workers", "2", check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "returns_text() returned str" in result.stderr
    assert result.stderr.count(": pid ") == 2, result.stderr  # two started, none again


def test_uvicorn_command_runs_on_aioxdp_with_its_loop_setting(topology: Topology,
                                                              tmp_path: Path) -> None:
    """The documented one-liner: uvicorn's own command, its loop factory aioxdp's."""
    marks = write_app(tmp_path, "asgi_app", ASGI_APP)
    cmd = ["env", f"AIOXDP_INTERFACE={topology.server_if}", sys.executable, "-m", "uvicorn",
           "asgi_app:app", "--host", topology.server_ip, "--port", str(PORT),
           "--loop", "aioxdp:new_event_loop"]
    url = f"http://{topology.server_ip}:{PORT}"
    with AppProcess(topology, cmd, cwd=tmp_path, log=tmp_path / "uvicorn.log") as app:
        assert curl_until_answered(topology, app, url + "/") == "Hello, ASGI"
        on_loop = client(topology, "curl", "-sS", "-m", "5", url + "/loop").stdout
        assert on_loop.startswith("Xdp") and on_loop.endswith(" True"), on_loop
        assert kernel_listeners(topology, PORT) == ""
        assert redirected(topology) > 0
        # uvicorn's own way to end: its graceful shutdown, then the signal raised again
        assert app.stop() == -signal.SIGTERM, app.log_tail()
    assert read_marks(marks) == ["startup", "shutdown"], app.log_tail()


UVICORN_RUN = '''
import sys

import aioxdp
import uvicorn

aioxdp.install()
options = {{"loop": sys.argv[3]}} if len(sys.argv) > 3 else {{}}
uvicorn.run("asgi_app:app", host=sys.argv[1], port=int(sys.argv[2]), **options)
'''


@pytest.mark.parametrize("loop", [None, "aioxdp:new_event_loop"])
def test_install_warns_when_uvicorns_own_loop_takes_the_interface(
        topology: Topology, tmp_path: Path, loop: str | None) -> None:
    """``aioxdp.install()`` + ``uvicorn.run(app)``: uvicorn builds its own loop, which
    binds a kernel socket to the interface's address: served, by the kernel, and said
    so. With uvicorn's loop setting pointing at aioxdp: the bypass stack, no warning."""
    write_app(tmp_path, "asgi_app", ASGI_APP)
    (tmp_path / "serve.py").write_text(UVICORN_RUN.format())
    cmd = ["env", f"AIOXDP_INTERFACE={topology.server_if}", sys.executable, "serve.py",
           topology.server_ip, str(PORT), *([loop] if loop else [])]
    url = f"http://{topology.server_ip}:{PORT}"
    with AppProcess(topology, cmd, cwd=tmp_path, log=tmp_path / "serve.log") as app:
        assert curl_until_answered(topology, app, url + "/") == "Hello, ASGI"
        on_loop = client(topology, "curl", "-sS", "-m", "5", url + "/loop").stdout
        listeners = kernel_listeners(topology, PORT)
        assert app.stop() == -signal.SIGTERM, app.log_tail()
    log = app.log.read_text()
    if loop is None:
        assert on_loop.endswith(" False") and not on_loop.startswith("Xdp"), on_loop
        assert f"{topology.server_ip}:{PORT}" in listeners
        assert log.count("KERNEL stack") == 1, log
        assert "--loop aioxdp:new_event_loop" in log
    else:
        assert on_loop.startswith("Xdp") and on_loop.endswith(" True"), on_loop
        assert listeners == ""
        assert "KERNEL stack" not in log, log


def signal_during_a_request(topo: Topology, app: AppProcess, marks: Path,
                            sig: signal.Signals) -> tuple[int, str, int]:
    """Once ``app`` answers /slow, start a second /slow and send ``sig`` while it is in
    progress: (curl's status, the body it got, the app's exit status)."""
    url = f"http://{topo.server_ip}:{PORT}/slow"
    assert curl_until_answered(topo, app, url) == "slow done"  # up, and warm
    request = subprocess.Popen(
        ["ip", "netns", "exec", topo.client_ns, "curl", "-sS", "-m", "15", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_mark(marks, "request", app, count=2)
        app.proc.send_signal(sig)
        out, _err = request.communicate(timeout=30)
    finally:
        if request.poll() is None:
            request.kill()
            request.wait()
    return request.returncode, out, app.proc.wait(30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize(("template", "target", "answered", "after"), [
    (AIOHTTP_APP, "aiohttp_app:app", True, ["shutdown", "cleanup"]),
    (ASGI_APP, "asgi_app:app", True, ["shutdown"]),
    # asyncio.run cancels a main's leftover tasks, its connection handlers among them
    (ASYNC_MAIN, "main_app:main", False, ["finally"]),
], ids=["aiohttp", "asgi", "async-main"])
def test_a_signal_lets_the_apps_own_shutdown_run(
        topology: Topology, tmp_path: Path, sig: signal.Signals, template: str, target: str,
        answered: bool, after: list[str]) -> None:
    """SIGINT/SIGTERM while a request is in progress: the application's own shutdown
    (aiohttp's on_shutdown/on_cleanup, the ASGI lifespan shutdown, the async main's
    finally) runs to its end, each awaiting on its way, the request in progress is
    answered in full where the framework waits for it, and the process exits 0."""
    marks = write_app(tmp_path, target.partition(":")[0], template)
    cmd = aioxdp_run(target, "--interface", topology.server_if, "--host", topology.server_ip,
                     "--port", str(PORT))
    with AppProcess(topology, cmd, cwd=tmp_path, log=tmp_path / "app.log") as app:
        curl_status, body, status = signal_during_a_request(topology, app, marks, sig)
    if answered:
        assert (curl_status, body) == (0, "slow done"), app.log_tail()
    assert status == 0, app.log_tail()
    assert read_marks(marks)[-len(after):] == after, app.log_tail()
    assert f"{sig.name}: shutting down" in app.log.read_text()


AIOHTTP_ON_KERNEL = '''
import sys

from aiohttp import web

from aiohttp_app import app

web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), shutdown_timeout=5.0, print=None)
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_aiohttp_stops_on_a_signal_as_on_the_kernel_stack(
        topology: Topology, tmp_path: Path, sig: signal.Signals) -> None:
    """The same aiohttp app, stopped by the same signal during a request: with aiohttp's
    own ``web.run_app`` on asyncio's loop and kernel sockets, and with ``aioxdp run``.
    The client's answer, the app's exit status and its shutdown steps are the same."""
    outcomes = []
    for stack in ("kernel", "aioxdp"):
        workdir = tmp_path / stack
        workdir.mkdir()
        marks = write_app(workdir, "aiohttp_app", AIOHTTP_APP)
        (workdir / "on_kernel.py").write_text(AIOHTTP_ON_KERNEL)
        cmd = (aioxdp_run("aiohttp_app:app", "--interface", topology.server_if, "--host",
                          topology.server_ip, "--port", str(PORT)) if stack == "aioxdp"
               else [sys.executable, "on_kernel.py", topology.server_ip, str(PORT)])
        with AppProcess(topology, cmd, cwd=workdir, log=workdir / "app.log") as app:
            outcome = signal_during_a_request(topology, app, marks, sig)
        outcomes.append((*outcome, read_marks(marks)))
        if stack == "kernel":
            assert topology.exec(topology.client_ns, "curl", "-sS", "-m", "2",
                                 f"http://{topology.server_ip}:{PORT}/",
                                 check=False).returncode == 7  # gone: connection refused
    on_kernel, on_aioxdp = outcomes
    assert on_kernel == (0, "slow done", 0, ["request", "request", "shutdown", "cleanup"])
    assert on_aioxdp == on_kernel
