"""AF_XDP data path and XDP program, over libxdp/libbpf (cffi API mode).

Two objects:

- :class:`XdpProgram` loads ``aioxdp/bpf/aioxdp.bpf.o`` onto an interface and
  edits its maps: which (address, port) pairs and local port range belong to
  the userspace stack, and which connections it accepted from its listeners
  (``flows``). Everything else stays with Linux.
- :class:`XskSocket` is one AF_XDP socket on one receive queue with its own
  UMEM. ``recv`` hands out a batch of frames as memoryviews into the UMEM
  (no copy); ``recv_records`` parses a batch in C instead, coalescing
  in-order segments of a flow (GRO-like), into records that
  ``aioxdp.tcp.records`` turns into segments; ``send`` copies a batch of
  frames into free UMEM frames, cutting super-frames into MSS-sized ones
  (GSO-like), fills in their checksums and queues them — one C call per
  batch either way.

Not thread-safe: one thread (the event loop's) owns a socket.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import mmap
import os
import socket
import struct
import subprocess
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from ._xsk import ffi, lib

__all__ = [
    "COUNTER_NAMES",
    "MAX_DESCS",
    "XdpProgram",
    "XskSocket",
    "FrameRecords",
    "checksum",
    "cut_frame",
    "packed_address",
    "parse_frames",
    "fill_checksums",
    "verify_checksums",
]

log = logging.getLogger("aioxdp.xsk")

BPF_OBJECT = Path(__file__).resolve().parent.parent / "bpf" / "aioxdp.bpf.o"
BPFFS = Path("/sys/fs/bpf")

# Names of the XDP program's per-CPU counters, in enum aioxdp_counter order.
COUNTER_NAMES: tuple[str, ...] = (
    "passed_not_ip",
    "passed_not_tcp",
    "passed_fragment",
    "passed_not_ours",
    "redirected",
    "redirect_no_socket",
    "dropped_malformed",
    "dropped_bad_length",
    "dropped_bad_flags",
    "dropped_fragment",
    "dropped_denied",
    "dropped_not_allowed",
    "dropped_rate_limited",
    "syn_passed",
    "syn_cookie_sent",
    "syn_dropped",
    "flow_hit",
    "cookie_ack_valid",
    "cookie_ack_invalid",
    "unknown_flow_passed",
    "dropped_unknown_flow",
    "redirected_icmp",
    "dropped_no_ack",
)
if len(COUNTER_NAMES) != lib.AIOXDP_CNT_MAX:
    raise ImportError("COUNTER_NAMES is out of step with enum aioxdp_counter (aioxdp_common.h)")

# A connection as the `flows` map keys it, in ConnectionTable's key order:
# (local address, local port, remote address, remote port), addresses packed.
Flow = tuple[bytes, int, bytes, int]
# struct aioxdp_flow: 4-byte addresses zero-padded to 16 ("s" pads), ports big-endian
_FLOW = struct.Struct("!16s16sHH")
if _FLOW.size != ffi.sizeof("struct aioxdp_flow"):
    raise ImportError("_FLOW is out of step with struct aioxdp_flow (aioxdp_common.h)")

_STAT_FIELDS = tuple(name for name, _ in ffi.typeof("struct axsk_stats").fields)
RECORD_SIZE = ffi.sizeof("struct axsk_record")
MAX_DESCS: int = lib.AXSK_MAX_DESCS  # UMEM frames one frame may take (multi-buffer)
# axsk_send's errors, for the caller
_SEND_ERRORS = {
    errno.EINVAL: "a frame is not 1..{max_frame} bytes, or a super-frame (gso size > 0) is not "
                  "one IPv4/IPv6 TCP segment whose IP length covers the rest of the frame, or "
                  "the lengths overrun the buffer",
    errno.EMSGSIZE: "a super-frame's pieces (headers + gso size) exceed the longest frame "
                    "{max_frame}",
    errno.E2BIG: "a super-frame has more pieces than the TX ring or the UMEM can ever queue",
}


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise OSError(-ret, f"{what}: {os.strerror(-ret)}")
    return ret


def checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 internet checksum of ``data`` (the value to put in a header field)."""
    buf = ffi.from_buffer(data)
    return int(lib.axc_checksum(buf, len(buf)))


