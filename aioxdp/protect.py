"""Run-time control of the XDP program's protection stage: allow/deny lists,
per-source rate limits, SYN cookies answered in the kernel and the budget of
segments that belong to no connection.

The rules live in the program's BPF maps (bpf/aioxdp.bpf.c), so they change
while the server runs, without touching established connections, and from any
process on the host:

- in the server process: ``loop.xdp_stack.protection``;
- from another process: ``Protection.attach("eth0")`` finds the program
  attached to the interface by id (``XdpProgram.open_attached``). Program and
  map ids are global, so this also works under ``ip netns exec``, which
  remounts /sys and hides bpffs pins made elsewhere.

Rules apply only to traffic aimed at the stack's own flows; everything else is
the kernel's and passes untouched. Order in the program: malformed, segments with
none of SYN, ACK, RST when ``drop_no_ack`` is on (by default they go on, so that a
port of no connection answers them with RST,ACK, RFC 9293 §3.10.7.1), deny list,
allow list (allow-only mode), rate limit, SYN cookies, established flows.

Established flows: the stack enters every connection it holds (accepted from
a listener, or opened itself) in the program's ``flows`` map
(``XdpProgram.add_flows``), so any other segment to its ports (listeners and
its port range), one of no such connection that carries no valid SYN cookie,
is an "unknown flow": an ACK flood from spoofed sources, or a stray of a
connection already gone. Those reach the stack only within a
budget (``unknown_flow_rate``; 1000/s per CPU from load, like kernels' rate
limits on the RSTs and ICMP errors such segments provoke), the others are
dropped in XDP and counted (``dropped_unknown_flow``).

A SYN cookie is answered with XDP_TX. On veth in native mode the kernel hands
XDP_TX frames only to a peer running NAPI, which a native XDP program there
provides (bench/c/xdp_sink.bpf.c; with GRO alone the peer took 256 frames and
then none); SKB mode and real NICs need nothing.

SYN cookies made in XDP are cookies.py's, under the keys of the table's
``CookieSecrets`` (``use_table`` writes them; after ``CookieSecrets.rotate``,
``set_cookie_secrets``), with the clock the table uses: bpf_ktime_get_ns() is
CLOCK_MONOTONIC, which is time.monotonic() and asyncio's loop.time().

Prefixes: IPv4 ones are stored as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) in the
same LPM tries as IPv6 ones, so an IPv6 prefix covering ::ffff:0:0/96 (::/0,
for one) matches IPv4 sources too.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import socket
import struct
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ._xsk import XdpProgram
from ._xsk._xsk import ffi, lib

if TYPE_CHECKING:
    from .tcp.cookies import CookieSecrets
    from .tcp.table import ConnectionTable

__all__ = ["Protection", "ProtectionSettings", "Rule", "load_program"]

LISTS = ("deny", "allow")
_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, RFC 4291 §2.5.5.2
_KEY = struct.Struct("<QQ")  # a SipHash key as cookies.py reads it
NS = 1_000_000_000
WINDOW_PER_SECOND = NS / lib.AIOXDP_SYN_WINDOW_NS
# The unknown-flow budget a loaded program starts with, per CPU: Linux's global ICMP
# error limit (net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50); FreeBSD limits its
# RSTs to closed ports at 200/s (net.inet.icmp.icmplim).
DEFAULT_UNKNOWN_FLOW_PPS = 1000.0
UNKNOWN_FLOW_BURST_SECONDS = 0.05  # the default burst: 50 ms worth, as 50 per 1000/s


@dataclass(frozen=True)
class Rule:
    """One prefix in a list; ``hits`` counts packets it matched (deny: dropped)."""

    list: str
    prefix: str
    hits: int


@dataclass(frozen=True)
class ProtectionSettings:
    """The protection stage's switches, as ``Protection.settings`` reads them back."""

    allow_only: bool
    rate_pps: float  # 0: no rate limit
    rate_burst: int
    syn_cookie_threshold_pps: int | None  # None: off, 0: always
    syn_cookies_active: bool  # is the program answering SYNs with cookies right now?
    unknown_flow_pps: float | None  # per CPU; None: no budget (all pass), 0: all dropped
    unknown_flow_burst: int
    drop_no_ack: bool  # segments with none of SYN, ACK, RST dropped silently


