"""A running stack's counters for other processes: JSON on a unix socket, Prometheus text on TCP.

The unix socket lives at ``/run/aioxdp/<interface>-<queue>@<netns>.sock``,
``<netns>`` being the inode number of the stack's network namespace. /run is
shared by every network namespace, so ``aioxdp stats`` in the root namespace
finds a stack started with ``ip netns exec``, and no port of the bypassed
interface is spent on it; interface names are only unique within a namespace,
hence the namespace in the name (``eth1`` of two namespaces would otherwise
hide one another). A client connects, reads one JSON document to EOF, and is
done: there is no request to parse, so nothing to get wrong.

Every stack serves one (aioxdp.loop starts it with the stack, whichever way the
loop was made; ``Settings.stats`` turns it off).

The Prometheus endpoint (``aioxdp run --metrics PORT``) is for scrapers that
speak HTTP only. It is a plain kernel socket on the base loop: a port the
bypass stack does not own, so the XDP program passes its traffic to Linux and
it keeps answering whatever state the stack is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import glob
import ipaddress
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .kernel import NETNS_DIR, netns_name
from .settings import KernelSocket, Settings

logger = logging.getLogger("aioxdp")

# AIOXDP_RUN_DIR moves it (tests, or a user without write access to /run)
STATS_DIR = Path(os.environ.get("AIOXDP_RUN_DIR", "/run/aioxdp"))
MAX_REPLY = 16 * 1024 * 1024  # a stats document is a few KiB; anything this big is not ours
METRICS_REQUEST_LIMIT = 8192  # bytes of HTTP request head the metrics endpoint accepts
# A socket younger than this is left alone by the sweep of stale ones: it may be one that
# another process has bound and is about to listen on.
STALE_AFTER = 10.0

Snapshot = dict[str, Any]


# paths this process serves: a second StatsServer for one of them (aioxdp run starts one
# before its app makes the stack, which starts its own) steps aside without a warning
_SERVING: set[Path] = set()


def netns_inode(netns: str | None = None) -> int:
    """The inode number that names a network namespace while it lives: the calling
    thread's (a thread may have entered one with setns, as topology.in_netns does),
    or the one ``ip netns`` knows as ``netns``."""
    path = "/proc/thread-self/ns/net" if netns is None else NETNS_DIR / netns
    return os.stat(path).st_ino


def socket_path(interface: str, queue: int, netns: str | None = None) -> Path:
    """The stats socket of the stack on ``interface`` queue ``queue`` in namespace
    ``netns`` (a name of ``ip netns``). Without ``netns``: the calling thread's
    namespace, or else, when no socket is there, the only one of that interface and
    queue in any namespace (a stack started with ``ip netns exec``, looked at from
    outside)."""
    path = _path(interface, queue, netns_inode(netns))
    if netns is None and not path.exists():
        others = list(STATS_DIR.glob(f"{glob.escape(interface)}-{queue}@*.sock"))
        if len(others) == 1:
            return others[0]
    return path


def _path(interface: str, queue: int, netns: int) -> Path:
    return STATS_DIR / f"{interface}-{queue}@{netns}.sock"


def _interface_of(path: Path) -> str:
    """``eth1`` of ``eth1-0@4026532290.sock`` (interface names may hold ``-`` and ``@``)."""
    return path.stem.rpartition("@")[0].rpartition("-")[0]


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: str keys; addresses as text; enums by name."""
    if isinstance(value, Mapping):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else raw.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


def _key(key: Any) -> str:
    value = plain(key)
    return value if isinstance(value, str) else json.dumps(value)


def snapshot(loop: asyncio.AbstractEventLoop, settings: Settings, started: float) -> Snapshot:
    """What the process is and what its stack counted: ``stack.stats()`` plus who and where."""
    info: Snapshot = {
        "pid": os.getpid(),
        "interface": settings.interface,
        "queue": settings.queue,
        "mode": settings.mode,
        "poll": settings.poll,
        "loop": type(loop).__name__,
        "netns": netns_name(),
        "started": started,
        "uptime": round(time.time() - started, 3),
    }
    stack = getattr(loop, "xdp_stack", None)
    info["running"] = stack is not None
    if stack is not None:
        info["addresses"] = plain(stack.addresses)
        try:
            stats = stack.stats()
        except Exception as exc:  # a stack closing under us must not break the endpoint
            info["error"] = f"{type(exc).__name__}: {exc}"
        else:
            info.update(plain(stats))
    return info


