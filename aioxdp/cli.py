"""The ``aioxdp`` command (also ``python -m aioxdp``).

- ``aioxdp run MODULE:APP`` serves an aiohttp application, or runs an async
  ``main``, on an aioxdp loop, the way ``python -m aiohttp.web`` or uvicorn
  would on asyncio's: only the loop changes, so the app is not modified.
- ``aioxdp stats`` reads the counters of every running stack (statsserver.py).
- ``aioxdp topo up|down`` keeps a two-namespace veth topology up between
  commands, for trying the stack without a spare NIC.
- ``aioxdp demo`` shows all of it working, start to finish (demo.py).

Argument errors exit with status 2 and a one-line reason, as argparse's own do.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import inspect
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import protect_cli, statsserver, tcp
from .settings import Settings
from .topology import Topology
from .workers import worker_table

logger = logging.getLogger("aioxdp")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_HTTP_PORT = 8080
DEFAULT_TOPO_PREFIX = "aioxdp"
MAX_PREFIX = 14  # interface names are prefix + "s"/"c" and Linux allows 15 characters


class TargetError(Exception):
    """MODULE:APP names nothing ``run`` can serve (exit status 2)."""


# -- aioxdp run ---------------------------------------------------------------------------------


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``aioxdp run``; the examples' own command lines reuse them."""
    parser.add_argument("--interface", "-i", metavar="IF",
                        help="network device the stack takes over (env AIOXDP_INTERFACE)")
    parser.add_argument("--queue", type=int, metavar="N", help="RX queue (env AIOXDP_QUEUE)")
    parser.add_argument("--host", metavar="ADDR",
                        help="address to serve on (aiohttp apps: default every address of the "
                             "interface); passed to a main(host=...) that takes it")
    parser.add_argument("--port", type=_port, metavar="PORT",
                        help=f"port to serve on (aiohttp apps: default {DEFAULT_HTTP_PORT}); "
                             "passed to a main(port=...) that takes it")
    parser.add_argument("--mode", choices=("skb", "native"),
                        help="XDP attach mode (env AIOXDP_MODE)")
    parser.add_argument("--poll", choices=("wakeup", "busy"),
                        help="sleep in the selector, or poll the rings every loop iteration "
                             "(env AIOXDP_POLL)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"),
                        help="base event loop (env AIOXDP_LOOP; auto: uvloop when installed)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--access-log", action="store_true", help="log every aiohttp request")
    parser.add_argument("--metrics", metavar="[HOST:]PORT", type=_metrics_address,
                        help="serve Prometheus metrics on this kernel-stack port "
                             "(HOST defaults to 0.0.0.0)")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long requests in progress may finish on SIGINT/SIGTERM")
    parser.add_argument("--workers", type=_count, default=1, metavar="N",
                        help="processes, one per RX queue 0..N-1, each with its own stack "
                             "(needs N queues; on veth, --mode native)")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is not within 1-65535")
    return port


def _metrics_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {host!r}") from None
    return host, _port(port)


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """Settings from the command line over ``AIOXDP_*``; a bad combination exits with status 2."""
    try:
        settings = Settings.from_env(interface=args.interface, queue=args.queue, mode=args.mode,
                                     poll=args.poll, loop=args.loop)
    except ValueError as exc:
        parser.error(str(exc))
    if settings.interface is None:
        parser.error("no interface: pass --interface IF or set AIOXDP_INTERFACE")
    try:
        socket.if_nametoindex(settings.interface)
    except OSError:
        parser.error(f"no interface named {settings.interface!r} in this network namespace")
    if args.metrics is not None:
        port = args.metrics[1]
        low, high = settings.port_range
        if port == args.port:
            parser.error(f"--metrics port {port} is the app's port")
        if low <= port <= high:
            parser.error(f"--metrics port {port} is in the stack's port range {low}-{high}, "
                         "whose traffic goes to the bypass stack")
    return settings


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


