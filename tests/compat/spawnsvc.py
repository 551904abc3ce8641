"""Two compat contexts in oslo's default section, for spawn and daemon mode.

The spawned helper and ``privsepd serve`` import this module by the name
root-owned policy gives (``spawnsvc:whoami``); the contexts are named after
their pypath, which is also their policy context and their socket name.
"""

from __future__ import annotations

import logging
import os

from svcdeps.netlink import NetlinkError

from privsepd.compat.oslo_privsep import capabilities as caps
from privsepd.compat.oslo_privsep import priv_context

LOG = logging.getLogger(__name__)

ctx = priv_context.PrivContext("spawnsvc", pypath="spawnsvc.ctx", capabilities=[caps.CAP_NET_ADMIN])
other = priv_context.PrivContext(
    "spawnsvc", pypath="spawnsvc.other", capabilities=[caps.CAP_DAC_READ_SEARCH]
)


def _caps() -> dict:
    with open(f"/proc/{os.getpid()}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {"pid": os.getpid(), "CapEff": int(fields["CapEff"], 16)}


@ctx.entrypoint
def whoami() -> dict:
    LOG.warning("whoami in %s", os.getpid())
    return _caps()


@other.entrypoint
def other_whoami() -> dict:
    return _caps()


@ctx.entrypoint
def no_such_device() -> None:
    raise NetlinkError(19)
