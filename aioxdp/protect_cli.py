"""``aioxdp filter``: change the XDP protection rules of a running server from a shell.

Works from any process on the host, in the server's network namespace (``ip netns
exec NS aioxdp filter ...``): the program is found on the interface by id
(aioxdp/protect.py), no bpffs pin needed. Wire it with ``register(subparsers)``
and dispatch with ``run(args)``; ``python -m aioxdp.protect_cli`` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from . import kernel
from .protect import Protection, parse_prefix

__all__ = ["register", "run", "main"]


def _prefix(text: str) -> str:
    """A valid prefix, checked while parsing: a command with a bad one changes nothing."""
    try:
        return str(parse_prefix(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _switch(text: str) -> bool:
    if text in ("on", "yes", "true", "1"):
        return True
    if text in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not {text!r}")


def _threshold(text: str) -> int | None:
    """off -> None, always -> 0, else SYNs per second."""
    if text == "off":
        return None
    if text == "always":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected off, always or SYNs per second, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("SYNs per second must be >= 0")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("packets per second must be >= 0")
    return value


def _budget(text: str) -> float | None:
    """off -> None (no budget), else segments per second (0: drop all)."""
    return None if text == "off" else _rate(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``filter ACTION ... --interface IF`` to a parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--interface", "-i", required=True, metavar="IF",
                        help="the interface the aioxdp server runs on")
    parser = subparsers.add_parser(
        "filter", help="XDP protection rules of a running server",
        description="Allow/deny lists, per-source rate limits, in-kernel SYN cookies and the "
                    "budget of segments of unknown flows of the aioxdp XDP program on an "
                    "interface, changed while it runs. Rules apply only to traffic for the "
                    "server's own ports.")
    actions = parser.add_subparsers(dest="filter_action", required=True, metavar="ACTION")
    for name, help_text in (("deny", "drop everything from these prefixes"),
                            ("allow", "let these prefixes through in allow-only mode"),
                            ("remove", "take these prefixes out of both lists")):
        action = actions.add_parser(name, parents=[common], help=help_text)
        action.add_argument("prefixes", nargs="+", metavar="PREFIX", type=_prefix,
                            help="198.18.7.0/24, 2001:2::/64 or one address")
    listing = actions.add_parser("list", parents=[common],
                                 help="rules, switches and counters")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    only = actions.add_parser("allow-only", parents=[common],
                              help="only allowed prefixes reach the server (on/off)")
    only.add_argument("enabled", type=_switch, metavar="on|off")
    rate = actions.add_parser("rate-limit", parents=[common],
                              help="packets per second per source address (0: off)")
    rate.add_argument("pps", type=_rate, metavar="PPS")
    rate.add_argument("--burst", type=int, metavar="N",
                      help="packets a source may send at once (default: one second's worth)")
    syn = actions.add_parser("syn-cookies", parents=[common],
                             help="answer SYNs with cookies in XDP above a SYN rate")
    syn.add_argument("threshold", type=_threshold, metavar="off|always|SYNS_PER_SECOND")
    unknown = actions.add_parser(
        "unknown-rate", parents=[common],
        help="segments per second per CPU to listener ports of no connection (0: drop all, "
             "off: no limit)")
    unknown.add_argument("pps", type=_budget, metavar="PPS|off")
    unknown.add_argument("--burst", type=int, metavar="N",
                         help="segments let through at once (default: 50 ms worth)")
    no_ack = actions.add_parser(
        "drop-no-ack", parents=[common],
        help="drop segments with none of SYN, ACK, RST silently (off: a port of no "
             "connection answers them with RST, as RFC 9293 asks)")
    no_ack.add_argument("enabled", type=_switch, metavar="on|off")
    parser.set_defaults(handler=run)


def _print_listing(protection: Protection, as_json: bool) -> None:
    rules = protection.rules()
    settings = protection.settings()
    counters = protection.counters()
    if as_json:
        print(json.dumps({"rules": [asdict(r) for r in rules], "settings": asdict(settings),
                          "counters": counters}, indent=2))
        return
    for rule in rules:
        print(f"{rule.list:5} {rule.prefix:<43} {rule.hits} hits")
    if not rules:
        print("no rules")
    threshold = settings.syn_cookie_threshold_pps
    cookies = ("off" if threshold is None else "always" if threshold == 0
               else f"above {threshold} SYN/s")
    rate = (f"{settings.rate_pps:g} pps, burst {settings.rate_burst}" if settings.rate_pps
            else "off")
    budget = settings.unknown_flow_pps
    unknown = ("off" if budget is None else "all dropped" if budget == 0
               else f"{budget:g}/s per CPU, burst {settings.unknown_flow_burst}")
    print(f"allow-only: {'on' if settings.allow_only else 'off'}; rate limit: {rate}; "
          f"SYN cookies: {cookies}{' (active)' if settings.syn_cookies_active else ''}; "
          f"unknown flows: {unknown}; drop no-ACK segments: "
          f"{'on' if settings.drop_no_ack else 'off'}")
    width = max(map(len, counters))
    for name, value in counters.items():
        print(f"  {name:<{width}} {value}")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed ``filter`` command; returns the exit status."""
    if not kernel.capable(kernel.CAP_SYS_ADMIN):
        # The program is found by id: BPF_PROG_GET_FD_BY_ID and BPF_MAP_GET_FD_BY_ID
        # take CAP_SYS_ADMIN, and neither CAP_BPF nor CAP_NET_ADMIN stands in for it.
        # Said before libxdp's "couldn't get program fd" and a misleading ENOENT.
        print(f"aioxdp filter: changing or reading the XDP program of {args.interface} needs "
              "CAP_SYS_ADMIN (the kernel opens another process's BPF program by id for no "
              "less), which this process lacks: run as root", file=sys.stderr)
        return 1
    try:
        protection = Protection.attach(args.interface)
    except (FileNotFoundError, OSError) as exc:
        print(f"aioxdp filter: {args.interface}: {exc}", file=sys.stderr)
        return 1
    with protection:
        action = args.filter_action
        try:
            if action == "deny":
                for prefix in args.prefixes:
                    protection.deny(prefix)
            elif action == "allow":
                for prefix in args.prefixes:
                    protection.allow(prefix)
            elif action == "remove":
                missing = [p for p in args.prefixes if not protection.remove(p)]
                if missing:
                    print(f"aioxdp filter: not in any list: {' '.join(missing)}",
                          file=sys.stderr)
                    return 1
            elif action == "list":
                _print_listing(protection, args.json)
            elif action == "allow-only":
                protection.allow_only(args.enabled)
            elif action == "rate-limit":
                protection.rate_limit(args.pps, args.burst)
            elif action == "syn-cookies":
                protection.syn_cookies(args.threshold)
            elif action == "unknown-rate":
                protection.unknown_flow_rate(args.pps, args.burst)
            elif action == "drop-no-ack":
                protection.drop_no_ack(args.enabled)
        except ValueError as exc:  # a bad prefix or burst
            print(f"aioxdp filter: {exc}", file=sys.stderr)
            return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aioxdp")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