def parse_prefix(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``text`` as a prefix ("198.18.7.0/24", "2001:2::/64", or one address); ValueError
    for anything else, host bits set beyond the length included (as ``ip route`` refuses
    them: a rule must not silently cover other addresses than were written)."""
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP prefix: {text!r} (e.g. 198.18.7.0/24, 2001:2::/64, "
                             "or one address)") from None
    address = text.partition("/")[0]
    raise ValueError(f"invalid prefix {text}: host bits set for /{net.prefixlen}; write {net} "
                     f"(the prefix) or {address} (the address alone)")


def _key(prefix: str) -> object:
    """The LPM trie key of ``prefix``: IPv4 mapped into IPv6 (struct aioxdp_lpm_key)."""
    net = parse_prefix(prefix)
    key = ffi.new("struct aioxdp_lpm_key *")
    if net.version == 4:
        key.addr[0:16] = _MAPPED + net.network_address.packed
        key.prefixlen = 96 + net.prefixlen
    else:
        key.addr[0:16] = net.network_address.packed
        key.prefixlen = net.prefixlen
    return key


def _prefix(key: object) -> str:
    addr = bytes(ffi.buffer(key.addr))  # type: ignore[attr-defined]
    plen = int(key.prefixlen)  # type: ignore[attr-defined]
    if plen >= 96 and addr.startswith(_MAPPED):
        return str(ipaddress.ip_network((addr[12:], plen - 96)))
    return str(ipaddress.ip_network((addr, plen)))


def _bucket(pps: float, burst: int) -> tuple[int, int]:
    """(interval, burst) in ns of a GCRA token bucket: ``pps`` packets per second after
    ``burst`` packets at once (bpf/aioxdp.bpf.c gcra_take)."""
    if burst < 1:
        raise ValueError("burst must be >= 1")
    interval = max(1, round(NS / pps))
    return interval, (burst - 1) * interval


def load_program(ifindex: int, *, mode: str = "skb", attach: str = "link",
                 max_flows: int = 0) -> XdpProgram:
    """``XdpProgram.load`` with the protection a stack starts with
    (``Protection.set_defaults``). The policy lives here, not in the loader, so that the
    data path never imports the layer that configures it."""
    program = XdpProgram.load(ifindex, mode=mode, attach=attach, max_flows=max_flows)
    try:
        Protection(program).set_defaults()
    except BaseException:
        program.close()
        raise
    return program


def _check(ret: int, what: str) -> None:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")


class Protection:
    """Rules and counters of one attached aioxdp XDP program (see the module docstring)."""

    def __init__(self, program: XdpProgram, *, owned: bool = False) -> None:
        self.program = program
        self._owned = owned

    @classmethod
    def attach(cls, ifname: str) -> Protection:
        """The protection of the aioxdp program on ``ifname`` (this network namespace's),
        from any process; raises FileNotFoundError when none is attached there."""
        program = XdpProgram.open_attached(socket.if_nametoindex(ifname))
        return cls(program, owned=True)

    # -- allow/deny lists --------------------------------------------------------------------

    def deny(self, prefix: str) -> None:
        """Drop everything from ``prefix`` ("198.18.7.0/24", "2001:2::/64", or one address)."""
        self._add("deny", prefix)

    def allow(self, prefix: str) -> None:
        """Let ``prefix`` through in allow-only mode (a deny rule still wins)."""
        self._add("allow", prefix)

    def _add(self, which: str, prefix: str) -> None:
        zero = ffi.new("uint64_t *", 0)
        ret = lib.bpf_map_update_elem(self.program.map_fd(f"{which}_list"), _key(prefix),
                                      zero, 0)
        _check(ret, f"{which} {prefix}")

    def remove(self, prefix: str) -> bool:
        """Remove ``prefix`` from both lists; False when it was in neither."""
        key = _key(prefix)
        found = False
        for which in LISTS:
            ret = lib.bpf_map_delete_elem(self.program.map_fd(f"{which}_list"), key)
            if ret != -errno.ENOENT:
                _check(ret, f"remove {prefix}")
                found = True
        return found

    def rules(self) -> list[Rule]:
        out = []
        hits = ffi.new("uint64_t *")
        for which in LISTS:
            fd = self.program.map_fd(f"{which}_list")
            key, nxt = ffi.NULL, ffi.new("struct aioxdp_lpm_key *")
            while lib.bpf_map_get_next_key(fd, key, nxt) == 0:
                if lib.bpf_map_lookup_elem(fd, nxt, hits) == 0:
                    out.append(Rule(which, _prefix(nxt), int(hits[0])))
                key, nxt = nxt, ffi.new("struct aioxdp_lpm_key *")
        return out

    # -- switches in the config map ------------------------------------------------------------

    def _config(self) -> object:
        cfg = ffi.new("struct aioxdp_config *")
        zero = ffi.new("uint32_t *", 0)
        _check(lib.bpf_map_lookup_elem(self.program.map_fd("config"), zero, cfg), "config")
        return cfg

    def _write(self, cfg: object) -> None:
        zero = ffi.new("uint32_t *", 0)
        _check(lib.bpf_map_update_elem(self.program.map_fd("config"), zero, cfg, 0), "config")

    def allow_only(self, enabled: bool) -> None:
        """When on, only sources in the allow list reach the stack."""
        cfg = self._config()
        cfg.allow_only = int(enabled)  # type: ignore[attr-defined]
        self._write(cfg)

    def rate_limit(self, pps: float, burst: int | None = None) -> None:
        """At most ``pps`` packets per second from each source address, after a burst of
        ``burst`` packets (default: one second's worth). ``pps`` 0 turns the limit off.
        Sources are tracked in an LRU map of AIOXDP_MAX_SOURCES entries."""
        if pps < 0:
            raise ValueError("pps must be >= 0")
        cfg = self._config()
        if pps == 0:
            cfg.rate_interval_ns = cfg.rate_burst_ns = 0  # type: ignore[attr-defined]
        else:
            interval, burst_ns = _bucket(pps, max(1, math.ceil(pps)) if burst is None else burst)
            cfg.rate_interval_ns = interval  # type: ignore[attr-defined]
            cfg.rate_burst_ns = burst_ns  # type: ignore[attr-defined]
        self._write(cfg)

    def unknown_flow_rate(self, pps: float | None, burst: int | None = None) -> None:
        """Let at most ``pps`` unknown-flow segments per second through to the stack on
        each CPU, after a burst of ``burst`` (default: 50 ms worth, at least 1); XDP drops
        the others. Unknown flows are segments to a listener port of no connection in the
        ``flows`` map that carry no valid SYN cookie (see the module docstring). 0: drop
        them all (the stack then never answers strays with RST); None: no budget, all reach
        the stack."""
        cfg = self._config()
        if pps is None:
            cfg.unknown_flows = lib.AIOXDP_UNKNOWN_PASS  # type: ignore[attr-defined]
        elif pps < 0:
            raise ValueError("pps must be >= 0 or None")
        elif pps == 0:
            cfg.unknown_flows = lib.AIOXDP_UNKNOWN_DROP  # type: ignore[attr-defined]
        else:
            if burst is None:
                burst = max(1, math.ceil(pps * UNKNOWN_FLOW_BURST_SECONDS))
            interval, burst_ns = _bucket(pps, burst)
            cfg.unknown_flows = lib.AIOXDP_UNKNOWN_BUDGET  # type: ignore[attr-defined]
            cfg.unknown_interval_ns = interval  # type: ignore[attr-defined]
            cfg.unknown_burst_ns = burst_ns  # type: ignore[attr-defined]
        self._write(cfg)

    def drop_no_ack(self, enabled: bool) -> None:
        """When on, XDP drops every segment to the stack's ports that has none of SYN,
        ACK and RST (data or FIN alone, no flags), counted in ``dropped_no_ack``. Off (the
        default), they reach the stack like other segments, within the unknown-flow
        budget when they belong to no connection, and a port of no connection answers
        them with <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> (RFC 9293 §3.10.7.1), as
        Linux does; a listener and a connection drop them (§3.10.7.2, §3.10.7.4). On
        hides the stack from such probes (nmap's FIN, NULL and Xmas scans) at the price
        of that conformance."""
        cfg = self._config()
        cfg.drop_no_ack = int(enabled)  # type: ignore[attr-defined]
        self._write(cfg)

    def set_defaults(self) -> None:
        """What ``load_program`` applies to a new program, whose config starts all zero
        (no protection): the unknown-flow budget (DEFAULT_UNKNOWN_FLOW_PPS), so that a
        spoofed ACK flood reaches the stack only if someone lets it."""
        self.unknown_flow_rate(DEFAULT_UNKNOWN_FLOW_PPS)

    def syn_cookies(self, threshold_pps: int | None) -> None:
        """Answer SYNs to our listeners with SYN cookies from XDP while more than
        ``threshold_pps`` SYNs per second arrive (measured per 100 ms window, held for
        a second after the rate falls). 0: always; None: never (SYNs go to userspace,
        whose table uses cookies only when its backlog is full)."""
        cfg = self._config()
        if threshold_pps is None:
            cfg.syn_cookies = lib.AIOXDP_SYNCOOKIES_OFF  # type: ignore[attr-defined]
        else:
            if threshold_pps < 0:
                raise ValueError("threshold_pps must be >= 0 or None")
            cfg.syn_cookies = lib.AIOXDP_SYNCOOKIES_ON  # type: ignore[attr-defined]
            cfg.syn_threshold = math.ceil(threshold_pps / WINDOW_PER_SECOND)  # type: ignore[attr-defined]
        self._write(cfg)

    def settings(self) -> ProtectionSettings:
        cfg = self._config()
        interval = int(cfg.rate_interval_ns)  # type: ignore[attr-defined]
        threshold = None
        if cfg.syn_cookies == lib.AIOXDP_SYNCOOKIES_ON:  # type: ignore[attr-defined]
            threshold = round(int(cfg.syn_threshold) * WINDOW_PER_SECOND)  # type: ignore[attr-defined]
        unknown = int(cfg.unknown_flows)  # type: ignore[attr-defined]
        unknown_interval = int(cfg.unknown_interval_ns)  # type: ignore[attr-defined]
        budget = unknown == lib.AIOXDP_UNKNOWN_BUDGET and unknown_interval
        return ProtectionSettings(
            allow_only=bool(cfg.allow_only),  # type: ignore[attr-defined]
            rate_pps=NS / interval if interval else 0.0,
            rate_burst=int(cfg.rate_burst_ns) // interval + 1 if interval else 0,  # type: ignore[attr-defined]
            syn_cookie_threshold_pps=threshold,
            syn_cookies_active=threshold is not None and self._cookies_active(),
            unknown_flow_pps=(None if unknown == lib.AIOXDP_UNKNOWN_PASS
                              else NS / unknown_interval if budget else 0.0),
            unknown_flow_burst=(int(cfg.unknown_burst_ns) // unknown_interval + 1  # type: ignore[attr-defined]
                                if budget else 0),
            drop_no_ack=bool(cfg.drop_no_ack),  # type: ignore[attr-defined]
        )

    def _cookies_active(self) -> bool:
        state = ffi.new("struct aioxdp_syn_state *")
        zero = ffi.new("uint32_t *", 0)
        _check(lib.bpf_map_lookup_elem(self.program.map_fd("syn_state"), zero, state),
               "syn_state")
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC, as time.monotonic_ns()
        return int(state.cookies_until_ns) > time.monotonic_ns()  # type: ignore[attr-defined]

    # -- the cookie SYN-ACK: what the userspace table would send ---------------------------------

    def use_table(self, table: ConnectionTable) -> None:
        """Make XDP's cookie SYN-ACKs the ones ``table`` would send and accept: its
        cookie keys, MSS, window, window scale and option switches."""
        from .tcp.connection import receive_window_scale

        cfg_tcp = table.config
        cfg = self._config()
        cfg.synack_mss = cfg_tcp.mss  # type: ignore[attr-defined]
        cfg.synack_window = min(cfg_tcp.rcv_buf, 0xFFFF)  # type: ignore[attr-defined]
        cfg.synack_wscale = receive_window_scale(cfg_tcp.rcv_buf)  # type: ignore[attr-defined]
        cfg.synack_options = (  # type: ignore[attr-defined]
            (lib.AIOXDP_SYNACK_TIMESTAMPS if cfg_tcp.timestamps else 0)
            | (lib.AIOXDP_SYNACK_WSCALE if cfg_tcp.window_scaling else 0)
            | (lib.AIOXDP_SYNACK_SACK if cfg_tcp.sack else 0))
        self._write(cfg)
        self.set_cookie_secrets(table.cookie_secrets)

    def set_cookie_secrets(self, secrets: CookieSecrets) -> None:
        """Write the current and previous cookie keys (after every rotation)."""
        keys = ffi.new("struct aioxdp_cookie_keys *")
        for slot, pair in enumerate((secrets.current, secrets.previous)):
            if pair is None:
                continue
            key_a, key_b = pair
            keys.a[slot].k[0:2] = _KEY.unpack(key_a)
            keys.b[slot].k[0:2] = _KEY.unpack(key_b)
        keys.has_previous = int(secrets.previous is not None)
        zero = ffi.new("uint32_t *", 0)
        _check(lib.bpf_map_update_elem(self.program.map_fd("cookie_keys"), zero, keys, 0),
               "cookie_keys")

    # -- counters ------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Packets per verdict and decision since load, summed over CPUs (COUNTER_NAMES)."""
        return self.program.counters()

    def close(self) -> None:
        """Close what ``attach`` opened; the program and its rules stay."""
        if self._owned:
            self.program.close()

    def __enter__(self) -> Protection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

