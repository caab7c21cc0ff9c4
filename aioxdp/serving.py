"""Serving an application on an aioxdp loop: what ``aioxdp run``, each of its worker
processes (workers.py) and the examples share.

A target is what MODULE:APP names: an aiohttp ``web.Application``, an ASGI
application (served through uvicorn's HTTP protocol when uvicorn is
installed), a function returning either (plain or async), or an async main
that runs the program itself (given ``host=``/``port=`` if it takes them).
Anything else is a :class:`TargetError`, which the command line turns into
one line and exit status 2, as its argument errors.

It lives apart from the command line because three callers need it: the CLI
(one process), every worker process of ``--workers``, which loads the target
by name itself, and the examples' own command lines. It sits above the loop
and below the CLI: it imports the loop, never the other way round.

Shutdown, on SIGINT or SIGTERM, is the application's own, as on the kernel
stack: aiohttp's ``on_shutdown``/``on_cleanup`` with requests in progress
given ``shutdown_timeout``; uvicorn's graceful shutdown then the ASGI lifespan
shutdown; an async main is cancelled, as ``asyncio.run`` does on Ctrl-C, and
its ``finally`` runs to its end. A second signal cancels whatever is still
running; a third ends the process (the XDP link goes with it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import inspect
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Any

from . import kernel, statsserver, tcp
from .settings import Settings

logger = logging.getLogger("aioxdp")

DEFAULT_HTTP_PORT = 8080
ASGI_EXTRA = "pip install 'aioxdp[asgi]'"  # what makes ASGI apps servable: uvicorn


class TargetError(Exception):
    """MODULE:APP names nothing that can be served (the CLI exits with status 2)."""


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How to serve, besides where the stack runs (Settings): the run options of the
    command line, passed whole to every worker process."""

    host: str | None = None
    port: int | None = None
    access_log: bool = False
    shutdown_timeout: float = 5.0
    log_level: str = "info"
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint


def load_target(spec: str) -> Any:
    """The object MODULE:ATTR names, importing MODULE with the current directory on the path."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"expected MODULE:APP (e.g. examples.hello_aiohttp:app), not {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # the module exists; something it imports does not
        raise TargetError(f"no module named {module_name!r}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def serve(target: object, settings: Settings, options: ServeOptions) -> int:
    """Run ``target`` on a new aioxdp loop until it ends or SIGINT/SIGTERM; the exit
    status. Raises TargetError when ``target`` cannot be served."""
    from .loop import run  # the native parts load here, not for `aioxdp stats` or `topo`

    try:
        if settings.interface is not None:
            kernel.require_capabilities(settings.interface)  # before the stats socket's EACCES
        return run(serve_async(target, options, settings), settings=settings)
    except (asyncio.CancelledError, KeyboardInterrupt):
        logger.warning("forced shutdown")
        return 130
    except OSError as exc:  # no permission, device busy, address in use...: no traceback
        debug = options.log_level == "debug"
        text = exc.strerror if exc.strerror and exc.filename is None else str(exc)
        logger.error("aioxdp run on %s: %s%s", settings.interface, text,
                     "" if debug else " (--log-level debug shows the traceback)", exc_info=debug)
        return 1


async def serve_async(target: object, options: ServeOptions, settings: Settings) -> int:
    """Serve ``target`` on the running aioxdp loop, with the stats socket (and metrics),
    until it ends or SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    collect = functools.partial(statsserver.snapshot, loop, settings, time.time())
    stop = asyncio.Event()
    signals = _handle_signals(loop, stop)
    stats = statsserver.StatsServer(settings, collect)
    metrics = statsserver.MetricsServer(collect, *options.metrics) if options.metrics else None
    try:
        if settings.stats and await stats.start():
            logger.info("stats: %s (aioxdp stats)", stats.path)
        if metrics is not None:
            await metrics.start()
            logger.info("metrics: http://%s:%d/metrics (kernel stack)", metrics.host, metrics.port)
        return await _serve_target(target, options, stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if metrics is not None:
            await metrics.close()
        await stats.close()


def _handle_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[signal.Signals]:
    """SIGINT/SIGTERM: stop gracefully; a second one cancels whatever is still running, and
    gives the signals their default action back, so that a third ends even an app that
    swallows cancellation (the XDP link goes with the process; the stats socket is left)."""
    task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            logger.info("%s: shutting down", sig.name)
            stop.set()
            return
        logger.warning("%s again: cancelling; once more ends the process", sig.name)
        for installed_sig in installed:
            loop.remove_signal_handler(installed_sig)
            signal.signal(installed_sig, signal.SIG_DFL)
        if task is not None:
            task.cancel()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread: the caller handles its own signals
        installed.append(sig)
    return installed


# -- what a target is ----------------------------------------------------------------------------


async def _serve_target(target: object, options: ServeOptions, stop: asyncio.Event) -> int:
    """Serve an aiohttp or ASGI app (given, or built by a factory), or run an async main."""
    if _is_aiohttp_app(target):
        return await _serve_aiohttp(target, options, stop)
    if _is_asgi_app(target):
        return await _serve_asgi(target, options, stop)
    name = getattr(target, "__qualname__", None) or repr(target)
    if not callable(target):
        raise TargetError(f"{name} ({type(target).__name__}) is neither an aiohttp "
                          "web.Application, an ASGI app, a function returning one, nor an "
                          "async main function")
    kwargs = _wanted(target, host=options.host, port=options.port)
    if missing := _missing_arguments(target, kwargs):
        given_by_options = [f"--{arg}" for arg in missing if arg in ("host", "port")]
        how = (f"pass {' and '.join(given_by_options)}" if len(given_by_options) == len(missing)
               else "aioxdp run calls it with at most host= and port=")
        raise TargetError(f"{name}() needs {', '.join(missing)}: {how}")
    result = target(**kwargs)
    if inspect.isawaitable(result):
        finished, result = await _until_stopped(result, stop)
        if not finished:
            return 0
    if _is_aiohttp_app(result):
        return await _serve_aiohttp(result, options, stop)
    if _is_asgi_app(result):
        return await _serve_asgi(result, options, stop)
    if inspect.iscoroutinefunction(target) and (result is None or isinstance(result, int)):
        return result or 0  # an async main that has finished
    raise TargetError(f"{name}() returned {type(result).__name__}: expected an aiohttp "
                      "web.Application, an ASGI app, or an async main function")


def _wanted(func: Any, **candidates: object) -> dict[str, object]:
    """Those of ``candidates`` that were given and that ``func`` takes by name."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    return {name: value for name, value in candidates.items()
            if value is not None and name in params
            and params[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      inspect.Parameter.KEYWORD_ONLY)}


def _missing_arguments(func: Any, given: dict[str, object]) -> list[str]:
    """The parameters ``func`` requires that ``given`` does not provide (a call would raise
    TypeError from inside the loop, as a traceback, instead of a clear line)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.default is inspect.Parameter.empty and p.name not in given
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _is_asgi_app(obj: object) -> bool:
    """An ASGI 3 application: ``async (scope, receive, send)``, a function or an object
    with such a ``__call__`` (Starlette, FastAPI, Django's ASGIHandler...). An async main
    takes at most host and port, so three required positional parameters tell them apart."""
    if isinstance(obj, type) or not callable(obj):
        return False
    call = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj).__call__
    if not inspect.iscoroutinefunction(call):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 3 and all(p.default is inspect.Parameter.empty
                                        for p in positional)


def _is_aiohttp_app(obj: object) -> bool:
    web = sys.modules.get("aiohttp.web")  # only an app that imported aiohttp can be one
    return web is not None and isinstance(obj, web.Application)


async def _until_stopped(awaitable: Awaitable[Any], stop: asyncio.Event) -> tuple[bool, Any]:
    """(True, result) when ``awaitable`` ends first; (False, None) when stopped first, after
    cancelling it and letting it finish what its cancellation runs (its ``finally``)."""
    work = asyncio.ensure_future(awaitable)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        try:
            await work
        except asyncio.CancelledError:
            if not stop.is_set():
                raise  # cancelled from outside: pass it on
        return False, None
    return True, work.result()


