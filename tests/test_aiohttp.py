"""An unmodified aiohttp application served by aioxdp, driven by real clients
(curl, wrk, aiohttp's client) from the peer namespace, on both base loops."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest
from aiohttp import WSMsgType, web

from aioxdp.topology import Topology

from .stackhelpers import BASE_LOOPS, peer, peer_python, run_on_stack

pytestmark = pytest.mark.netns

PORT = 8080


def make_app() -> web.Application:
    """A plain aiohttp app: nothing in it knows about aioxdp."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    async def digest(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            h.update(chunk)
            n += len(chunk)
        return web.json_response({"size": n, "sha256": h.hexdigest()})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(100):
            await response.write(f"line {i}\n".encode())
        await response.write_eof()
        return response

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data[::-1])
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/", hello)
    app.router.add_post("/digest", digest)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/ws", websocket)
    return app


async def serve(topo: Topology) -> web.AppRunner:
    runner = web.AppRunner(make_app())
    await runner.setup()
    await web.TCPSite(runner, topo.server_ip, PORT).start()
    return runner


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_curl_get_post_chunked_keepalive(topology: Topology, base: str) -> None:
    url = f"http://{topology.server_ip}:{PORT}"

    async def main() -> list[bytes]:
        runner = await serve(topology)
        try:
            outs = []
            # keep-alive: two URLs on one curl invocation reuse the connection
            _, out, err = await peer(topology, "curl", "-sS", "-v", f"{url}/", f"{url}/")
            outs += [out, err]
            _, out, _ = await peer(topology, "sh", "-c",
                                   f"head -c 10485760 /dev/urandom | tee /tmp/body.$$ | "
                                   f"curl -sS --data-binary @- "
                                   f"-H 'Content-Type: application/octet-stream' "
                                   f"{url}/digest; echo; sha256sum /tmp/body.$$; rm /tmp/body.$$")
            outs.append(out)
            _, out, _ = await peer(topology, "curl", "-sS", "--raw", f"{url}/chunked")
            outs.append(out)
            return outs
        finally:
            await runner.cleanup()

    get2, verbose, post, chunked = run_on_stack(topology, main, loop=base)
    assert get2 == b"Hello, worldHello, world"
    assert b"Re-using existing connection" in verbose or b"Reusing existing" in verbose
    answer, checksum = post.decode().splitlines()
    assert f'"size": {10 * 1024 * 1024}' in answer
    assert checksum.split()[0] in answer
    text = chunked.decode()
    assert "line 0\n" in text and "line 99\n" in text
    assert re.search(r"^[0-9a-f]+\r$", text, re.M), "curl --raw shows chunk sizes"


@pytest.mark.parametrize("base", BASE_LOOPS)
def test_aiohttp_client_and_websocket(topology: Topology, base: str) -> None:
    async def main() -> bytes:
        runner = await serve(topology)
        try:
            _, out, _ = await peer_python(topology, """
                import aiohttp, asyncio, sys
                async def main():
                    url = f"http://{sys.argv[1]}:{sys.argv[2]}"
                    async with aiohttp.ClientSession() as s:
                        for _ in range(20):                      # keep-alive pool
                            async with s.get(url + "/") as r:
                                assert r.status == 200 and await r.text() == "Hello, world"
                        async with s.ws_connect(url + "/ws") as ws:
                            await ws.send_str("stressed")
                            assert (await ws.receive_str()) == "desserts"
                            blob = bytes(range(256)) * 4000
                            await ws.send_bytes(blob)
                            assert (await ws.receive_bytes()) == blob
                    print("ok")
                asyncio.run(main())
            """, topology.server_ip, str(PORT))
            return out
        finally:
            await runner.cleanup()

    assert run_on_stack(topology, main, loop=base).strip() == b"ok"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (scripts/setup.sh)")
@pytest.mark.parametrize("base", BASE_LOOPS)
def test_wrk_gets_only_correct_answers(topology: Topology, base: str) -> None:
    async def main() -> str:
        runner = await serve(topology)
        try:
            _, out, _ = await peer(topology, "wrk", "-t1", "-c50", "-d2s",
                                   f"http://{topology.server_ip}:{PORT}/", timeout=60)
            return out.decode()
        finally:
            await runner.cleanup()

    report = run_on_stack(topology, main, loop=base)
    requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
    assert requests > 100
    assert "Non-2xx" not in report
    assert "Socket errors" not in report, report


def test_unmodified_app_with_run_app_semantics(topology: Topology) -> None:
    """web.run_app's own machinery (AppRunner/TCPSite with reuse flags) binds through the loop."""

    async def main() -> bytes:
        runner = web.AppRunner(make_app())
        await runner.setup()
        site = web.TCPSite(runner, topology.server_ip, PORT, reuse_address=True, reuse_port=True)
        await site.start()
        try:
            assert site.name == f"http://{topology.server_ip}:{PORT}"
            _, out, _ = await peer(topology, "curl", "-sS", f"http://{topology.server_ip}:{PORT}/")
            return out
        finally:
            await runner.cleanup()

    assert run_on_stack(topology, main) == b"Hello, world"
