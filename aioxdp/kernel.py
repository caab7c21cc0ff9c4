"""What the stack asks Linux: interfaces, routes, neighbours, reserved ports.

Linux keeps owning addresses, routes and the neighbour table; aioxdp only
reads them (and asks the kernel to resolve a neighbour it needs), so `ip`
stays the way to configure a host that runs aioxdp.

Every call opens its own rtnetlink socket in the calling *thread's* network
namespace — a socket binds to the namespace of the thread that creates it —
so the functions work inside ``with topo.server():``, where only the thread
has moved (tests/test_kernel.py checks it). Messages are built and parsed
with pyroute2's rtnetlink classes; the request/reply exchange is done here on
a plain blocking socket rather than with pyroute2's ``IPRoute``, because
``IPRoute`` (0.9) drives an asyncio loop of its own and raises inside a
running one — and the aioxdp event loop must be able to ask about a
neighbour from a callback. An rtnetlink request is answered synchronously
by the kernel while it handles the send, so ``recv`` never waits for the
network: every function here is non-blocking in that sense except
``neighbour_mac``, which waits for resolution (use ``resolve_neighbour``
in a coroutine, or ``lookup_neighbour`` + ``solicit_neighbour`` from a
callback).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nlmsg,
)
from pyroute2.netlink.rtnl import (
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWNEIGH,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import (
    NTF_USE,
    NUD_DELAY,
    NUD_FAILED,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    NUD_STALE,
    ndmsg,
)
from pyroute2.netlink.rtnl.rtmsg import rtmsg

# include/net/neighbour.h: the states in which the entry holds a usable address
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY

RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"


class NeighbourUnreachable(OSError):
    """The kernel could not resolve the link-layer address of a next hop."""


class Address(NamedTuple):
    address: bytes  # packed, 4 or 16 bytes
    prefixlen: int
    family: int  # socket.AF_INET or socket.AF_INET6


@dataclass
class Interface:
    name: str
    index: int
    mac: bytes
    mtu: int
    addresses: list[Address] = field(default_factory=list)
    queues: int = 1  # rx queues an AF_XDP socket can bind to
    up: bool = True  # administratively up (IFF_UP: `ip link set dev X up`)
    carrier: bool = True  # the lower layer is up (IFF_LOWER_UP; a veth: its peer is up too)


def _family(addr: bytes) -> int:
    if len(addr) == 4:
        return socket.AF_INET
    if len(addr) == 16:
        return socket.AF_INET6
    raise ValueError(f"not a packed IPv4/IPv6 address: {addr!r}")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class _Rtnl:
    """One rtnetlink socket, in the namespace of the thread that opened it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._marshal = MarshalRtnl()
        self._seq = 0

    def __enter__(self) -> _Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def request(self, msg: nlmsg, msg_type: int, flags: int = 0) -> list[nlmsg]:
        """Send ``msg``; return the replies (all parts of a dump, none for an ACK).

        A netlink error becomes an ``OSError`` with its errno.
        """
        self._seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._sock.send(msg.data)
        replies: list[nlmsg] = []
        while True:
            # dump parts are at most 32 KiB (the kernel's netlink dump size)
            for reply in self._marshal.parse(self._sock.recv(1 << 16)):
                header = reply["header"]
                if header["sequence_number"] != self._seq:
                    continue
                if header["error"] is not None:
                    code = getattr(header["error"], "code", errno.EIO)
                    raise OSError(code, f"netlink: {os.strerror(code)}")
                if header["type"] in (NLMSG_DONE, NLMSG_ERROR):  # end of dump, or ACK
                    return replies
                replies.append(reply)
                if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                    return replies


# --- namespaces ------------------------------------------------------------------

NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts the namespaces it names


def netns_name() -> str:
    """The calling thread's network namespace as ``ip netns`` names it, else its inode
    number (the root namespace and unnamed ones)."""
    own = os.stat("/proc/thread-self/ns/net")
    with contextlib.suppress(OSError):
        for entry in NETNS_DIR.iterdir():
            with contextlib.suppress(OSError):
                st = entry.stat()
                if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                    return entry.name
    return str(own.st_ino)