def verify_checksums(frame: bytes | bytearray | memoryview) -> bool:
    """True when an Ethernet frame's IPv4 header and TCP/UDP/ICMP checksums verify.

    The same check ``XskSocket.recv`` applies; frames that are neither IPv4
    nor IPv6, or carry none of TCP, UDP and ICMP (ICMPv4 over IPv4, ICMPv6
    over IPv6), pass the L4 part unchecked.
    """
    buf = ffi.from_buffer(frame)
    return int(lib.axc_verify(buf, len(buf))) == lib.AXC_OK


def fill_checksums(frame: bytearray | memoryview) -> None:
    """Fill in an Ethernet frame's IPv4 header and TCP/UDP/ICMP checksums in place,
    as ``XskSocket.send`` does for every frame it queues."""
    buf = ffi.from_buffer(frame, require_writable=True)
    lib.axc_fill(buf, len(buf))


def _rx_options(raw_ports: tuple[int, int] | None, keep_ports: tuple[int, int] | None,
                coalesce: bool) -> object:
    raw_lo, raw_hi = raw_ports or (0, 0)
    keep_lo, keep_hi = keep_ports or (1, 0)  # lo > hi: an empty range
    return ffi.new("struct axsk_rx_options *", {
        "raw_lo": raw_lo, "raw_hi": raw_hi, "keep_lo": keep_lo, "keep_hi": keep_hi,
        "coalesce": coalesce})


class FrameRecords(NamedTuple):
    """What ``parse_frames`` made of a list of frames: ``n`` records in
    ``records`` (``aioxdp.tcp.records.decode``), their payloads in ``payloads``,
    and ``frames``, the frames end to end, where raw records' frames are."""

    records: bytearray
    payloads: bytearray
    n: int
    frames: bytes


def parse_frames(frames: Sequence[bytes | bytearray | memoryview], *, coalesce: bool = True,
                 raw_ports: tuple[int, int] | None = None,
                 keep_ports: tuple[int, int] | None = None) -> FrameRecords:
    """Frames -> records, by the C code ``XskSocket.recv_records`` runs (without
    checksum verification): for tests and measurements of the C parser and
    coalescing. ``raw_ports``/``keep_ports`` as for ``XskSocket.set_rx_options``."""
    joined = b"".join(frames)
    spans = array("Q")
    pos = 0
    for frame in frames:
        spans.extend((pos, pos + len(frame)))
        pos += len(frame)
    records = bytearray(RECORD_SIZE * max(1, len(frames)))
    payloads = bytearray(max(1, len(joined)))
    n = lib.axsk_parse_frames(
        ffi.from_buffer(joined), ffi.from_buffer("uint64_t[]", spans), len(frames),
        ffi.from_buffer("struct axsk_record[]", records, require_writable=True),
        ffi.from_buffer(payloads, require_writable=True), len(payloads),
        _rx_options(raw_ports, keep_ports, coalesce))
    return FrameRecords(records, payloads, _check(n, "parse_frames"), joined)


