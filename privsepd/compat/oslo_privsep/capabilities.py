"""``oslo_privsep.capabilities``: the capability numbers, by name and by value.

The numbers come from privsepd's own table (linux/capability.h). Setting
capabilities is the helper's job (privsepd.helper.scoping); only the
read-back ``get_caps`` is offered here.
"""

from __future__ import annotations

import enum

from privsepd.kernel_names import CAPABILITIES

Capabilities = enum.IntEnum("Capabilities", dict(CAPABILITIES))  # type: ignore[misc]
Capabilities.__module__ = __name__

CAPS_BYNAME: dict[str, int] = dict(CAPABILITIES)
CAPS_BYVALUE: dict[int, str] = {v: k for k, v in CAPABILITIES.items()}

globals().update(CAPABILITIES)  # CAP_NET_ADMIN = 12, ... as module constants


def _mask_to_caps(mask: int) -> list[int]:
    return [i for i in range(64) if (1 << i) & mask]


def get_caps() -> tuple[list[int], list[int], list[int]]:
    """(effective, permitted, inheritable) of the calling thread, as numbers."""
    fields = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return (
        _mask_to_caps(int(fields["CapEff"], 16)),
        _mask_to_caps(int(fields["CapPrm"], 16)),
        _mask_to_caps(int(fields["CapInh"], 16)),
    )
