"""systemd integration: readiness notification (``Type=notify``).

``sd_notify`` is a datagram to the socket named by ``$NOTIFY_SOCKET``; a few
lines here instead of a dependency. The variable is taken out of the
environment on first use, so neither helpers nor the commands they run
inherit a way to talk to the service manager.
"""

from __future__ import annotations

import os
import socket

_UNSET = object()
_notify_path: object = _UNSET


def _path() -> str | None:
    global _notify_path
    if _notify_path is _UNSET:
        _notify_path = os.environ.pop("NOTIFY_SOCKET", None) or None
    return _notify_path  # type: ignore[return-value]


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to systemd; False if not under it."""
    path = _path()
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]  # abstract namespace
    elif path.startswith("/"):
        address = path
    else:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
