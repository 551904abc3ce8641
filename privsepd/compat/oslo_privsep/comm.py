"""``oslo_privsep.comm``: the names services catch.

The channel itself is privsepd's (privsepd.channel); a call that gets no
reply in time raises :class:`PrivsepTimeout`, which is also a
``privsepd.CallTimeout`` (and so a ``TimeoutError``).
"""

from __future__ import annotations

import enum

from privsepd.errors import CallTimeout


@enum.unique
class Message(enum.IntEnum):
    """oslo's message kinds (kept for code that names them; privsepd's differ)."""

    PING = 1
    PONG = 2
    CALL = 3
    RET = 4
    ERR = 5
    LOG = 6


class PrivsepTimeout(CallTimeout):
    """An entrypoint got no reply within its timeout."""
