"""The ``aioxdp`` command (also ``python -m aioxdp``): argument parsing, and a hand-off.

- ``aioxdp run MODULE:APP`` serves an aiohttp or ASGI application, or runs an
  async ``main``, on an aioxdp loop, the way ``python -m aiohttp.web`` or uvicorn
  would on asyncio's: only the loop changes, so the app is not modified
  (serving.py; ``--workers N``: workers.py).
- ``aioxdp stats`` reads the counters of every running stack (statsview.py).
- ``aioxdp topo up|down`` keeps a two-namespace veth topology up between
  commands, for trying the stack without a spare NIC (topo_cli.py).
- ``aioxdp filter`` changes the XDP protection rules (protect_cli.py).
- ``aioxdp demo`` shows all of it working, start to finish (demo.py).

Argument errors, an unusable MODULE:APP among them, exit with status 2 and a
one-line reason, as argparse's own do.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence

from . import kernel, protect_cli, serving, statsview, topo_cli
from .polling import MODES as POLL_MODES
from .serving import DEFAULT_HTTP_PORT, ServeOptions, TargetError
from .settings import Settings
from .workers import run_workers

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_TOPO_PREFIX = "aioxdp"
MAX_PREFIX = 14  # interface names are prefix + "s"/"c" and Linux allows 15 characters


# -- aioxdp run ---------------------------------------------------------------------------------


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``aioxdp run``; the examples' own command lines reuse them."""
    parser.add_argument("--interface", "-i", metavar="IF",
                        help="network device the stack takes over (env AIOXDP_INTERFACE)")
    parser.add_argument("--queue", type=int, metavar="N", help="RX queue (env AIOXDP_QUEUE)")
    parser.add_argument("--host", metavar="ADDR",
                        help="address to serve on (apps: default every address of the "
                             "interface); passed to a main(host=...) that takes it")
    parser.add_argument("--port", type=_port, metavar="PORT",
                        help=f"port to serve on (apps: default {DEFAULT_HTTP_PORT}); "
                             "passed to a main(port=...) that takes it")
    parser.add_argument("--mode", choices=("skb", "native"),
                        help="XDP attach mode (env AIOXDP_MODE)")
    parser.add_argument("--poll", choices=POLL_MODES,
                        help="sleep in the selector until frames come, poll the rings every "
                             "loop iteration, or adaptive: poll while frames keep coming "
                             "(env AIOXDP_POLL)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"),
                        help="base event loop (env AIOXDP_LOOP; auto: uvloop when installed)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--access-log", action="store_true", help="log every request")
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
    from .loop import loop_class  # the native parts load here, not for `aioxdp stats` or `topo`

    try:
        loop_class(settings.loop)
    except RuntimeError as exc:  # uvloop asked for, not installed
        parser.error(str(exc))
    try:
        iface = kernel.interface(settings.interface)
    except OSError as exc:
        parser.error(exc.strerror or str(exc))
    if problem := kernel.queue_problem(iface, settings.queue):
        parser.error(problem)
    if args.metrics is not None:
        port = args.metrics[1]
        low, high = settings.port_range
        if port == args.port:
            parser.error(f"--metrics port {port} is the app's port")
        if low <= port <= high:
            parser.error(f"--metrics port {port} is in the stack's port range {low}-{high}, "
                         "whose traffic goes to the bypass stack")
    return settings


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
    options = ServeOptions(host=args.host, port=args.port, access_log=args.access_log,
                           shutdown_timeout=args.shutdown_timeout, log_level=args.log_level,
                           metrics=args.metrics)
    try:
        if args.workers > 1:
            return _serve_workers(args, settings, options, parser)
        return serving.serve(target, settings, options)
    except TargetError as exc:
        parser.error(str(exc))


def _serve_workers(args: argparse.Namespace, settings: Settings, options: ServeOptions,
                   parser: argparse.ArgumentParser) -> int:
    """``--workers N``: the target is passed on by name, each worker loads it itself."""
    if args.metrics is not None:
        parser.error("--metrics cannot be combined with --workers: one port, N processes")
    if not isinstance(getattr(args, "target", None), str):
        parser.error("--workers needs a target by name: aioxdp run MODULE:APP --workers N")
    try:
        return run_workers(args.target, settings, args.workers, options=options)
    except ValueError as exc:
        parser.error(str(exc))


# -- the command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioxdp", description="asyncio on a kernel-bypass TCP stack (AF_XDP)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="serve an aiohttp or ASGI app, or run an async main, on the bypass stack",
        description="Serve MODULE:APP on an aioxdp loop. APP is an aiohttp web.Application, "
                    "an ASGI application (served by uvicorn's protocol: "
                    f"{serving.ASGI_EXTRA}), a function returning either (sync or async), "
                    "or an async main function (given host= and port= if it takes them).")
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


def _prefix(text: str) -> str:
    if not (0 < len(text) <= MAX_PREFIX and text.replace("-", "").replace("_", "").isalnum()
            and text.isascii()):
        raise argparse.ArgumentTypeError(
            f"prefix must be 1-{MAX_PREFIX} letters, digits, '-' or '_', not {text!r}")
    return text


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
            target = serving.load_target(args.target)
        except TargetError as exc:
            args.parser.error(str(exc))
        return serve(target, args, args.parser)
    if args.command == "stats":
        return statsview.show(args.interface, as_json=args.json, watch=args.watch)
    if args.command == "topo":
        return topo_cli.run(args.action, prefix=args.prefix, queues=getattr(args, "queues", 1))
    if args.command == "filter":
        return protect_cli.run(args)
    from .demo import run_demo

    return run_demo(keep=args.keep, duration=args.duration, connections=args.connections)