# --- privileges ------------------------------------------------------------------

# capability numbers (linux/capability.h); CAP_SYS_ADMIN stands in for CAP_BPF
_CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_BPF": 39, "CAP_NET_RAW": 13}
CAP_SYS_ADMIN = 21


def capable(bit: int) -> bool:
    """Does the calling thread have capability number ``bit`` (effective)?"""
    with open("/proc/thread-self/status") as status:
        effective = next(int(line.split()[1], 16) for line in status
                         if line.startswith("CapEff:"))
    return bool(effective >> bit & 1)


def missing_capabilities() -> list[str]:
    """The capabilities a stack needs that the calling thread lacks: CAP_NET_ADMIN
    (attach XDP), CAP_BPF (load the program and its maps), CAP_NET_RAW (AF_XDP socket)."""
    return [name for name, bit in _CAPABILITIES.items()
            if not capable(bit) and not (name == "CAP_BPF" and capable(CAP_SYS_ADMIN))]


def require_capabilities(interface: str) -> None:
    """PermissionError naming what is missing, before libbpf fails with EPERM."""
    if missing := missing_capabilities():
        raise PermissionError(errno.EPERM, (
            f"a bypass stack on {interface} needs {', '.join(missing)}, which this process "
            "lacks: run as root (or grant them, e.g. setcap or systemd AmbientCapabilities)"))


# --- interfaces ------------------------------------------------------------------

IFF_UP = 0x1  # linux/if.h
IFF_LOWER_UP = 0x10000

def interface(name: str) -> Interface:
    """Index, MAC, MTU, addresses and rx queue count of ``name``."""
    with _Rtnl() as rtnl:
        query = ifinfmsg()
        query["attrs"] = [("IFLA_IFNAME", name)]
        try:
            (link,) = rtnl.request(query, RTM_GETLINK)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
            raise OSError(errno.ENODEV, f"no interface named {name!r} in network namespace "
                                        f"{netns_name()} (`ip link` lists them)") from None
        index = link["index"]
        addresses = [
            _address(msg) for msg in rtnl.request(ifaddrmsg(), RTM_GETADDR, NLM_F_DUMP)
            if msg["index"] == index
        ]
    return Interface(
        name=name,
        index=index,
        mac=_mac(link.get("IFLA_ADDRESS") or "00:00:00:00:00:00"),
        mtu=link.get("IFLA_MTU"),
        addresses=addresses,
        queues=_rx_queues(name) or link.get("IFLA_NUM_RX_QUEUES") or 1,
        up=bool(link["flags"] & IFF_UP),
        carrier=bool(link["flags"] & IFF_LOWER_UP),
    )


def queue_problem(iface: Interface, queue: int) -> str | None:
    """Why ``iface`` has no RX queue ``queue`` for an AF_XDP socket, or None if it has."""
    if 0 <= queue < iface.queues:
        return None
    return (f"{iface.name} has {iface.queues} RX queue{'s' if iface.queues > 1 else ''} "
            f"(0-{iface.queues - 1}; `ethtool -l {iface.name}`), so there is no queue {queue}")


def _address(msg: nlmsg) -> Address:
    family = msg["family"]
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
    # point-to-point links and the only one given for IPv6
    text = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
    return Address(socket.inet_pton(family, text), msg["prefixlen"], family)


_SIOCETHTOOL = 0x8946
_ETHTOOL_GCHANNELS = 0x3C
_CHANNELS = struct.Struct("9I")  # struct ethtool_channels: cmd, 4 maxima, 4 counts
_IFREQ = struct.Struct("16sP")  # struct ifreq: name, then a pointer (24 of 40 bytes)


