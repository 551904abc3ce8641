"""``oslo_privsep.daemon``: the exception names services catch.

There is no oslo daemon here: helpers are privsepd's (fork, spawn through
``privsepd helper``, or ``privsepd serve``).
"""

from __future__ import annotations

from privsepd.errors import PrivsepError
from privsepd.errors import ProtocolError as _ProtocolError


class FailedToDropPrivileges(PrivsepError):
    """The helper could not be started or could not reach its declared scope."""


class ProtocolError(_ProtocolError):
    """The helper's reply broke the channel protocol."""
