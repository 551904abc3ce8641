"""Policy: rootwrap-compatible filters, their index, and the shared decision model."""

from privsepd.policy.filters import Decision, Filter, Miss, Source
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import PolicyWarning, RootwrapPolicy, load_policy

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