def run_app(target: object, argv: Sequence[str] | None = None, *,
            description: str | None = None) -> int:
    """``aioxdp run`` for an object at hand: ``sys.exit(run_app(main))`` ends an example."""
    parser = argparse.ArgumentParser(description=description)
    add_run_options(parser)
    args = parser.parse_args(argv)
    return serve(target, args, parser)


def serve(target: object, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``target`` on an aioxdp loop until it ends or SIGINT/SIGTERM; the exit status."""
    settings = settings_from_args(args, parser)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        return _serve_workers(args, settings, parser)
    from .loop import run  # the native parts load here, not for `aioxdp stats` or `topo`

    try:
        return run(serve_async(target, args, settings), settings=settings)
    except TargetError as exc:
        parser.error(str(exc))
    except (asyncio.CancelledError, KeyboardInterrupt):
        logger.warning("forced shutdown")
        return 130
    except OSError as exc:  # no permission, device busy, address in use...: no traceback
        debug = args.log_level == "debug"
        logger.error("aioxdp run on %s: %s%s", settings.interface, exc,
                     "" if debug else " (--log-level debug shows the traceback)", exc_info=debug)
        return 1


def _serve_workers(args: argparse.Namespace, settings: Settings,
                   parser: argparse.ArgumentParser) -> int:
    """``--workers N``: the target is passed on by name, each worker loads it itself."""
    from .workers import ServeOptions, run_workers

    if args.metrics is not None:
        parser.error("--metrics cannot be combined with --workers: one port, N processes")
    if not isinstance(getattr(args, "target", None), str):
        parser.error("--workers needs a target by name: aioxdp run MODULE:APP --workers N")
    try:
        return run_workers(args.target, settings, args.workers, options=ServeOptions(
            host=args.host, port=args.port, access_log=args.access_log,
            shutdown_timeout=args.shutdown_timeout, log_level=args.log_level))
    except ValueError as exc:
        parser.error(str(exc))


async def serve_async(target: object, args: argparse.Namespace, settings: Settings) -> int:
    """Serve ``target`` on the running aioxdp loop, with the stats socket (and metrics),
    until it ends or SIGINT/SIGTERM; also what each worker of ``--workers`` runs."""
    loop = asyncio.get_running_loop()
    collect = functools.partial(statsserver.snapshot, loop, settings, time.time())
    stop = asyncio.Event()
    signals = _handle_signals(loop, stop)
    stats = statsserver.StatsServer(settings, collect)
    metrics = statsserver.MetricsServer(collect, *args.metrics) if args.metrics else None
    try:
        if await stats.start():
            logger.info("stats: %s (aioxdp stats)", stats.path)
        if metrics is not None:
            await metrics.start()
            logger.info("metrics: http://%s:%d/metrics (kernel stack)", metrics.host, metrics.port)
        return await _serve_target(target, args, stop)
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


async def _serve_target(target: object, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Serve an aiohttp app (given, or built by a factory), or run an async main."""
    if _is_aiohttp_app(target):
        return await _serve_aiohttp(target, args, stop)
    if not callable(target):
        raise TargetError(f"{target!r} is neither an aiohttp web.Application nor callable")
    result = target(**_wanted(target, host=args.host, port=args.port))
    if inspect.isawaitable(result):
        finished, result = await _until_stopped(result, stop)
        if not finished:
            return 0
    if _is_aiohttp_app(result):
        return await _serve_aiohttp(result, args, stop)
    if inspect.iscoroutinefunction(target) and (result is None or isinstance(result, int)):
        return result or 0  # an async main that has finished
    raise TargetError(f"{getattr(target, '__name__', target)!r} returned {type(result).__name__}: "
                      "expected an aiohttp web.Application, or an async main function")


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


async def _until_stopped(awaitable: Awaitable[Any], stop: asyncio.Event) -> tuple[bool, Any]:
    """(True, result) when ``awaitable`` ends first; (False, None) when stopped first."""
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


def _is_aiohttp_app(obj: object) -> bool:
    web = sys.modules.get("aiohttp.web")  # only an app that imported aiohttp can be one
    return web is not None and isinstance(obj, web.Application)


async def _serve_aiohttp(app: Any, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """AppRunner + TCPSite, so that the loop's create_server binds on the bypass stack."""
    from aiohttp import web

    access_log = logging.getLogger("aiohttp.access") if args.access_log else None
    runner = web.AppRunner(app, handle_signals=False, access_log=access_log,
                           shutdown_timeout=args.shutdown_timeout)
    await runner.setup()
    try:
        host = args.host or None  # None: every address, both families, as aiohttp's run_app
        site = web.TCPSite(runner, host, args.port or DEFAULT_HTTP_PORT)
        await site.start()
        loop = asyncio.get_running_loop()
        stack = getattr(loop, "xdp_stack", None)
        if stack is not None and _on_stack(stack, host):
            settings = loop.xdp_settings  # type: ignore[attr-defined]
            logger.info("serving %s on the bypass stack: %s queue %d, %s XDP, %s poll, %s, "
                        "%s TCP core", site.name, settings.interface, settings.queue,
                        settings.mode, settings.poll, type(loop).__name__, tcp.CORE)
        else:
            logger.warning("serving %s on the KERNEL stack: %s is not an address of the "
                           "interface", site.name, host)
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def _on_stack(stack: Any, host: str | None) -> bool:
    if host in (None, "0.0.0.0", "::"):
        return True
    try:
        return bool(stack.owns(ipaddress.ip_address(host).packed))
    except ValueError:
        return True  # a host name: create_server resolved it, trust its choice


# -- aioxdp stats -------------------------------------------------------------------------------

SECTION_TITLES = {"xdp": "XDP verdicts", "xsk": "AF_XDP socket", "tcp": "TCP"}
HEADER_KEYS = {"pid", "interface", "queue", "mode", "poll", "loop", "started", "uptime",
               "running", "socket", "addresses", "error"}


def verdict_totals(xdp: Mapping[str, Any]) -> tuple[int, int, int]:
    """(redirected, passed to Linux, dropped) from the XDP program's counters."""
    redirected = passed = dropped = 0
    for name, value in xdp.items():
        if not isinstance(value, int):
            continue
        if name == "redirected":
            redirected += value
        elif name.startswith("pass") or name == "redirect_no_socket":  # no socket: passed on
            passed += value
        elif name.startswith("drop"):
            dropped += value
    return redirected, passed, dropped


def format_snapshot(snap: Mapping[str, Any]) -> str:
    """One stack's snapshot as a readable block; unknown keys are shown, missing ones skipped."""
    head = (f"{snap.get('interface', '?')} queue {snap.get('queue', '?')}"
            f" — pid {snap.get('pid', '?')}, up {_duration(snap.get('uptime'))}"
            f", {snap.get('mode', '?')} XDP, {snap.get('poll', '?')} poll"
            f", {snap.get('loop', '?')}")
    lines = [head]
    if snap.get("addresses"):
        lines.append("addresses: " + ", ".join(map(str, snap["addresses"])))
    if snap.get("error"):
        lines.append(f"error: {snap['error']}")
    if not snap.get("running", True):
        lines.append("(the bypass stack has not started yet: no server or connection so far)")
    xdp = snap.get("xdp")
    if isinstance(xdp, Mapping):
        redirected, passed, dropped = verdict_totals(xdp)
        lines.append(f"packets: {redirected:,} redirected to the stack, {passed:,} passed to "
                     f"Linux, {dropped:,} dropped")
    sections = [k for k in SECTION_TITLES if k in snap]
    sections += [k for k in snap if k not in SECTION_TITLES and k not in HEADER_KEYS]
    scalars = {k: snap[k] for k in sections if not isinstance(snap[k], Mapping)}
    for key in sections:
        if isinstance(snap[key], Mapping):
            lines.append(SECTION_TITLES.get(key, _label(key)))
            lines.extend(_rows(snap[key], "  ") or ["  (none)"])
    if scalars:
        lines.append("other")
        lines.extend(_rows(scalars, "  "))
    return "\n".join(lines)


def _rows(data: Mapping[str, Any], indent: str) -> list[str]:
    width = max((len(_label(k)) for k in data), default=0)
    lines = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{_label(key)}")
            lines.extend(_rows(value, indent + "  ") or [f"{indent}  (none)"])
        else:
            lines.append(f"{indent}{_label(key):<{width}}  {_value(value)}")
    return lines


def _label(key: object) -> str:
    return str(key).replace("_", " ")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(_value, value)) or "-"
    return str(value)


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _cmd_stats(args: argparse.Namespace) -> int:
    while True:
        snapshots, problems = statsserver.query_all(args.interface)
        for problem in problems:
            print(f"aioxdp stats: {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps(snapshots, indent=None if args.watch else 2), flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            where = f" for {args.interface}" if args.interface else ""
            blocks = [format_snapshot(s) for s in snapshots]
            if summary := worker_table(snapshots):
                blocks.append(summary)
            print("\n\n".join(blocks) if blocks else f"no running aioxdp stack{where} answered "
                  f"(sockets in {statsserver.STATS_DIR})", flush=True)
        if not args.watch:
            return 0 if snapshots else 1
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


# -- aioxdp topo --------------------------------------------------------------------------------


def topo_record(prefix: str) -> Path:
    return statsserver.STATS_DIR / f"topo-{prefix}.json"


def recorded_topologies() -> list[str]:
    if not statsserver.STATS_DIR.is_dir():
        return []
    return sorted(p.name[len("topo-"):-len(".json")]
                  for p in statsserver.STATS_DIR.glob("topo-*.json"))


def record_topology(topo: Topology) -> Path:
    """Write down a topology left up, so that ``aioxdp topo down`` finds it."""
    statsserver.STATS_DIR.mkdir(parents=True, exist_ok=True)
    path = topo_record(topo.prefix)
    path.write_text(json.dumps({
        **dataclasses.asdict(topo), "server_ns": topo.server_ns, "client_ns": topo.client_ns,
        "server_if": topo.server_if, "client_if": topo.client_if, "created": time.time(),
    }, indent=2) + "\n")
    return path


def remove_topology(prefix: str) -> bool:
    """Delete the namespaces (and so the veth pair) and the record; True if anything was there."""
    topo = Topology(prefix=prefix)
    existed = bool({topo.server_ns, topo.client_ns} & set(_netns_names()))
    topo.down()
    record = topo_record(prefix)
    if record.exists():
        record.unlink()
        existed = True
    return existed


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _prefix(text: str) -> str:
    if not (0 < len(text) <= MAX_PREFIX and text.replace("-", "").replace("_", "").isalnum()
            and text.isascii()):
        raise argparse.ArgumentTypeError(
            f"prefix must be 1-{MAX_PREFIX} letters, digits, '-' or '_', not {text!r}")
    return text


def describe_topology(topo: Topology) -> str:
    srv, cli = topo.server_ns, topo.client_ns
    return "\n".join([
        f"topology {topo.prefix!r} is up ({topo.queues} queue{'s' if topo.queues > 1 else ''})",
        f"  server namespace {srv:<16} device {topo.server_if:<15} "
        f"{topo.server_ip}/{topo.prefixlen}  {topo.server_ip6}/{topo.prefixlen6}",
        f"  client namespace {cli:<16} device {topo.client_if:<15} "
        f"{topo.client_ip}/{topo.prefixlen}  {topo.client_ip6}/{topo.prefixlen6}"
        "  (tx checksum offload off)",
        "enter a namespace:",
        f"  ip netns exec {srv} bash",
        f"  ip netns exec {cli} bash",
        "serve an app on the bypass stack, and fetch from it:",
        f"  ip netns exec {srv} aioxdp run examples.hello_aiohttp:app "
        f"--interface {topo.server_if} --host {topo.server_ip} --port {DEFAULT_HTTP_PORT}",
        f"  ip netns exec {cli} curl http://{topo.server_ip}:{DEFAULT_HTTP_PORT}/",
        "remove it:",
        f"  aioxdp topo down --prefix {topo.prefix}",
    ])


def _cmd_topo(args: argparse.Namespace) -> int:
    if args.action == "up":
        topo = Topology(queues=args.queues, prefix=args.prefix)
        taken = {topo.server_ns, topo.client_ns} & set(_netns_names())
        if taken:
            print(f"aioxdp topo: {', '.join(sorted(taken))} already exist(s) "
                  f"(aioxdp topo down --prefix {topo.prefix})", file=sys.stderr)
            return 1
        try:
            topo.up()
        except subprocess.CalledProcessError as exc:
            print(f"aioxdp topo: {' '.join(exc.cmd)} failed: {exc.stderr.strip()}",
                  file=sys.stderr)
            return 1
        record_topology(topo)
        print(describe_topology(topo))
        return 0
    prefixes = [args.prefix] if args.prefix else recorded_topologies()
    removed = [p for p in prefixes if remove_topology(p)]
    for prefix in removed:
        print(f"removed topology {prefix!r}")
    if not removed:
        print("no topology to remove" + (f" named {args.prefix!r}" if args.prefix else ""))
    return 0


# -- the command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioxdp", description="asyncio on a kernel-bypass TCP stack (AF_XDP)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="serve an aiohttp app or run an async main on the bypass stack",
        description="Serve MODULE:APP on an aioxdp loop. APP is an aiohttp web.Application, a "
                    "function returning one (sync or async), or an async main function "
                    "(given host= and port= if it takes them).")
    run.add_argument("target", metavar="MODULE:APP")
    add_run_options(run)
    run.set_defaults(parser=run)

    stats = commands.add_parser("stats", help="counters of the running stacks",
                                description="Read the stats socket of every running stack.")
    stats.add_argument("--interface", "-i", metavar="IF", help="only this interface's stacks")
    stats.add_argument("--json", action="store_true", help="a JSON list, one object per stack")
    stats.add_argument("--watch", type=_positive, metavar="SECONDS",
                       help="repeat every SECONDS until Ctrl-C")

    topo = commands.add_parser("topo", help="a two-namespace veth topology to try the stack on")
    actions = topo.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="create it and leave it up")
    up.add_argument("--queues", type=_count, default=1, metavar="N", help="veth queues")
    up.add_argument("--prefix", type=_prefix, default=DEFAULT_TOPO_PREFIX,
                    help=f"name prefix of namespaces and devices (default {DEFAULT_TOPO_PREFIX})")
    down = actions.add_parser("down", help="remove one (--prefix) or every recorded one")
    down.add_argument("--prefix", type=_prefix)

    protect_cli.register(commands)

    demo = commands.add_parser("demo", help="see it work: namespaces, an aiohttp app, wrk, stats",
                               description="Serve an aiohttp hello world on the bypass stack in "
                                           "a throwaway topology, load it, and show the numbers.")
    demo.add_argument("--keep", action="store_true", help="leave the topology up afterwards")
    demo.add_argument("--duration", type=_count, default=5, metavar="SECONDS",
                      help="wrk run time (default 5)")
    demo.add_argument("--connections", type=_count, default=50, metavar="N",
                      help="wrk connections (default 50)")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        try:
            target = load_target(args.target)
        except TargetError as exc:
            args.parser.error(str(exc))
        return serve(target, args, args.parser)
    if args.command == "stats":
        return _cmd_stats(args)
    if args.command == "topo":
        return _cmd_topo(args)
    if args.command == "filter":
        return protect_cli.run(args)
    from .demo import run_demo

    return run_demo(keep=args.keep, duration=args.duration, connections=args.connections)
