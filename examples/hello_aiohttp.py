"""A plain aiohttp hello world, unmodified: aioxdp only changes the event loop under it.

Serve it on the bypass stack (in the server namespace of ``aioxdp topo up``):

    aioxdp run examples.hello_aiohttp:app --interface IF --host ADDR --port 8080

or ``python examples/hello_aiohttp.py --interface IF --host ADDR`` (same options).
From another host (the client namespace):

    curl http://ADDR:8080/                      -> Hello, world
    curl -d 'some bytes' http://ADDR:8080/echo  -> some bytes
"""

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


app = web.Application()
app.add_routes([web.get("/", hello), web.post("/echo", echo)])


if __name__ == "__main__":
    import sys

    from aioxdp.cli import run_app

    sys.exit(run_app(app, description=__doc__.splitlines()[0]))
