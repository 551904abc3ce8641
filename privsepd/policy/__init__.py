"""Policy: rootwrap-compatible filters, their index, and the shared decision model.

The package itself imports nothing: privsepd-rootwrap imports the filter
classes, the index and the trust check as submodules on every run, and a
cache hit must not pay for the INI loader (configparser, logging and
logging.handlers, about a quarter of its import time). The names below load
on first use (PEP 562).
"""

from __future__ import annotations

TYPE_CHECKING = False  # the type checker treats this name as true
if TYPE_CHECKING:
    from privsepd.policy.filters import Decision, Filter, Miss, Source
    from privsepd.policy.index import FilterIndex
    from privsepd.policy.rootwrap import PolicyWarning, RootwrapPolicy, load_policy

#: Each public name and the submodule that defines it.
_HOME = {
    "Decision": "privsepd.policy.filters",
    "Filter": "privsepd.policy.filters",
    "Miss": "privsepd.policy.filters",
    "Source": "privsepd.policy.filters",
    "FilterIndex": "privsepd.policy.index",
    "PolicyWarning": "privsepd.policy.rootwrap",
    "RootwrapPolicy": "privsepd.policy.rootwrap",
    "load_policy": "privsepd.policy.rootwrap",
}

__all__ = [
    "Decision",
    "Filter",
    "FilterIndex",
    "Miss",
    "PolicyWarning",
    "RootwrapPolicy",
    "Source",
    "load_policy",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'privsepd.policy' has no attribute {name!r}")
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
