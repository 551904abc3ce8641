"""What both ends of a channel socket share: read size and write coalescing."""

from __future__ import annotations

import threading

RECV_SIZE = 64 * 1024


class WriteQueue:
    """Coalesces frames from concurrent threads into single writes.

    ``add`` queues a frame and tells the caller whether it must flush (no
    flush is running); the flushing thread then ``take``s everything queued
    until nothing is left, so N concurrent senders cost a few writes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._flushing = False

    def add(self, data: bytes) -> bool:
        with self._lock:
            self._frames.append(data)
            if self._flushing:
                return False
            self._flushing = True
            return True

    def take(self) -> bytes | None:
        with self._lock:
            if not self._frames:
                self._flushing = False
                return None
            frames = self._frames
            self._frames = []
        return b"".join(frames) if len(frames) > 1 else frames[0]

    def put_back(self, rest: bytes) -> None:
        """Unwritten bytes go first, for the next flusher: the stream stays whole."""
        with self._lock:
            self._frames.insert(0, rest)
            self._flushing = False

    def reset(self) -> None:
        with self._lock:
            self._frames.clear()
            self._flushing = False
