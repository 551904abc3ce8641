"""Call counters a helper keeps where its daemon can read them.

The daemon maps one small shared buffer per helper before it forks it; the
helper's server writes its counters there and ``privsepd status`` reads them
through the daemon, without a word on the client's channel. In fork and
spawn mode the same counters live in private memory.

Layout (native byte order, 8-byte fields): calls served, the time the helper
started serving, the time of its last call (both ``CLOCK_MONOTONIC``, which
every process on the host shares), then one slot per worker holding the
start time of the call it is running (0 when idle).
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import Any

_HEAD = struct.Struct("=Qdd")
_SLOT = struct.Struct("=d")


class CallStats:
    """Counters of one helper; written by its server, read by anyone holding the buffer."""

    def __init__(self, slots: int, buffer: Any = None) -> None:
        self.slots = max(1, slots)
        size = self.size_for(self.slots)
        self._buf = buffer if buffer is not None else bytearray(size)
        if len(self._buf) < size:
            raise ValueError(f"stats buffer of {len(self._buf)} bytes, need {size}")

    @staticmethod
    def size_for(slots: int) -> int:
        return _HEAD.size + _SLOT.size * slots

    @classmethod
    def shared(cls, slots: int) -> CallStats:
        """Counters in anonymous shared memory: a child forked later writes, we read."""
        size = cls.size_for(max(1, slots))
        return cls(slots, mmap.mmap(-1, size, flags=mmap.MAP_SHARED))

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()

    # -- the helper's side (called with its server's lock held) -------------

    def start(self, now: float) -> None:
        _HEAD.pack_into(self._buf, 0, 0, now, now)

    def begin(self, slot: int, now: float) -> None:
        if slot < self.slots:
            _SLOT.pack_into(self._buf, _HEAD.size + _SLOT.size * slot, now)

    def end(self, slot: int, now: float) -> None:
        served, started, _ = _HEAD.unpack_from(self._buf, 0)
        _HEAD.pack_into(self._buf, 0, served + 1, started, now)
        if slot < self.slots:
            _SLOT.pack_into(self._buf, _HEAD.size + _SLOT.size * slot, 0.0)

    # -- anyone's side -------------------------------------------------------

    def snapshot(self, timeout: float | None = None, now: float | None = None) -> dict[str, Any]:
        """Served, in flight, abandoned (running past ``timeout``), idle seconds."""
        now = time.monotonic() if now is None else now
        served, started, last = _HEAD.unpack_from(self._buf, 0)
        running = [
            _SLOT.unpack_from(self._buf, _HEAD.size + _SLOT.size * i)[0] for i in range(self.slots)
        ]
        running = [t for t in running if t > 0]
        latest = max([last, started, *running]) if started else 0.0
        return {
            "served": served,
            "in_flight": len(running),
            "abandoned": sum(1 for t in running if timeout is not None and now - t > timeout),
            "idle_for": round(now - latest, 3) if started and not running else 0.0,
            "serving_for": round(now - started, 3) if started else 0.0,
        }

    def idle_for(self, now: float | None = None) -> float | None:
        """Seconds since the helper last did anything; None while a call runs
        or before it serves (it is still being scoped)."""
        _, started, _ = _HEAD.unpack_from(self._buf, 0)
        snap = self.snapshot(now=now)
        if snap["in_flight"] or not started:
            return None
        return snap["idle_for"]
