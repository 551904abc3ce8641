"""``privsepd filters explain``: which rule allows a command, or why none does.

Loads policy the way the runtime would (or, with ``--untrusted``, as plain
files), decides the command with the runtime's own index without running
anything, and prints the decision: the winning rule and what it would run,
or the reason for the denial, every rule considered on the way, chained
commands, and rules for the same program spelt differently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from privsepd.authoring.check_base import DEFAULT_EXEC_DIRS
from privsepd.errors import PolicyError

__all__ = [
    "ExplainPolicy",
    "decision_json",
    "explain_command",
    "helper_identity",
    "load_for_explain",
]

# explain's exit codes (the ones privsepd.authoring.cli documents for every tool).
EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXIT_UNUSABLE = 2


class ExplainPolicy:
    """What explain needs: an index to match, and where the rules came from.

    ``helper`` is who runs a native rule that names no ``run_as``: (name,
    uid, gid) of the context's helper user (its ``user``/``group``, the
    default account, or root with ``stay_root``), or for the rootwrap shim
    the unprivileged default account, as the runtime decides it.
    """

    def __init__(
        self,
        index: Any,
        files: list[str],
        warnings: list[str],
        helper: tuple[str, int | None, int | None] | None = None,
    ) -> None:
        self.index = index
        self.files = files
        self.warnings = warnings
        self.helper = helper or helper_identity(None)


def helper_identity(spec: Any) -> tuple[str, int | None, int | None]:
    """(user, uid, gid) a context's helper runs as (``spec`` None: the rootwrap shim's default).

    The same rule as the runtime (``scoping.resolve_user``): ``stay_root``
    keeps root; else the context's ``user`` (default: ``privsepd``, else
    ``nobody``) and its ``group`` or primary group. A name this host lacks
    shows with unknown ids.
    """
    import grp
    import pwd

    from privsepd.policy.native import default_account

    if spec is not None and spec.stay_root:
        return "root", 0, 0
    name = getattr(spec, "user", None)
    try:
        pw = default_account() if name is None else pwd.getpwnam(name)
    except KeyError:
        return str(name), None, None
    if pw is None:
        return "nobody", None, None
    gid: int | None = pw.pw_gid
    group = getattr(spec, "group", None)
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            gid = None
    return pw.pw_name, pw.pw_uid, gid


def _run_as_name(run_as: str | None, helper: tuple | None) -> str | None:
    from privsepd.policy.filters import RUN_AS_HELPER

    if run_as == RUN_AS_HELPER:
        return f"{(helper or helper_identity(None))[0]} (the helper's own user)"
    return run_as


def _who(decision: Any, helper: tuple | None) -> tuple:
    """(run_as, uid, gid) of a decision, the helper's own user filled in."""
    from privsepd.policy.filters import RUN_AS_HELPER

    if decision.run_as == RUN_AS_HELPER:
        _, uid, gid = helper or helper_identity(None)
        return _run_as_name(decision.run_as, helper), uid, gid
    return decision.run_as, decision.uid, decision.gid


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read: {exc.strerror}", path=path) from None


def _implicit_privsep_helper(contexts: Sequence[str] = ()) -> Any:
    from privsepd.policy.rootwrap import PrivsepHelperFilter

    return PrivsepHelperFilter(contexts)


def load_for_explain(
    configs: Sequence[str],
    trusted: bool = True,
    context: str | None = None,
    exec_dirs: Sequence[str] | None = None,
) -> ExplainPolicy:
    """Load policy the way the runtime would (``trusted``) or as plain files.

    A path ending in ``.conf`` is a rootwrap.conf; anything else goes
    through the native loader (``.toml``/``.filters`` files and drop-in dirs).
    """
    from privsepd.policy.index import FilterIndex

    if not configs:
        raise PolicyError("no --config given")
    if configs[0].endswith(".conf"):
        if len(configs) > 1:
            raise PolicyError("a rootwrap.conf names its own filters directories; give one")
        from privsepd.policy import rootwrap

        if trusted:
            policy = rootwrap.load_policy(configs[0])
            files = sorted({f.source.path for f in policy.filters})
            return ExplainPolicy(policy.index, files, [str(w) for w in policy.warnings])
        config = rootwrap.parse_config(_read(configs[0]), configs[0])
        filters: list = []
        files = []
        for directory in config.filters_path:
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                full = os.path.join(directory, name)
                if name.startswith(".") or not os.path.isfile(full):
                    continue
                files.append(full)
                filters.extend(rootwrap.parse_filters(_read(full), full))
        filters.append(_implicit_privsep_helper(config.privsep_contexts))
        dirs = config.exec_dirs if exec_dirs is None else exec_dirs
        return ExplainPolicy(FilterIndex(filters, dirs), files, [])
    dirs = DEFAULT_EXEC_DIRS if exec_dirs is None else exec_dirs
    if trusted:
        from privsepd.policy.loader import load_policy

        native = load_policy(list(configs))
        return ExplainPolicy(
            native.index(context, dirs),
            native.files,
            [str(w) for w in native.warnings],
            helper_identity(native.contexts.get(context)) if context else None,
        )
    from privsepd.policy.native import parse_policy
    from privsepd.policy.rootwrap import parse_filters

    rules: list = []
    files = []
    contexts: dict = {}
    for path in configs:
        if os.path.isdir(path):
            children = [
                os.path.join(path, n)
                for n in sorted(os.listdir(path))
                if not n.startswith(".") and n.endswith((".toml", ".filters"))
            ]
        else:
            children = [path]
        for child in children:
            files.append(child)
            if child.endswith(".filters"):
                rules.extend(parse_filters(_read(child), child))
            else:
                frag = parse_policy(_read(child), child)
                rules.extend(frag.commands.values())
                contexts.update(frag.contexts)
    chosen = [r for r in rules if getattr(r, "context", None) == context]
    helper = helper_identity(contexts.get(context)) if context else None
    return ExplainPolicy(FilterIndex(chosen, dirs), files, [], helper)


