"""Who is at the other end of a Unix socket, in the kernel's words.

``SO_PEERCRED`` and ``SO_PEERGROUPS`` report the credentials the peer had
when it called ``connect()`` (or ``socketpair()``/``listen()``); they cannot
be forged or changed afterwards, and nothing is read from ``/proc`` (where a
pid could be reused by the time it is read).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

__all__ = ["PeerCredentials", "peer_credentials"]

_PEERCRED = struct.Struct("3i")
# Linux 4.13+; the constant is missing from older Python builds.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)  # PyPy 3.9 lacks the name
_NGROUPS_MAX = 65536


@dataclass(frozen=True)
class PeerCredentials:
    """pid, uid, primary gid and supplementary groups of a socket's peer."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def fields(self) -> dict[str, int]:
        """The audit record fields that name this peer."""
        return {"peer_pid": self.pid, "peer_uid": self.uid, "peer_gid": self.gid}


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The peer's credentials as the kernel recorded them at connect time."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: socket.socket) -> tuple[int, ...]:
    size = 256 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < _NGROUPS_MAX * 4:
                size = _NGROUPS_MAX * 4
                continue
            if exc.errno == errno.ENOPROTOOPT:  # kernel before 4.13: groups unknown
                return ()
            raise
        count = len(raw) // 4
        return tuple(sorted(set(struct.unpack(f"{count}I", raw[: count * 4]))))