class StatsServer:
    """Serves ``snapshot()`` as JSON to whoever connects to the unix socket.

    Made in the namespace of the stack it reports on: the name says which."""

    def __init__(self, settings: Settings, collect: Callable[[], Snapshot]) -> None:
        if settings.interface is None:
            raise ValueError("the stats socket is named after the interface: none configured")
        self.path = _path(settings.interface, settings.queue, netns_inode())
        self._collect = collect
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        """Listen; False when the name is taken: by another live process (with a
        warning), or by this one (aioxdp run's and its loop's, quietly)."""
        if self.path in _SERVING:
            return False
        try:
            STATS_DIR.mkdir(parents=True, exist_ok=True)
            swept = sweep_stale()
            if swept:
                logger.info("removed %d stats sockets of stacks that are gone", swept)
            if self.path.exists():
                if _answers(self.path):
                    logger.warning("%s is served by another live process: no stats socket "
                                   "here", self.path)
                    return False
                self.path.unlink()  # left behind by a process that was killed
            _SERVING.add(self.path)
            self._server = await asyncio.get_running_loop().create_unix_server(
                self._protocol, str(self.path))
        except PermissionError as exc:  # say where, and the ways out
            _SERVING.discard(self.path)
            raise PermissionError(exc.errno, (
                f"cannot create the stats socket {self.path} ({exc.strerror}): run as root, "
                "or set AIOXDP_RUN_DIR to a writable directory, or AIOXDP_STATS=0")) from None
        except BaseException:
            _SERVING.discard(self.path)
            raise
        return True

    def _protocol(self) -> asyncio.Protocol:
        return _SnapshotProtocol(self._collect)

    def stop(self) -> None:
        """Stop serving and remove the socket; synchronous, for a loop's close()."""
        if self._server is None:
            return
        self._server.close()
        self._server = None
        _SERVING.discard(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def close(self) -> None:
        self.stop()


class _SnapshotProtocol(asyncio.Protocol):
    def __init__(self, collect: Callable[[], Snapshot]) -> None:
        self._collect = collect

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # no isinstance check: uvloop's transports are not asyncio.WriteTransport subclasses
        assert hasattr(transport, "write")
        try:
            body = json.dumps(self._collect()).encode() + b"\n"
        except Exception as exc:  # report it to the client rather than hang up silently
            body = json.dumps({"pid": os.getpid(), "error": repr(exc)}).encode() + b"\n"
        transport.write(body)  # type: ignore[attr-defined]
        transport.close()


def sweep_stale(now: float | None = None) -> int:
    """Remove the sockets in STATS_DIR that nothing listens on any more, older than
    STALE_AFTER; returns how many. A stack ended by SIGKILL leaves its socket, and so
    does one whose process a signal ends while its loop still runs (uvicorn raises
    SIGTERM again after its graceful shutdown, inside the loop): every new stack
    sweeps them, as it releases the ports a killed one left reserved."""
    now = time.time() if now is None else now
    removed = 0
    for path in STATS_DIR.glob("*.sock"):
        try:
            if now - path.stat().st_mtime < STALE_AFTER or _answers(path):
                continue
            path.unlink()
        except OSError:  # gone meanwhile, or another user's
            continue
        removed += 1
    return removed


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# -- the client side (aioxdp stats) -------------------------------------------------------------


def stats_sockets(interface: str | None = None) -> list[Path]:
    """The sockets of running stacks: all of them, or those of one interface."""
    if not STATS_DIR.is_dir():
        return []
    paths = sorted(STATS_DIR.glob("*.sock"))
    if interface is not None:
        paths = [p for p in paths if _interface_of(p) == interface]
    return paths


def query(path: Path, timeout: float = 2.0) -> Snapshot:
    """One stack's snapshot; OSError when nothing answers, ValueError on garbage."""
    chunks: list[bytes] = []
    size = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY:
                raise ValueError(f"{path}: reply larger than {MAX_REPLY} bytes")
    data = json.loads(b"".join(chunks))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    data["socket"] = str(path)
    return data


def query_all(interface: str | None = None) -> tuple[list[Snapshot], list[str]]:
    """Snapshots of every running stack (or one interface's), and why others gave none."""
    snapshots: list[Snapshot] = []
    problems: list[str] = []
    for path in stats_sockets(interface):
        try:
            snapshots.append(query(path))
        except (ConnectionRefusedError, FileNotFoundError):
            problems.append(f"{path}: stale socket, its process is gone")
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
    return snapshots, problems


# -- Prometheus text format ---------------------------------------------------------------------

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_META = ("pid", "interface", "queue", "mode", "poll", "loop", "started", "socket", "addresses")


def numbers(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """Every numeric leaf of a snapshot, named by its path (``xdp_redirected``)."""
    for key, value in data.items():
        here = (*path, str(key))
        if isinstance(value, Mapping):
            yield from numbers(value, here)
        elif isinstance(value, int | float):  # bool included: 0 or 1
            yield "_".join(here), float(value)


def prometheus_text(snap: Snapshot) -> str:
    """The snapshot in the Prometheus exposition format (version 0.0.4)."""
    labels = 'interface="{}",queue="{}"'.format(
        str(snap.get("interface", "")).replace('"', ""), snap.get("queue", 0))
    lines = [f"aioxdp_up{{{labels}}} 1"]
    for name, value in numbers({k: v for k, v in snap.items() if k not in _META}):
        metric = "aioxdp_" + _UNSAFE.sub("_", name)
        lines.append(f"{metric}{{{labels}}} {value:g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` over HTTP/1.x on a kernel TCP socket of the base loop."""

    def __init__(self, collect: Callable[[], Snapshot], host: str, port: int) -> None:
        self._collect = collect
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # a KernelSocket keeps the aioxdp loop from moving this server onto the bypass stack
        sock = KernelSocket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(16)
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._handle, sock=sock,
                                                     limit=METRICS_REQUEST_LIMIT)
        except BaseException:
            sock.close()
            raise

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        request = head.split(b"\r\n", 1)[0].split()
        if len(request) >= 2 and request[0] in (b"GET", b"HEAD") \
                and request[1].split(b"?")[0] in (b"/", b"/metrics"):
            status, body = "200 OK", prometheus_text(self._collect()).encode()
        else:
            status, body = "404 Not Found", b"try GET /metrics\n"
        writer.write((f"HTTP/1.1 {status}\r\n"
                      "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
        if request[:1] != [b"HEAD"]:
            writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
