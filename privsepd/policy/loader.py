"""Load policy from a main file plus drop-in directories (etc.d style).

``load_policy(["/etc/privsepd/policy.toml", "/etc/privsepd/policy.d"])``
reads each path in order; a directory contributes its ``*.toml`` and
``*.filters`` files in sorted (code point) order. Every file and directory
must pass :func:`~privsepd.policy.trust.check_trusted` (root-owned, not
group/world-writable, up to ``/``) before a byte of it is parsed.

Merge rule: later files may add rules, never change one. A context,
function or command name that an earlier file (or the same file) already
declared is an error naming both places; nothing is overridden or merged
field by field. So a drop-in cannot widen an existing context's
capabilities, loosen a function's constraints or replace a command's
executable; it can declare new contexts, new functions and commands (also
in contexts declared elsewhere) and add rootwrap ``.filters`` rules, which
are matched after the rules loaded before them (first match wins).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from privsepd.errors import PolicyError
from privsepd.policy.filters import Filter
from privsepd.policy.index import FilterIndex
from privsepd.policy.native import (
    ContextSpec,
    FunctionSpec,
    NativeCommand,
    PolicyFragment,
    parse_policy,
)
from privsepd.policy.rootwrap import PolicyWarning, parse_filters
from privsepd.policy.trust import ROOT_ONLY, Trust, check_trusted, read_trusted
from privsepd.regex import exponential_reason, show_pattern

__all__ = ["DROPIN_SUFFIXES", "Policy", "load_policy"]

DROPIN_SUFFIXES = (".toml", ".filters")


@dataclass
class Policy:
    """Every rule from every policy file, merged.

    ``filters`` is the ordered command policy (rootwrap filters and native
    commands, in load order); ``commands`` indexes the native ones by name.
    ``warnings`` are the rootwrap loader's lint findings for ``.filters``
    files; ``ignored`` lists drop-in directory entries that were skipped.
    Commands without a context are the rootwrap shim's; a context's helper
    only runs commands declared for that context.
    """

    contexts: dict[str, ContextSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    commands: dict[str, NativeCommand] = field(default_factory=dict)
    filters: list[Filter] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)

    def functions_for(self, context: str) -> dict[str, FunctionSpec]:
        """The function table a context's helper is started with."""
        return {n: f for n, f in self.functions.items() if f.context == context}

    def filters_for(self, context: str | None) -> list[Filter]:
        """Command rules of one context (None: the rootwrap shim's), in order."""
        return [f for f in self.filters if getattr(f, "context", None) == context]

    def index(self, context: str | None = None, exec_dirs: Sequence[str] = ()) -> FilterIndex:
        """A compiled matcher for one context's (or the shim's) command rules."""
        return FilterIndex(self.filters_for(context), exec_dirs)


def _dropins(directory: str, policy: Policy) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise PolicyError(
            f"cannot list drop-in directory: {exc.strerror}", path=directory
        ) from None
    out = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not name.endswith(DROPIN_SUFFIXES):
            policy.ignored.append(path)  # editor backups, dpkg leftovers, READMEs
            continue
        out.append(path)
    return out


class _Merger:
    def __init__(self, trust: Trust):
        self.trust = trust
        self.policy = Policy()

    def add_path(self, path: str, required: bool) -> None:
        if not os.path.lexists(path):
            if required:
                raise PolicyError("no such file or directory", path=path)
            return
        check_trusted(path, self.trust)
        if os.path.isdir(path):
            for child in _dropins(path, self.policy):
                self.add_file(child)
        else:
            self.add_file(path)

    def add_file(self, path: str) -> None:
        if not path.endswith(DROPIN_SUFFIXES):
            raise PolicyError(f"policy files must end in {' or '.join(DROPIN_SUFFIXES)}", path=path)
        text = read_trusted(path, self.trust)
        self.policy.files.append(path)
        if path.endswith(".filters"):
            filters = parse_filters(text, path, self.policy.warnings)
            for filt in filters:
                _warn_exponential(filt, self.policy.warnings)
            self.policy.filters.extend(filters)
            return
        self.merge(parse_policy(text, path))

    def merge(self, frag: PolicyFragment) -> None:
        p = self.policy
        for kind, new, old in (
            ("context", frag.contexts, p.contexts),
            ("function", frag.functions, p.functions),
            ("command", frag.commands, p.commands),
        ):
            for name, spec in new.items():
                if name in old:
                    first = old[name].source
                    here = spec.source
                    raise PolicyError(
                        f"{kind} {name!r} is already defined at {first.path}:{first.line}; "
                        "later policy files may add rules but not redefine one",
                        path=here.path,
                        line=here.line or None,
                    )
                old[name] = spec
        p.filters.extend(frag.commands.values())

    def finish(self) -> Policy:
        p = self.policy
        rules: Iterable[FunctionSpec | NativeCommand] = [
            *p.functions.values(),
            *p.commands.values(),
        ]
        for rule in rules:
            if rule.context is not None and rule.context not in p.contexts:
                kind = "function" if isinstance(rule, FunctionSpec) else "command"
                src = rule.source
                raise PolicyError(
                    f"{kind} {rule.name!r} names unknown context {rule.context!r}",
                    path=src.path if src else None,
                    line=(src.line or None) if src else None,
                )
        return p


def _warn_exponential(filt: Filter, warnings: list[PolicyWarning]) -> None:
    """Log and record a rootwrap pattern whose matching time can be exponential.

    Such a ``.filters`` rule still loads (oslo compatibility), but a helper
    cannot interrupt a match that holds the GIL: the operator must hear of it
    at load time (native policy refuses such patterns outright).
    """
    if filt.kind not in ("RegExpFilter", "ChainingRegExpFilter"):
        return
    for i, pattern in enumerate(filt.args):
        why = exponential_reason(pattern)
        if why is None:
            continue
        src = filt.source
        message = (
            f"{src.name} argument {i}: regex {show_pattern(pattern)} backtracks "
            f"exponentially: {why}"
        )
        warnings.append(PolicyWarning("loose-regex", message, src.path, src.line))
        logging.getLogger("privsepd.policy").warning("%s:%s: %s", src.path, src.line, message)


def load_policy(paths: Sequence[str], trust: Trust = ROOT_ONLY) -> Policy:
    """Load and merge policy from ``paths`` (files or drop-in directories).

    The first path must exist; later ones (drop-in directories) may be
    absent. ``trust`` widens who may own policy and exists only for tests.
    """
    if isinstance(paths, str):
        raise TypeError("load_policy() takes a list of paths")
    if not paths:
        raise PolicyError("no policy paths given")
    merger = _Merger(trust)
    for i, path in enumerate(paths):
        merger.add_path(path, required=i == 0)
    return merger.finish()