def _rule_json(filt: Any) -> dict[str, Any] | None:
    if filt is None:
        return None
    src = filt.source
    return {"file": src.path, "line": src.line, "name": src.name, "class": filt.kind}


def decision_json(decision: Any, helper: tuple | None = None) -> dict[str, Any]:
    """The explain --json object for one Decision (chained decisions nested)."""
    run_as, uid, gid = _who(decision, helper)
    candidates = []
    for cand in decision.trace:
        entry = _rule_json(cand.filter) or {}
        entry["run_as"] = _run_as_name(cand.filter.run_as, helper)
        if cand.miss is None:
            entry.update(matched=True, code=None, reason=None, deviation=False)
        else:
            entry.update(
                matched=False,
                code=cand.miss.code,
                reason=cand.miss.detail,
                deviation=cand.miss.deviation,
            )
        candidates.append(entry)
    return {
        "decision": "allow" if decision.allowed else "deny",
        "outcome": decision.outcome,
        "rule": _rule_json(decision.filter) if decision.allowed else None,
        "argv": list(decision.argv),
        "command": list(decision.command) if decision.command else None,
        "executable": decision.executable,
        "run_as": run_as,
        "uid": uid,
        "gid": gid,
        "env": dict(decision.env),
        "capabilities": sorted(getattr(decision.filter, "capabilities", ()) or ())
        if decision.allowed
        else [],
        "reason": decision.reason,
        "message": decision.message or None,
        "rc": decision.rc,
        "candidates": candidates,
        "chain": decision_json(decision.chain, helper) if decision.chain is not None else None,
    }


def _near_misses(index: Any, argv: Sequence[str]) -> list[Any]:
    """Rules for the same program spelt differently (path vs basename)."""
    if not argv:
        return []
    base = os.path.basename(argv[0])
    out = []
    for filt in index.filters:
        keys = filt.index_keys() or ()
        if argv[0] not in keys and (base in keys or os.path.basename(filt.exec_path) == base):
            out.append(filt)
    return out


def _render_decision(decision: Any, indent: str = "", helper: tuple | None = None) -> list[str]:
    lines = []
    if decision.allowed:
        f = decision.filter
        lines.append(
            f"{indent}allow: rule {f.source.name!r} ({f.kind}) at {f.source.path}:{f.source.line}"
        )
        run_as, uid, gid = _who(decision, helper)
        who = f"{run_as} (uid {uid}, gid {gid})"
        lines.append(f"{indent}  runs: {' '.join(decision.command)}  as {who}")
        if decision.env:
            env = " ".join(f"{k}={v}" for k, v in sorted(decision.env.items()))
            lines.append(f"{indent}  env: {env}")
        caps = sorted(getattr(f, "capabilities", ()) or ())
        if caps:
            lines.append(f"{indent}  capabilities: {', '.join(caps)}")
    else:
        rc = decision.rc
        lines.append(f"{indent}deny: {decision.reason} (oslo-rootwrap exit code {rc})")
    losers = [c for c in decision.trace if c.miss is not None]
    if losers:
        lines.append(f"{indent}  rules considered before the decision:")
        for cand in losers:
            f = cand.filter
            dev = " [privsepd deviation]" if cand.miss.deviation else ""
            lines.append(
                f"{indent}    {f.source.path}:{f.source.line} {f.source.name!r} ({f.kind}): "
                f"{cand.miss.code}: {cand.miss.detail}{dev}"
            )
    if decision.chain is not None:
        lines.append(f"{indent}  chained command:")
        lines.extend(_render_decision(decision.chain, indent + "    ", helper))
    return lines


def explain_command(args: argparse.Namespace) -> int:
    """``privsepd filters explain``: print the decision; exit 0 allow, 1 deny, 2 unusable."""
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(
            "privsepd filters explain: no command given (explain --config CONF -- CMD ...)",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    try:
        policy = load_for_explain(
            args.config, trusted=not args.untrusted, context=args.context, exec_dirs=args.exec_dirs
        )
    except PolicyError as exc:
        hint = ""
        if type(exc).__name__ == "UnsafePolicyError":
            hint = " (the runtime refuses it too; --untrusted explains it anyway)"
        print(f"privsepd filters explain: {exc}{hint}", file=sys.stderr)
        return EXIT_UNUSABLE
    decision = policy.index.match(argv)
    if args.json:
        out = decision_json(decision, policy.helper)
        out["policy_files"] = policy.files
        out["trusted"] = not args.untrusted
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for line in _render_decision(decision, "", policy.helper):
            print(line)
        if not decision.trace:
            print(f"  no rule mentions {argv[0]!r}")
            for filt in _near_misses(policy.index, argv):
                print(
                    f"  hint: {filt.source.path}:{filt.source.line} {filt.source.name!r} "
                    f"({filt.kind}) is for {filt.exec_path!r}; call it as "
                    f"{os.path.basename(filt.exec_path)!r} or by that exact path"
                )
        if args.untrusted:
            print("  note: loaded without the ownership check (--untrusted)")
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED
