"""Type stub for aioxdp._xsk: the AF_XDP data path and the XDP program."""

import logging
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

__all__ = [
    "COUNTER_NAMES",
    "MAX_DESCS",
    "FrameRecords",
    "XdpProgram",
    "XskSocket",
    "checksum",
    "cut_frame",
    "fill_checksums",
    "packed_address",
    "parse_frames",
    "verify_checksums",
]

log: logging.Logger
BPF_OBJECT: Path
BPFFS: Path
COUNTER_NAMES: tuple[str, ...]
Flow = tuple[bytes, int, bytes, int]
RECORD_SIZE: int
MAX_DESCS: int

class FrameRecords(NamedTuple):
    records: bytearray
    payloads: bytearray
    n: int
    frames: bytes

def parse_frames(frames: Sequence[bytes | bytearray | memoryview], *, coalesce: bool = True,
                 raw_ports: tuple[int, int] | None = None,
                 keep_ports: tuple[int, int] | None = None) -> FrameRecords: ...
def cut_frame(frame: bytes | bytearray | memoryview, gso_size: int,
              max_frame: int = 2048) -> list[bytes]: ...

def checksum(data: bytes | bytearray | memoryview) -> int: ...
def verify_checksums(frame: bytes | bytearray | memoryview) -> bool: ...
def fill_checksums(frame: bytearray | memoryview) -> None: ...
def packed_address(text: str) -> bytes: ...

class XdpProgram:
    ifindex: int
    mode: str
    attach: str
    @classmethod
    def load(
        cls,
        ifindex: int,
        *,
        mode: str = "skb",
        attach: str = "link",
        path: str | os.PathLike[str] | None = None,
        max_flows: int = 0,
    ) -> XdpProgram: ...
    @classmethod
    def open_attached(cls, ifindex: int) -> XdpProgram: ...
    def map_fd(self, name: str) -> int: ...
    @property
    def xsks_map_fd(self) -> int: ...
    def add_listener(self, addr: bytes, port: int) -> None: ...
    def remove_listener(self, addr: bytes, port: int) -> None: ...
    def add_local_address(self, addr: bytes) -> None: ...
    def remove_local_address(self, addr: bytes) -> None: ...
    def set_port_range(self, lo: int, hi: int) -> None: ...
    def add_flows(self, flows: Sequence[Flow]) -> int: ...
    def remove_flows(self, flows: Sequence[Flow]) -> None: ...
    def flows(self) -> list[Flow]: ...
    def counters(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> XdpProgram: ...
    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None: ...

class XskSocket:
    ifname: str
    queue_id: int
    zerocopy: bool
    frame_size: int
    max_frame: int
    num_frames: int
    tx_capacity: int
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
    ) -> None: ...
    def fileno(self) -> int: ...
    def recv(self, max_frames: int = 64) -> list[memoryview]: ...
    def recv_spans(self, max_frames: int = 64) -> list[int]: ...
    def recv_records(self, max_frames: int = 64) -> int: ...
    @property
    def records(self) -> bytearray: ...
    @property
    def payloads(self) -> memoryview: ...
    def set_rx_options(self, *, raw_ports: tuple[int, int] | None = None,
                       keep_ports: tuple[int, int] | None = None,
                       coalesce: bool = True) -> None: ...
    @property
    def umem(self) -> memoryview: ...
    def release(self) -> None: ...
    def send(
        self,
        frames: bytes | bytearray | memoryview,
        lengths: Sequence[int] | array[int],
        gso_sizes: Sequence[int] | array[int] | None = None,
    ) -> int: ...
    def flush(self) -> int: ...
    @property
    def free_frames(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> XskSocket: ...
    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None: ...
