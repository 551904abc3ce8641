"""Audit records: one structured line per privileged decision.

The helper writes these itself, through a sink opened before scoping, so a
compromised client cannot suppress or forge them. Sinks: syslog/journald
(``/dev/log``), a JSON-lines file, or the ``privsepd.audit`` logger.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

_logger = logging.getLogger("privsepd.audit")

MAX_ARG_SUMMARY = 200


def summarize(value: Any, limit: int = MAX_ARG_SUMMARY) -> str:
    """A bounded, printable summary of call arguments (never the full payload)."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class AuditLog:
    """Where audit records go; open it before the helper drops privileges."""

    def __init__(self, fd: int | None = None, syslog: socket.socket | None = None) -> None:
        self._fd = fd
        self._syslog = syslog
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str | None) -> AuditLog:
        """``None``/"logger": stdlib logging; "syslog": /dev/log; else a file path."""
        if target in (None, "", "logger"):
            return cls()
        if target == "syslog":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.connect("/dev/log")
            except OSError:
                sock.close()
                return cls()
            return cls(syslog=sock)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(fd=fd)

    def close(self) -> None:
        """Release the sink (the daemon's, once a reload has replaced it)."""
        with self._lock:
            fd, self._fd = self._fd, None
            sock, self._syslog = self._syslog, None
        if fd is not None:
            os.close(fd)
        if sock is not None:
            sock.close()

    def fds(self) -> list[int]:
        """Descriptors the helper must keep open through scoping."""
        out = []
        if self._fd is not None:
            out.append(self._fd)
        if self._syslog is not None:
            out.append(self._syslog.fileno())
        return out

    def wants(self, decision: str) -> bool:
        """Whether a record of this decision goes anywhere (cheap; per call)."""
        if self._fd is not None or self._syslog is not None:
            return True
        return _logger.isEnabledFor(logging.DEBUG if decision == "allow" else logging.WARNING)

    def record(self, **fields: Any) -> None:
        fields.setdefault("ts", round(time.time(), 6))
        line = json.dumps(fields, sort_keys=True, default=str)
        if self._fd is not None:
            with self._lock:
                os.write(self._fd, line.encode() + b"\n")
        elif self._syslog is not None:
            # <86> = facility authpriv (10) * 8 + severity info (6).
            msg = f"<86>privsepd[{os.getpid()}]: {line}".encode()
            try:
                self._syslog.send(msg)
            except OSError:
                _logger.warning(line)
        else:
            # Without a dedicated sink, allowed calls stay at DEBUG so they are
            # not forwarded over the channel with every reply; denials and
            # errors are always visible.
            level = logging.DEBUG if fields.get("decision") == "allow" else logging.WARNING
            _logger.log(level, line)
