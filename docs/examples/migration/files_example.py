"""A context that opens /dev/net/tun where the device is 0600 root (needs privsepd.Files)."""

import os

import privsepd
from privsepd.compat.oslo_privsep import capabilities as caps
from privsepd.compat.oslo_privsep import priv_context

TUN = os.environ.get("MYAGENT_TUN", "/dev/net/tun")

tap = priv_context.PrivContext(
    "files_example",
    cfg_section="myagent_tap",
    pypath="files_example.tap",
    capabilities=[caps.CAP_NET_ADMIN],
    files=privsepd.Files(read=[], write=[TUN]),
)


@tap.entrypoint
def open_tun(path=TUN):
    with open(path, "wb", buffering=0):
        return True
