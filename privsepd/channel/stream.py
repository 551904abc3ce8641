"""What both ends of a channel socket share: read size and write coalescing."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

RECV_SIZE = 64 * 1024

_TIMEVAL = struct.Struct("@ll")


def set_kernel_timeout(sock: socket.socket, option: int, seconds: float | None) -> float | None:
    """Bound blocking sends or receives in the kernel (SO_SNDTIMEO/SO_RCVTIMEO).

    Unlike ``settimeout`` this leaves the socket blocking and bounds one
    direction only: a timed-out call raises BlockingIOError. None clears it.
    """
    if seconds is None:
        sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(0, 0))
        return None
    seconds = max(seconds, 0.001)  # 0 would mean forever
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))
    return seconds


class WriteQueue:
    """Coalesces frames from concurrent threads into single writes.

    ``add`` queues a frame and tells the caller whether it must flush (no
    flush is running); the flushing thread then ``take``s everything queued
    until nothing is left, so N concurrent senders cost a few writes.

    A frame may carry a tag (the client tags each request with its caller):
    ``take_tagged`` then also says which tags the chunk holds and how many
    bytes each, so a failed write can tell which frames never left.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._tags: list[tuple[Any, int]] = []
        self._flushing = False

    def add(self, data: bytes, tag: Any = None) -> bool:
        with self._lock:
            self._frames.append(data)
            self._tags.append((tag, len(data)))
            if self._flushing:
                return False
            self._flushing = True
            return True

    def take(self) -> bytes | None:
        taken = self.take_tagged()
        return None if taken is None else taken[0]

    def take_tagged(self) -> tuple[bytes, list[tuple[Any, int]]] | None:
        with self._lock:
            if not self._frames:
                self._flushing = False
                return None
            frames, tags = self._frames, self._tags
            self._frames, self._tags = [], []
        return (b"".join(frames) if len(frames) > 1 else frames[0]), tags

    def put_back(self, rest: bytes, tags: list[tuple[Any, int]] | None = None) -> None:
        """Unwritten bytes go first, for the next flusher: the stream stays whole."""
        with self._lock:
            self._frames.insert(0, rest)
            self._tags[:0] = tags if tags is not None else [(None, len(rest))]
            self._flushing = False

    def discard(self, tag: Any) -> bool:
        """Remove the queued frame carrying ``tag``; False if it is not queued."""
        with self._lock:
            for i, (queued, _) in enumerate(self._tags):
                if queued is tag:
                    del self._frames[i], self._tags[i]
                    return True
            return False

    def reset(self) -> list[Any]:
        """Drop everything queued; return the tags of the dropped frames."""
        with self._lock:
            dropped = [tag for tag, _ in self._tags]
            self._frames.clear()
            self._tags.clear()
            self._flushing = False
            return dropped