# -- serving apps --------------------------------------------------------------------------------


async def _serve_aiohttp(app: Any, options: ServeOptions, stop: asyncio.Event) -> int:
    """AppRunner + TCPSite, so that the loop's create_server binds on the bypass stack;
    stopping is ``runner.cleanup()``: aiohttp's own graceful shutdown."""
    from aiohttp import web

    access_log = logging.getLogger("aiohttp.access") if options.access_log else None
    runner = web.AppRunner(app, handle_signals=False, access_log=access_log,
                           shutdown_timeout=options.shutdown_timeout)
    await runner.setup()
    try:
        host = options.host or None  # None: every address, both families, as aiohttp's run_app
        site = web.TCPSite(runner, host, options.port or DEFAULT_HTTP_PORT)
        await site.start()
        _log_where(site.name, host)
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


async def _serve_asgi(app: Any, options: ServeOptions, stop: asyncio.Event) -> int:
    """uvicorn's HTTP protocol on the loop's create_server, with its lifespan and its
    graceful shutdown; the signals stay ours (uvicorn's own ``serve`` would take them
    over with ``signal.signal``), so its startup, main loop and shutdown run one by one."""
    try:
        import uvicorn
    except ImportError:
        name = getattr(app, "__qualname__", None) or type(app).__name__
        raise TargetError(f"{name} is an ASGI application: serving it needs uvicorn "
                          f"({ASGI_EXTRA})") from None
    host = options.host or None  # None: every address of the interface, both families
    port = options.port or DEFAULT_HTTP_PORT
    # interface: what _is_asgi_app found (uvicorn's own guess starts by calling the app)
    config = uvicorn.Config(
        app, port=port, interface="asgi3", lifespan="auto", log_config=None,
        access_log=options.access_log,
        host=host,  # type: ignore[arg-type]  # None: create_server's every address
        timeout_graceful_shutdown=options.shutdown_timeout)  # type: ignore[arg-type]
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()  # lifespan startup, then create_server; exits 3 when either fails
    ticking = asyncio.ensure_future(server.main_loop())  # the Date header, max requests
    try:
        _log_where(f"http://{_url_host(host)}:{port}", host)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((ticking, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
    finally:
        server.should_exit = True
        await ticking
    await server.shutdown()  # stop accepting, finish requests (bounded), lifespan shutdown
    return 0


def _url_host(host: str | None) -> str:
    if host is None:
        return "0.0.0.0"
    return f"[{host}]" if ":" in host else host


def _log_where(name: str, host: str | None) -> None:
    """Say which stack serves: the bypass stack's settings, or a warning that a host
    outside the interface went to the kernel."""
    loop = asyncio.get_running_loop()
    stack = getattr(loop, "xdp_stack", None)
    if stack is not None and _on_stack(stack, host):
        settings = loop.xdp_settings  # type: ignore[attr-defined]
        if not stack.addresses:
            logger.warning("%s has no IP address, so nothing can reach %s on the bypass stack: "
                           "give it one (ip address add ADDR/LEN dev %s) before starting aioxdp",
                           settings.interface, name, settings.interface)
        logger.info("serving %s on the bypass stack: %s queue %d, %s XDP, %s poll, %s, "
                    "%s TCP core", name, settings.interface, settings.queue,
                    settings.mode, settings.poll, type(loop).__name__, tcp.CORE)
    else:
        logger.warning("serving %s on the KERNEL stack: %s is not an address of the "
                       "interface", name, host)


def _on_stack(stack: Any, host: str | None) -> bool:
    if host in (None, "0.0.0.0", "::"):
        return True
    try:
        return bool(stack.owns(ipaddress.ip_address(host).packed))
    except ValueError:
        return True  # a host name: create_server resolved it, trust its choice