def cut_frame(frame: bytes | bytearray | memoryview, gso_size: int,
              max_frame: int = 2048) -> list[bytes]:
    """The frames ``XskSocket.send`` puts on the wire for ``frame`` sent with
    ``gso_size`` (checksums filled in) by a socket whose longest frame is
    ``max_frame``: for tests of the transmit path's cutting. Raises ValueError as
    ``send`` does."""
    pieces = max(1, -(-len(frame) // max(1, gso_size)))
    out = bytearray(pieces * max_frame)
    lens = array("I", bytes(4 * pieces))
    n = lib.axsk_cut_frame(ffi.from_buffer(frame), len(frame), gso_size, max_frame,
                           ffi.from_buffer(out, require_writable=True), len(out),
                           ffi.from_buffer("uint32_t[]", lens, require_writable=True), pieces)
    if n < 0:
        raise ValueError(_SEND_ERRORS.get(-n, os.strerror(-n)).format(max_frame=max_frame))
    result, pos = [], 0
    for length in lens[:n]:
        result.append(bytes(out[pos:pos + length]))
        pos += length
    return result


def _endpoint(addr: bytes, port: int = 0) -> object:
    """The BPF map key for (addr, port): see struct aioxdp_endpoint."""
    if len(addr) == 4:
        family = lib.AIOXDP_FAMILY_IPV4
    elif len(addr) == 16:
        family = lib.AIOXDP_FAMILY_IPV6
    else:
        raise ValueError(f"address must be 4 or 16 packed bytes, got {len(addr)}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    key = ffi.new("struct aioxdp_endpoint *")
    key.addr[0 : len(addr)] = addr
    key.port = socket.htons(port)
    key.family = family
    return key


def _unpad(addr: bytes) -> bytes:
    """A `flows` key's 16-byte address as the stack writes it: IPv4 unpadded."""
    return addr[:4] if not any(addr[4:]) else addr


def _ensure_bpffs() -> None:
    """libxdp pins the dispatcher under /sys/fs/bpf; a fresh machine has no
    bpffs there (and ``ip netns exec`` hides it by remounting /sys)."""
    if os.path.ismount(BPFFS):
        return
    BPFFS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)


class XdpProgram:
    """The aioxdp XDP program attached to one interface, and its maps.

    Use :meth:`load`. The two ways to attach differ in what happens when
    this process goes away:

    - ``attach="link"`` (default): a bpf_link owned by this process. The
      kernel detaches the program when the last fd of the link closes, so a
      crash or SIGKILL leaves the interface clean. It is the only XDP
      program on the interface.
    - ``attach="dispatcher"``: libxdp's multi-program dispatcher, so other
      XDP programs can run on the same interface. The dispatcher is pinned in
      bpffs (mounted at /sys/fs/bpf if missing) and outlives the process:
      :meth:`close` detaches it, but after a crash it stays until removed
      (``xdp-loader unload`` or ``ip link set dev X xdp off``), redirecting
      our flows to a socket that no longer exists (they are then passed).

    :meth:`open_attached` gives ``attach="found"``: the maps of a program
    another process attached, for ``aioxdp.protect`` and counters.
    """

    def __init__(self, prog: object, ifindex: int, mode: str, attach: str) -> None:
        # detached when garbage-collected, if close() was never called
        self._prog = ffi.gc(prog, lib.axp_close)
        self.ifindex = ifindex
        self.mode = mode
        self.attach = attach
        self._closed = False

    @classmethod
    def load(
        cls,
        ifindex: int,
        *,
        mode: str = "skb",
        attach: str = "link",
        path: str | os.PathLike[str] | None = None,
        max_flows: int = 0,
    ) -> XdpProgram:
        """Load the program and attach it to ``ifindex`` in SKB (generic) or
        native (driver) mode; raises OSError when the kernel refuses.

        ``max_flows`` sizes the ``flows`` map (the connections of every
        stack sharing the program; 0: the object's AIOXDP_MAX_FLOWS): a map no
        bigger than needed keeps the lookup each SYN pays in cookie mode in
        cache.

        The program's config starts all zero, without protection: the policy
        a stack starts with is the protection layer's to write
        (``aioxdp.protect.load_program``), so this module never imports it."""
        if mode not in ("skb", "native"):
            raise ValueError(f"mode must be 'skb' or 'native', not {mode!r}")
        if attach not in ("link", "dispatcher"):
            raise ValueError(f"attach must be 'link' or 'dispatcher', not {attach!r}")
        if attach == "dispatcher":
            _ensure_bpffs()
        obj = Path(path) if path is not None else BPF_OBJECT
        if not obj.exists():
            raise FileNotFoundError(f"{obj}: build it with `pip install -e .`")
        prog = ffi.new("struct axp_prog *")
        if not 0 <= max_flows < 2**31:
            raise ValueError(f"max_flows must be in [0, 2**31), not {max_flows}")
        ret = lib.axp_load(prog, os.fsencode(obj), ifindex, mode == "native",
                           attach == "dispatcher", max_flows)
        busy = ret in (-errno.EBUSY, -errno.EEXIST)
        hint = " (another XDP program is attached there)" if busy else ""
        _check(ret, f"attaching {obj.name} to ifindex {ifindex} ({mode}, {attach}){hint}")
        return cls(prog, ifindex, mode, attach)

    @classmethod
    def open_attached(cls, ifindex: int) -> XdpProgram:
        """The aioxdp program some other process attached to ``ifindex``
        (SKB or native mode), to edit its maps and read its counters.

        It is found by id (the interface's program, then its map ids by name):
        ids are global, so this works from any network namespace, and for a
        program attached with ``attach="link"`` it needs no bpffs (``ip netns
        exec`` hides the caller's). Behind libxdp's dispatcher the program is
        found through the dispatcher's bpffs state, so only where that is
        visible. :meth:`close` only closes the map fds; the program stays.
        Raises FileNotFoundError when no aioxdp program is attached there."""
        prog = ffi.new("struct axp_prog *")
        ret = lib.axp_open_attached(prog, ifindex)
        if ret == -errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT,
                                    f"no aioxdp XDP program attached to ifindex {ifindex}")
        _check(ret, f"opening the XDP program of ifindex {ifindex}")
        return cls(prog, ifindex, "native" if prog.native else "skb", "found")

    def map_fd(self, name: str) -> int:
        """The fd of one of the program's maps, by its name in aioxdp.bpf.c."""
        return int(getattr(self._maps(), f"{name}_fd"))

    def _maps(self) -> object:
        if self._closed:
            raise ValueError("XdpProgram is closed")
        return self._prog

    @property
    def xsks_map_fd(self) -> int:
        return int(self._maps().xsks_map_fd)  # type: ignore[attr-defined]

    def _set(self, fd: int, key: object, on: bool, what: str) -> None:
        if on:
            one = ffi.new("uint8_t *", 1)
            _check(lib.bpf_map_update_elem(fd, key, one, 0), what)
            return
        ret = lib.bpf_map_delete_elem(fd, key)
        if ret != -errno.ENOENT:
            _check(ret, what)

    def add_listener(self, addr: bytes, port: int) -> None:
        """Redirect TCP to (addr, port). An all-zero ``addr`` is a wildcard: it
        matches that port on every address given to :meth:`add_local_address`."""
        self._set(self._maps().listeners_fd, _endpoint(addr, port), True, "add_listener")  # type: ignore[attr-defined]

    def remove_listener(self, addr: bytes, port: int) -> None:
        self._set(self._maps().listeners_fd, _endpoint(addr, port), False, "remove_listener")  # type: ignore[attr-defined]

    def add_local_address(self, addr: bytes) -> None:
        """An address of this host the stack uses: needed for wildcard
        listeners and the port range."""
        self._set(self._maps().local_addrs_fd, _endpoint(addr), True, "add_local_address")  # type: ignore[attr-defined]

    def remove_local_address(self, addr: bytes) -> None:
        self._set(self._maps().local_addrs_fd, _endpoint(addr), False, "remove_local_address")  # type: ignore[attr-defined]

    def set_port_range(self, lo: int, hi: int) -> None:
        """Local ports [lo, hi] of the stack's outgoing connections: TCP to a
        local address with a destination port in range is ours. (0, 0) clears it."""
        if not (0 <= lo <= hi <= 0xFFFF):
            raise ValueError(f"bad port range {lo}..{hi}")
        key = ffi.new("uint32_t *", 0)
        value = ffi.new("struct aioxdp_port_range *", {"lo": lo, "hi": hi})
        _check(lib.bpf_map_update_elem(self._maps().port_range_fd, key, value, 0), "set_port_range")  # type: ignore[attr-defined]

    def add_flows(self, flows: Sequence[Flow]) -> int:
        """Connections the stack holds (accepted from a listener or opened): their
        segments pass XDP without a cookie check or the unknown-flow budget. One C call
        for the batch. Returns how many could not be added because the map is full
        (``load``'s max_flows); those connections' segments count as unknown flows."""
        return self._set_flows(flows, True)

    def remove_flows(self, flows: Sequence[Flow]) -> None:
        """Forget connections that are gone; ones not in the map are ignored."""
        self._set_flows(flows, False)

    def _set_flows(self, flows: Sequence[Flow], add: bool) -> int:
        if not flows:
            return 0
        pack = _FLOW.pack
        keys = b"".join([pack(laddr, raddr, lport, rport) for laddr, lport, raddr, rport in flows])
        return int(lib.axp_set_flows(self._maps(), ffi.from_buffer("struct aioxdp_flow[]", keys),
                                     len(flows), add))

    def flows(self) -> list[Flow]:
        """The connections in the map (a scan, for tests and diagnostics). The key has
        no family: an address whose last 12 bytes are zero is returned as IPv4."""
        fd = self._maps().flows_fd  # type: ignore[attr-defined]
        out = []
        key, nxt = ffi.NULL, ffi.new("struct aioxdp_flow *")
        while lib.bpf_map_get_next_key(fd, key, nxt) == 0:
            laddr, raddr, lport, rport = _FLOW.unpack(ffi.buffer(nxt))
            out.append((_unpad(laddr), lport, _unpad(raddr), rport))
            key, nxt = nxt, ffi.new("struct aioxdp_flow *")
        return out

    def counters(self) -> dict[str, int]:
        """Packets per verdict since load, summed over CPUs."""
        out = ffi.new("uint64_t[]", lib.AIOXDP_CNT_MAX)
        _check(lib.axp_counters(self._maps(), out), "reading counters")
        return dict(zip(COUNTER_NAMES, out, strict=True))

    def close(self) -> None:
        """Detach and unload (idempotent); for ``open_attached``, close the fds."""
        if not self._closed:
            self._closed = True
            ffi.release(self._prog)  # runs axp_close now

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<XdpProgram ifindex={self.ifindex} mode={self.mode} attach={self.attach}>"


class XskSocket:
    """One AF_XDP socket bound to (ifname, queue_id), with its own UMEM.

    The socket puts itself into ``program``'s XSKMAP at ``queue_id``, so
    frames the program redirects on that queue arrive here. ``frame_size``
    is 2048 or 4096; half the frames (at most the fill ring's size) wait in
    the fill ring for the kernel, the rest serve ``send``.

    ``max_frame`` above ``frame_size`` (at most 16 of them) takes and sends
    frames up to that length, jumbo frames, each in several UMEM frames: the
    socket is bound with AF_XDP multi-buffer (``XDP_USE_SG``, Linux 6.6), a
    received one is copied whole for the parser, a sent one is spread in C.
    0: ``frame_size``.

    ``mode`` is the program's attach mode. Zero-copy needs native mode and
    driver support; when it is requested and impossible (veth never has it)
    the socket falls back to copy mode and logs it.
    """

    def __init__(
        self,
        ifname: str,
        queue_id: int,
        program: XdpProgram,
        *,
        num_frames: int = 4096,
        frame_size: int = 2048,
        rx_size: int = 2048,
        tx_size: int = 2048,
        mode: str = "skb",
        zerocopy: bool = False,
        need_wakeup: bool = True,
        max_frame: int = 0,
    ) -> None:
        if frame_size not in (2048, 4096):
            raise ValueError("frame_size must be 2048 or 4096")
        max_frame = max_frame or frame_size
        if not frame_size <= max_frame <= MAX_DESCS * frame_size:
            raise ValueError(f"max_frame must be {frame_size}..{MAX_DESCS * frame_size} "
                             f"(frame_size..{MAX_DESCS} frames)")
        for name, size in (("rx_size", rx_size), ("tx_size", tx_size)):
            if size <= 0 or size & (size - 1):
                raise ValueError(f"{name} must be a power of two")
        if num_frames <= 0:
            raise ValueError("num_frames must be positive")
        self.ifname = ifname
        self.queue_id = queue_id
        self._closed = True  # until the socket exists
        cfg = ffi.new("struct axsk_config *", {
            "num_frames": num_frames,
            "frame_size": frame_size,
            "rx_size": rx_size,
            "tx_size": tx_size,
            "fill_size": rx_size,
            "comp_size": tx_size,
            "max_frame": max_frame,
        })
        # UMEM owned by Python: memoryviews handed out by recv keep it mapped,
        # so a stale view after close() reads old bytes instead of crashing.
        # Jumbo frames received are copied whole into an area after the UMEM.
        self._area = mmap.mmap(-1, lib.axsk_area_len(cfg),
                               flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._area_ptr = ffi.from_buffer(self._area, require_writable=True)
        self._umem = memoryview(self._area)
        # [start, end) UMEM offsets of the last batch, interleaved; an array
        # so that Python reads it back without a per-element cffi call
        self._spans = array("Q", bytes(16 * rx_size))
        self._spans_ptr = ffi.from_buffer("uint64_t[]", self._spans, require_writable=True)
        # recv_records: the records and the payload arena, room for a whole RX ring
        # of frames (a payload is never longer than its frame); mmap'd so that only
        # the pages a batch uses are ever touched
        self._records = bytearray(RECORD_SIZE * rx_size)
        self._records_ptr = ffi.from_buffer("struct axsk_record[]", self._records,
                                            require_writable=True)
        self._arena = mmap.mmap(-1, rx_size * frame_size,
                                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._arena_ptr = ffi.from_buffer(self._arena, require_writable=True)
        self._arena_len = rx_size * frame_size
        self._payloads = memoryview(self._arena)
        self._stats = ffi.new("struct axsk_stats *")
        flags = lib.XDP_USE_NEED_WAKEUP if need_wakeup else 0
        # zero-copy needs the driver's XDP path: never in SKB mode
        if zerocopy and mode != "native":
            log.info("%s queue %d: zero-copy needs native mode; using copy mode", ifname, queue_id)
        s = None
        if zerocopy and mode == "native":
            s = self._create(ifname, queue_id, cfg, flags | lib.XDP_ZEROCOPY)
            if s is None:
                log.info("%s queue %d: zero-copy refused by the driver; falling back to copy mode",
                         ifname, queue_id)
        self._s = s if s is not None else self._create(ifname, queue_id, cfg, flags | lib.XDP_COPY)
        self._closed = False
        self.zerocopy = bool(_check(lib.axsk_zerocopy(self._s), "getsockopt(XDP_OPTIONS)"))
        self.frame_size = frame_size
        self.max_frame = max_frame
        self.num_frames = num_frames
        # the most frames one send can queue at once (TX ring, frames not kept for
        # the fill ring): a super-frame must be cut into no more pieces
        self.tx_capacity = int(lib.axsk_tx_capacity(self._s))
        try:
            key = ffi.new("uint32_t *", queue_id)
            fd = ffi.new("uint32_t *", lib.axsk_fd(self._s))
            _check(lib.bpf_map_update_elem(program.xsks_map_fd, key, fd, 0),
                   f"inserting the socket into xsks_map[{queue_id}]")
        except BaseException:
            self.close()
            raise

    def _create(self, ifname: str, queue_id: int, cfg: object, flags: int) -> object | None:
        """Returns the C socket, or None when zero-copy was asked for and refused."""
        cfg.bind_flags = flags  # type: ignore[attr-defined]
        out = ffi.new("struct axsk **")
        ret = lib.axsk_create(out, ifname.encode(), queue_id, self._area_ptr, cfg)
        # the kernel frees a closed socket's hold on the queue asynchronously:
        # a socket reopened right after close() can find it still busy
        for _ in range(40):
            if ret != -errno.EBUSY:
                break
            time.sleep(0.025)
            ret = lib.axsk_create(out, ifname.encode(), queue_id, self._area_ptr, cfg)
        if ret in (-errno.EOPNOTSUPP, -errno.EPROTONOSUPPORT, -errno.EINVAL) and (
            flags & lib.XDP_ZEROCOPY
        ):
            return None
        jumbo = cfg.max_frame > cfg.frame_size  # type: ignore[attr-defined]
        _check(ret, f"AF_XDP socket on {ifname} queue {queue_id}" + (
            " (frames of several UMEM frames: AF_XDP multi-buffer, Linux 6.6 or later)"
            if jumbo and ret == -errno.EINVAL else ""))
        return ffi.gc(out[0], lib.axsk_delete)  # closed when garbage-collected

    def _sock(self) -> object:
        if self._closed:
            raise ValueError("I/O on a closed XskSocket")
        return self._s

    def fileno(self) -> int:
        """The socket's fd: readable when the RX ring has frames."""
        return int(lib.axsk_fd(self._sock()))

    def recv(self, max_frames: int = 64) -> list[memoryview]:
        """Up to ``max_frames`` received frames, checksums verified (frames
        that fail are dropped and counted in ``stats()``).

        The views point into the UMEM and stay valid until the next
        ``recv``/``recv_spans``, ``release`` or ``close``: the next receive
        starts by giving the previous batch back to the kernel. Copy what
        must live longer (``bytes(view)``).
        """
        umem = self._umem
        it = iter(self.recv_spans(max_frames))
        return [umem[start:end] for start, end in zip(it, it, strict=True)]

    def recv_spans(self, max_frames: int = 64) -> list[int]:
        """Like ``recv`` without creating a memoryview per frame (about half
        the Python cost per frame): ``[start0, end0, start1, end1, ...]``,
        offsets into ``umem``, for parsers that take a buffer and an offset
        (``struct.unpack_from(xsk.umem, start + 12)``)."""
        n = lib.axsk_recv(self._sock(), max_frames, self._spans_ptr)
        return self._spans[: 2 * n].tolist() if n else []

    def recv_records(self, max_frames: int = 64) -> int:
        """Up to ``max_frames`` received frames (checksums verified as for ``recv``),
        parsed in C into records: returns how many. ``aioxdp.tcp.records.decode
        (xsk.records, xsk.payloads, n)`` makes segments of them.

        In-order data segments of one flow in the batch are coalesced into one
        record (as Linux's GRO; see ``set_rx_options``). Frames the C code does
        not parse are "raw" records, their frames held in the UMEM at
        ``records.frame_span`` until the next receive or ``release``; the frames
        of parsed records are already back with the kernel, their payloads in
        ``payloads`` until the next ``recv_records``."""
        return int(lib.axsk_recv_records(self._sock(), max_frames, self._records_ptr,
                                         self._arena_ptr, self._arena_len))

    @property
    def records(self) -> bytearray:
        """The records of the last ``recv_records`` (struct axsk_record, records.h)."""
        return self._records

    @property
    def payloads(self) -> memoryview:
        """The payload arena of the last ``recv_records``."""
        return self._payloads

    def set_rx_options(self, *, raw_ports: tuple[int, int] | None = None,
                       keep_ports: tuple[int, int] | None = None,
                       coalesce: bool = True) -> None:
        """How ``recv_records`` treats frames: segments to a destination port in
        ``raw_ports`` (lo, hi) but not in ``keep_ports`` are left raw (another
        worker's connections, which its caller relays whole), and ``coalesce``
        False keeps every wire segment its own record."""
        lib.axsk_set_rx_options(self._sock(), _rx_options(raw_ports, keep_ports, coalesce))

    @property
    def umem(self) -> memoryview:
        """The whole UMEM, read-write; frames are at the offsets ``recv_spans`` gives."""
        return self._umem

    def release(self) -> None:
        """Give the last batch back to the kernel now rather than at the next recv."""
        lib.axsk_release(self._sock())

    def send(
        self,
        frames: bytes | bytearray | memoryview,
        lengths: Sequence[int] | array[int],
        gso_sizes: Sequence[int] | array[int] | None = None,
    ) -> int:
        """Queue frames laid end to end in ``frames`` (``lengths[i]`` bytes
        each) for transmission, with their IPv4 header and TCP/UDP checksums
        filled in (leave the fields zero). Returns how many were queued, from
        the front: fewer than ``len(lengths)`` when free frames or TX slots run
        out — send the rest later. Never blocks.

        ``gso_sizes[i] > 0`` makes frame i a super-frame: one TCP segment of any
        length, cut in C into frames of ``gso_sizes[i]`` payload bytes (headers
        copied, lengths, sequence numbers and checksums per piece, FIN and PSH
        on the last), queued all or none, so it still counts as one. Raises
        ValueError (nothing queued) for a frame it cannot send."""
        n = len(lengths)
        if not n:
            return 0
        if isinstance(lengths, array) and lengths.typecode in ("H", "I") and (
            lengths.itemsize in (2, 4)
        ):
            width = lengths.itemsize
            lens = ffi.from_buffer(lengths)
        else:
            width = 4
            lens = ffi.from_buffer(array("I", lengths))
        gso = ffi.NULL
        if gso_sizes is not None:
            if len(gso_sizes) != n:
                raise ValueError("gso_sizes must have one entry per frame")
            if not (isinstance(gso_sizes, array) and gso_sizes.typecode == "H"):
                gso_sizes = array("H", gso_sizes)
            gso = ffi.from_buffer("uint16_t[]", gso_sizes)
        buf = ffi.from_buffer(frames)
        ret = lib.axsk_send(self._sock(), buf, len(buf), lens, width, gso, n)
        if ret < 0:
            raise ValueError(_SEND_ERRORS.get(-ret, os.strerror(-ret)).format(
                max_frame=self.max_frame))
        return int(ret)

    def flush(self) -> int:
        """Kick the kernel for anything still queued and reclaim completed
        frames; returns the number of frames still in flight."""
        return int(lib.axsk_flush(self._sock()))

    @property
    def free_frames(self) -> int:
        """UMEM frames in the free list (neither with the kernel nor held)."""
        lib.axsk_stats(self._sock(), self._stats)
        return int(self._stats.free_frames)  # type: ignore[attr-defined]

    def stats(self) -> dict[str, int]:
        """Counters of this socket: rx, tx, rx_dropped_checksum,
        rx_dropped_malformed, kicks, tx_refused (frames the device dropped, e.g.
        above its MTU), tx_kick_errors, rx_multi/tx_multi (jumbo frames received/sent
        as several UMEM frames), frame accounting (free_frames,
        held_frames, tx_outstanding), ring levels (fill_ring, rx_ring,
        tx_ring, comp_ring) and the kernel's XDP_STATISTICS (rx_dropped,
        rx_invalid_descs, rx_ring_full, rx_fill_ring_empty_descs,
        tx_invalid_descs, tx_ring_empty_descs)."""
        lib.axsk_stats(self._sock(), self._stats)
        return {name: int(getattr(self._stats, name)) for name in _STAT_FIELDS}

    def close(self) -> None:
        """Close the socket (the kernel drops it from the XSKMAP); idempotent."""
        if not self._closed:
            self._closed = True
            ffi.release(self._s)  # runs axsk_delete now

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<XskSocket {self.ifname} queue={self.queue_id} zerocopy={self.zerocopy}>"


def packed_address(text: str) -> bytes:
    """'198.18.0.1' or '2001:2::1' -> 4 or 16 packed bytes, for the map methods."""
    return ipaddress.ip_address(text).packed