def _rx_queues(name: str) -> int | None:
    """Queues in use, from the driver (ETHTOOL_GCHANNELS), or None if it won't say.

    Not /sys/class/net/<dev>/queues: sysfs shows the namespace it was mounted
    in, not the calling thread's, so after setns() it lists another
    namespace's devices — possibly one of the same name. And not only
    IFLA_NUM_RX_QUEUES: that is how many queues were allocated, which can
    exceed how many are in use (``ethtool -L``). The ioctl goes through a
    socket, so it too asks the calling thread's namespace.
    """
    channels = array.array("I", _CHANNELS.pack(_ETHTOOL_GCHANNELS, *[0] * 8))
    address, _ = channels.buffer_info()
    ifreq = bytearray(_IFREQ.pack(name.encode(), address).ljust(40, b"\0"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            fcntl.ioctl(sock, _SIOCETHTOOL, ifreq)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise
    _, _, _, _, _, rx, _, _, combined = channels
    return rx + combined or None


# --- routes ----------------------------------------------------------------------

def next_hop(dst: bytes) -> tuple[bytes | None, int]:
    """(gateway, output ifindex) the kernel would use to reach ``dst``.

    The gateway is None when ``dst`` is on-link: its own MAC is wanted then.
    It can be of the other family (an IPv4 route via an IPv6 neighbour).
    Raises OSError (ENETUNREACH, EHOSTUNREACH, ...) when there is no route.
    """
    family = _family(dst)
    query = rtmsg()
    query["family"] = family
    query["dst_len"] = len(dst) * 8
    query["attrs"] = [("RTA_DST", socket.inet_ntop(family, dst))]
    with _Rtnl() as rtnl:
        (route,) = rtnl.request(query, RTM_GETROUTE)
    gateway = route.get("RTA_GATEWAY")
    if gateway:
        return socket.inet_pton(family, gateway), route.get("RTA_OIF")
    via = route.get("RTA_VIA")  # RFC 5549: an IPv4 route via an IPv6 next hop
    if via:
        return socket.inet_pton(via["family"], via["addr"]), route.get("RTA_OIF")
    return None, route.get("RTA_OIF")


# --- neighbours ------------------------------------------------------------------

def _neighbour_query(ifindex: int, addr: bytes) -> ndmsg:
    family = _family(addr)
    msg = ndmsg()
    msg["family"] = family
    msg["ifindex"] = ifindex
    msg["attrs"] = [("NDA_DST", socket.inet_ntop(family, addr))]
    return msg


def _lookup(rtnl: _Rtnl, ifindex: int, addr: bytes) -> tuple[bytes | None, int]:
    """(MAC if usable, NUD state); (None, 0) when there is no entry."""
    try:
        (entry,) = rtnl.request(_neighbour_query(ifindex, addr), RTM_GETNEIGH)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, 0
        raise
    state = entry["state"]
    lladdr = entry.get("NDA_LLADDR")
    return (_mac(lladdr) if lladdr and state & NUD_VALID else None), state


def _solicit(rtnl: _Rtnl, ifindex: int, addr: bytes) -> None:
    # NTF_USE makes the kernel treat the entry as if a packet were waiting on
    # it (net/core/neighbour.c neigh_add -> neigh_event_send): it creates the
    # entry if needed and starts ARP / neighbour solicitation — or, for a
    # STALE entry, reachability confirmation — exactly as for its own
    # traffic, with its own retries and timers. Nothing is sent to the
    # peer but the solicitations themselves, unlike the alternative of
    # sending it a datagram to provoke resolution.
    # IPv6 caveat: a solicitation no packet prompted is sent from the
    # interface's link-local address only, and none while that address is
    # tentative (RFC 4862 §5.4) — the first second or two after the link
    # comes up, unless DAD is off; the kernel's retry a second later then
    # goes out.
    msg = _neighbour_query(ifindex, addr)
    msg["flags"] = NTF_USE
    rtnl.request(msg, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK)


def lookup_neighbour(ifindex: int, addr: bytes) -> bytes | None:
    """The MAC of ``addr`` on ``ifindex`` if the kernel has a usable one, now."""
    with _Rtnl() as rtnl:
        return _lookup(rtnl, ifindex, addr)[0]


def solicit_neighbour(ifindex: int, addr: bytes) -> None:
    """Ask the kernel to resolve ``addr`` (or reconfirm it), without waiting."""
    with _Rtnl() as rtnl:
        _solicit(rtnl, ifindex, addr)


def _resolution(ifindex: int, addr: bytes, timeout: float) -> Generator[float, None, bytes]:
    """Resolve ``addr``; yields the seconds to wait before looking again.

    Shared by the blocking and the async front ends, which differ only in
    how they wait. Polling (1 ms, doubling to 50 ms) is simpler than
    listening to neighbour notifications and costs nothing noticeable for
    the few next hops a stack has.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    with _Rtnl() as rtnl:
        mac, state = _lookup(rtnl, ifindex, addr)
        if mac is None or state & NUD_STALE:
            # a stale MAC is used at once while the kernel reconfirms it, as
            # it does before its own use of a stale entry: a changed MAC
            # shows up on a later lookup
            _solicit(rtnl, ifindex, addr)
        if mac is not None:
            return mac
        while True:
            mac, state = _lookup(rtnl, ifindex, addr)
            if mac is not None:
                return mac
            left = deadline - time.monotonic()
            if state & NUD_FAILED or left <= 0:
                host = socket.inet_ntop(_family(addr), addr)
                why = "resolution failed" if state & NUD_FAILED else f"none within {timeout}s"
                raise NeighbourUnreachable(
                    errno.EHOSTUNREACH, f"{host} on ifindex {ifindex}: {why}")
            yield min(delay, left)
            delay = min(delay * 2, 0.05)


def neighbour_mac(ifindex: int, addr: bytes, *, timeout: float = 1.0) -> bytes:
    """The MAC of ``addr`` on ``ifindex``, resolving it if needed (blocks up to ``timeout``).

    Raises NeighbourUnreachable when the kernel's resolution fails or takes
    longer. Do not call from an event loop: use ``resolve_neighbour``.
    """
    steps = _resolution(ifindex, addr, timeout)
    try:
        while True:
            time.sleep(next(steps))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def resolve_neighbour(ifindex: int, addr: bytes, *, timeout: float = 1.0) -> bytes:
    """``neighbour_mac`` for coroutines: waits with ``asyncio.sleep``."""
    steps = _resolution(ifindex, addr, timeout)
    try:
        while True:
            await asyncio.sleep(next(steps))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# --- served ports ----------------------------------------------------------------

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h


def hold_port(addr: bytes, port: int, *, family: int = socket.AF_INET, scope_id: int = 0,
              reuse_port: bool = False) -> socket.socket:
    """A kernel socket bound (never listening) to ``(addr, port)``, ``addr`` packed, or
    ``b""`` for the wildcard of ``family``: the kernel's record that the stack serves it.

    The stack's listeners live in userspace, so without this the kernel would let one
    of its own servers bind and listen on a port the stack serves (and the XDP program
    would take that server's traffic), and the stack would take over a port a kernel
    server listens on. Bound without SO_REUSEADDR, the socket conflicts with every
    other bind of that (address, port), a listening one included, and the OSError
    raised is the one asyncio's create_server raises for a taken address, so both
    orders fail as two kernel servers would.

    Where only the TIME-WAIT leftovers of an earlier kernel server (or sockets bound
    with SO_REUSEADDR and not listening) are in the way, the socket binds as asyncio's
    kernel servers do, with SO_REUSEADDR, which they let through; such a hold still
    stops the stack from taking a listening port, but no longer a later kernel server
    (Linux lets a SO_REUSEADDR listener join a bound, non-listening SO_REUSEADDR
    socket), until the stack serves the port again.

    ``reuse_port``: shared with other SO_REUSEPORT sockets of the same user (the
    workers of one ``aioxdp run``, as kernel servers share a port). IP_FREEBIND: the
    address may still be tentative (IPv6 DAD); nothing is ever received on the socket.
    """
    if addr:
        family = _family(addr)
    host = socket.inet_ntop(family, addr) if addr else (
        "::" if family == socket.AF_INET6 else "0.0.0.0")
    sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
        (host, port, 0, scope_id) if family == socket.AF_INET6 else (host, port))
    try:
        try:
            return _bound(family, sockaddr, reuse_address=False, reuse_port=reuse_port)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            return _bound(family, sockaddr, reuse_address=True, reuse_port=reuse_port)
    except OSError as err:
        # asyncio.base_events.create_server's message for a failed bind
        raise OSError(err.errno, f"error while attempting to bind on address "
                                 f"{sockaddr!r}: {(err.strerror or '').lower()}") from None


def _bound(family: int, sockaddr: tuple[str, int] | tuple[str, int, int, int], *,
           reuse_address: bool, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            # as asyncio's create_server: "::" then covers IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


# --- reserved ports --------------------------------------------------------------

# Every reservation is recorded under RUN_DIR (one JSON file: process, namespace,
# range, the ports it added), so that a stack killed before it could release its range
# (SIGKILL) leaves a record the next stack in that namespace cleans up, instead of a
# range every later run would take for an administrator's own and leave reserved.
RUN_DIR = "/run/aioxdp/reserved-ports"
SO_NETNS_COOKIE = 71  # asm-generic/socket.h, Linux 5.14

# this process's reservations: (namespace, lo, hi) -> (record file or None, ports added),
# the last made last
_records: dict[tuple[int, int, int], list[tuple[str | None, set[int]]]] = {}
_sequence = itertools.count()


def _netns_key() -> int:
    """The calling thread's network namespace: its cookie, which unlike the inode
    number is never reused by a later namespace (the inode where it is missing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE,
                                                       8))[0]  # type: ignore[no-any-return]
        except OSError:
            return os.stat("/proc/thread-self/ns/net").st_ino


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (/proc/<pid>/stat field 22), None when it is
    gone: with the pid, it tells a live process from a new one that reused the pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def _locked_records() -> Iterator[bool]:
    """Serialises aioxdp processes' read-modify-writes of the sysctl and the records.
    Yields False where RUN_DIR cannot be written: reservations then go unrecorded."""
    try:
        os.makedirs(RUN_DIR, exist_ok=True)
        fd = os.open(os.path.join(RUN_DIR, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def _load_records(netns: int) -> dict[str, dict[str, Any]]:
    """This namespace's records, by path."""
    records = {}
    for name in os.listdir(RUN_DIR):
        if name.startswith(f"{netns}-") and name.endswith(".json"):
            path = os.path.join(RUN_DIR, name)
            try:
                with open(path) as f:
                    records[path] = json.load(f)
            except (FileNotFoundError, ValueError):
                continue
    return records


def _alive(record: dict[str, Any]) -> bool:
    return _start_time(record["pid"]) == record["start"]


def _added(record: dict[str, Any]) -> set[int]:
    return _parse_ports(record["added"])


def _parse_ports(text: str) -> set[int]:
    ports: set[int] = set()
    for part in text.replace(",", " ").split():
        lo, _, hi = part.partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return ports


def _format_ports(ports: Iterable[int]) -> str:
    ranges: list[list[int]] = []
    for port in sorted(ports):
        if ranges and ranges[-1][1] == port - 1:
            ranges[-1][1] = port
        else:
            ranges.append([port, port])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def reserved_ports() -> set[int]:
    """The namespace's ``net.ipv4.ip_local_reserved_ports`` as a set."""
    with open(RESERVED_PORTS) as f:
        return _parse_ports(f.read())


def _write_reserved(ports: set[int]) -> None:
    # "\n", not "": an empty write leaves the old value in place
    with open(RESERVED_PORTS, "w") as f:
        f.write(_format_ports(ports) + "\n")


def reserve_ports(lo: int, hi: int) -> list[int]:
    """Keep the kernel from choosing ports lo..hi (inclusive) for its own sockets.

    ``net.ipv4.ip_local_reserved_ports`` holds for IPv6 too, and for bind(0)
    as well as connect(): the kernel never picks a reserved port itself, so
    the stack's ports can't collide with a kernel socket's. Other entries are
    kept. The sysctl is per network namespace, and /proc/sys/net shows the
    namespace of the thread that opens it (tests/test_kernel.py checks it),
    so this acts on the calling thread's namespace.

    First, the leftovers of dead stacks in this namespace (their records) are
    released. Ports reserved by no aioxdp stack are the administrator's and stay
    reserved after ``release_ports``; ports a live stack added too stay while it
    lives. Returns the ports released for dead stacks.
    """
    if not 0 < lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo}-{hi}")
    ours = set(range(lo, hi + 1))
    netns = _netns_key()
    path: str | None = None
    with _locked_records() as recorded:
        records = _load_records(netns) if recorded else {}
        live = {p: rec for p, rec in records.items() if _alive(rec)}
        claimed: set[int] = set().union(*(_added(rec) for rec in live.values()))
        current = reserved_ports()
        leaked: set[int] = set()
        for old, rec in records.items():
            if old not in live:
                leaked |= _added(rec) & (current - claimed)
                os.unlink(old)
        current -= leaked
        # an administrator's own: reserved, and added by no stack living or dead
        added = ours - (current - claimed)
        if recorded:
            path = os.path.join(RUN_DIR, f"{netns}-{os.getpid()}-{next(_sequence)}.json")
            with open(path, "w") as f:
                json.dump({"pid": os.getpid(), "start": _start_time(os.getpid()),
                           "range": [lo, hi], "added": _format_ports(added)}, f)
        _write_reserved(current | ours)
    _records.setdefault((netns, lo, hi), []).append((path, added))
    return sorted(leaked)


def release_ports(lo: int, hi: int) -> None:
    """Undo ``reserve_ports(lo, hi)``: ports reserved before it (by no stack still
    living) stay reserved."""
    netns = _netns_key()
    mine = _records.get((netns, lo, hi))
    if not mine:
        return
    path, added = mine.pop()
    with _locked_records() as recorded:
        records = _load_records(netns) if recorded else {}
        if path is not None:
            if records.pop(path, None) is None:
                return  # cleaned up as a dead stack's: nothing of ours is left to release
            os.unlink(path)
        others: set[int] = set().union(*(_added(rec) for rec in records.values()
                                         if _alive(rec)))
        _write_reserved(reserved_ports() - (added - others))


RTMGRP_LINK = 1  # linux/rtnetlink.h: the multicast group of RTM_NEWLINK/RTM_DELLINK
RTMGRP_IPV4_IFADDR = 0x10  # ... of RTM_NEWADDR/RTM_DELADDR, IPv4
RTMGRP_IPV6_IFADDR = 0x100  # ... and IPv6
_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr
# the interface index, 4 bytes into the message body: ifinfomsg.ifi_index of a link
# message, ifaddrmsg.ifa_index of an address message
_BODY_INDEX = struct.Struct("=i")


class LinkWatch:
    """Link and address changes as the kernel announces them: a non-blocking rtnetlink
    socket in the RTMGRP_LINK, RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR groups, opened
    in the calling thread's network namespace, for an event loop's ``add_reader``.
    ``changed()`` drains it and names the interfaces (by index) that an RTM_NEWLINK,
    RTM_DELLINK, RTM_NEWADDR or RTM_DELADDR was about (MTU, up/down, carrier, an
    address added or removed); what changed is read again with ``interface``. When the
    socket's buffer overflowed (ENOBUFS: events were lost), ``changed()`` includes
    ``LOST``: read everything again."""

    LOST = -1
    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK,
                                  socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, self.GROUPS))
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def changed(self) -> set[int]:
        out: set[int] = set()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                out.add(self.LOST)
                continue
            pos = 0
            while pos + _NLMSG.size + _BODY_INDEX.size + 4 <= len(data):
                length = _NLMSG.unpack_from(data, pos)[0]
                if length < _NLMSG.size:
                    break
                out.add(_BODY_INDEX.unpack_from(data, pos + _NLMSG.size + 4)[0])
                pos += (length + 3) & ~3  # NLMSG_ALIGN

    def close(self) -> None:
        self.sock.close()
