"""Type stub for aioxdp._xsk: the AF_XDP data path and the XDP program."""

import logging
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "COUNTER_NAMES",
    "XdpProgram",
    "XskSocket",
    "checksum",
    "fill_checksums",
    "packed_address",
    "verify_checksums",
]

log: logging.Logger
BPF_OBJECT: Path
BPFFS: Path
COUNTER_NAMES: tuple[str, ...]

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
    ) -> XdpProgram: ...
    @property
    def xsks_map_fd(self) -> int: ...
    def add_listener(self, addr: bytes, port: int) -> None: ...
    def remove_listener(self, addr: bytes, port: int) -> None: ...
    def add_local_address(self, addr: bytes) -> None: ...
    def remove_local_address(self, addr: bytes) -> None: ...
    def set_port_range(self, lo: int, hi: int) -> None: ...
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
    num_frames: int
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
    ) -> None: ...
    def fileno(self) -> int: ...
    def recv(self, max_frames: int = 64) -> list[memoryview]: ...
    def recv_spans(self, max_frames: int = 64) -> list[int]: ...
    @property
    def umem(self) -> memoryview: ...
    def release(self) -> None: ...
    def send(
        self,
        frames: bytes | bytearray | memoryview,
        lengths: Sequence[int] | array[int],
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
