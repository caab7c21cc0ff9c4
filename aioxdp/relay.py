"""Frames that reached one worker's queue but belong to another worker's connection.

Why this exists (aioxdp/workers.py, "Outgoing connections"): each worker opens
outgoing connections only from its own slice of the stack's port range, but the
NIC chooses a reply's queue by hashing the 4-tuple, not by who sent the SYN. So
the worker whose queue a reply lands on hands the frame to the owner of its
destination port over a unix datagram socket. It sits at the stack's level: the
stack asks it about every received segment, and it knows nothing above Settings.
"""

from __future__ import annotations

import socket

from .settings import Settings, port_count

RELAY_BUFFER = 4 * 1024 * 1024  # bytes a worker's relay socket may queue: ~2000 frames
MAX_FRAME = 2048


def relay_address(interface: str, worker: int) -> bytes:
    """Worker ``worker``'s relay socket, in the abstract namespace (no file to clean up
    after a crash; the workers share the parent's network namespace)."""
    return f"\0aioxdp-relay-{interface}-{worker}".encode()


class PortRelay:
    """Hands frames addressed to another worker's local ports to that worker.

    ``pass_on`` is called for every received segment: a destination port in the
    stack's port range but outside this worker's slice, and not a listening port,
    belongs to another worker's outgoing connection.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.interface is not None
        self.interface = settings.interface
        self.index = settings.queue
        self.low, self.high = settings.port_range
        self.own_low, self.own_high = settings.own_ports()
        self.span = port_count(settings.port_range) // settings.workers
        self.workers = settings.workers
        self.listening: set[int] = set()
        self.forwarded = 0
        self.received = 0
        self.failed = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
            self._sock.bind(relay_address(self.interface, self.index))
        except BaseException:
            self._sock.close()
            raise

    def pass_on(self, port: int, frame: memoryview | bytes) -> bool:
        """Forward ``frame`` if ``port`` is another worker's; False: it is ours to
        process (also when the owner is down: our table then answers with RST)."""
        if not self.low <= port <= self.high or self.own_low <= port <= self.own_high \
                or port in self.listening:
            return False
        owner = (port - self.low) // self.span
        if owner >= self.workers:
            return False  # the unused tail of the range: nobody's
        try:
            self._sock.sendto(frame, relay_address(self.interface, owner))
        except OSError:  # not running (ECONNREFUSED), or its queue is full (EAGAIN)
            self.failed += 1
            return False
        self.forwarded += 1
        return True

    def receive(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` frames other workers passed on."""
        frames = []
        for _ in range(max_frames):
            try:
                frames.append(self._sock.recv(MAX_FRAME))
            except BlockingIOError:
                break
        self.received += len(frames)
        return frames

    def fileno(self) -> int:
        return self._sock.fileno()

    def stats(self) -> dict[str, int]:
        return {"forwarded": self.forwarded, "received": self.received, "failed": self.failed}

    def close(self) -> None:
        self._sock.close()
