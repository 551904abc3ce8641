"""``privsepd filters convert``: rootwrap ``.filters`` to native TOML, decision for decision.

Lossless by construction: a rule is written as a native ``[[command]]`` only
when the native form decides exactly as privsepd decides the rootwrap rule;
every other rule is kept verbatim in a *residual* ``.filters`` file that is
loaded after the TOML (the loader accepts both in one drop-in directory).
First-match order is kept: once a rule stays rootwrap-only, every later rule
that can match the same ``argv[0]`` stays with it.

What converts (``exec`` is resolved against exec_dirs at conversion time):

* ``CommandFilter``   -> ``args = [{ rest = { str = true, max_len = 131072 } }]``
  (131072 is the kernel's per-argument limit, so no length is refused that
  execve would accept);
* ``RegExpFilter`` / ``ChainingRegExpFilter`` whose argv[0] pattern is a
  literal naming the executable, and whose patterns read the same under
  oslo's ``re.match(p + '$')`` and ``re.fullmatch`` -> ``{ regex = ... }``
  (plus ``{ chain = true }``);
* ``PathFilter`` whose bases are normalised, symlink-free and without a
  trailing ``/`` -> ``{ path_under = ..., must_exist = false }``, ``'pass'``
  -> any string, literals -> strings;
* ``ReadFileFilter`` -> ``/bin/cat`` with the file as its only argument;
* ``IpNetnsExecFilter`` -> ``ip`` ``{ choice = [net, netn, netns] }``
  ``{ choice = [e, ex, exe, exec] }`` NS ``{ chain = true }``;
* a bare ``ChainingFilter`` (never matches) is dropped, as is an
  ``IpNetnsExecFilter`` that does not run as root.

Stays rootwrap: ``KillFilter``, ``EnvFilter``, ``IpFilter`` (no native form
decides the same way), relative executables not found at conversion time,
and anything the checks above refuse.

Known differences (documented, never a different program or argument):
native rules also accept ``argv[0]`` spelt as the absolute ``exec`` path
where the rootwrap rule named a bare program; ``path_under`` refuses
relative path arguments (rootwrap resolved them against the shim's cwd)
and paths over 4096 characters.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from privsepd.authoring.check_regex import sre_parser
from privsepd.errors import PolicyError
from privsepd.policy.filters import Filter
from privsepd.regex import compile_regex

__all__ = ["ARG_MAX_LEN", "Conversion", "add_parser", "convert_filters"]

ARG_MAX_LEN = 131072  # MAX_ARG_STRLEN: the kernel refuses longer argv elements
_ANY = {"str": True, "max_len": ARG_MAX_LEN}
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


@dataclass
class Conversion:
    """Native TOML text, residual rootwrap rules, and a log of what happened."""

    toml: str
    residual: list[Filter] = field(default_factory=list)
    residual_text: str = ""
    notes: list[str] = field(default_factory=list)  # "file:line name: what happened"
    converted: int = 0
    dropped: int = 0


def _tree(obj: object) -> object:
    """A comparable form of an sre parse tree."""
    data = getattr(obj, "data", None)
    if data is not None:
        return tuple(_tree(x) for x in data)
    if isinstance(obj, (tuple, list)):
        return tuple(_tree(x) for x in obj)
    return obj


def fullmatch_is_oslo(pattern: str) -> bool:
    """True if re.fullmatch(p) implies re.match(p + '$'): a native regex decides the same.

    It does when the appended '$' parses as an end anchor: it then ends the
    pattern or its last top-level alternative, and a full match through any
    alternative is also an oslo match. It does not when '$' is swallowed by
    a trailing escape (oslo then wants a literal '$').
    """
    try:
        _parser = sre_parser()
        base = _parser.parse(pattern)
        oslo = _parser.parse(pattern + "$")
    except Exception:  # noqa: BLE001 - invalid patterns never match: keep rootwrap
        return False
    at_end = (_parser.AT, _parser.AT_END)

    def count(tree: object) -> int:
        if tree == at_end:
            return 1
        if isinstance(tree, tuple):
            return sum(count(x) for x in tree)
        return 0

    return count(_tree(oslo)) == count(_tree(base)) + 1


def pure_literal(pattern: str) -> str | None:
    """The string a pattern matches if it matches exactly one literal string."""
    if "(?" in pattern:  # inline flags, lookarounds: not a plain literal
        return None
    try:
        _parser = sre_parser()
        tree = _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - not a pattern: not a literal
        return None
    chars = []
    for op, av in tree.data:
        if op is not _parser.LITERAL:
            return None
        chars.append(chr(av))
    return "".join(chars)


def _resolve(exec_path: str, exec_dirs: Sequence[str]) -> str | None:
    if os.path.isabs(exec_path):
        return exec_path if os.path.normpath(exec_path) == exec_path else None
    for d in exec_dirs:
        candidate = os.path.join(d, exec_path)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class _Unconvertible(Exception):
    pass


def _command_word(filt: Filter, exe: str) -> None:
    """Refuse if argv[0] must be something native cannot express."""
    if filt.kind in ("RegExpFilter", "ChainingRegExpFilter"):
        if not filt.args:
            raise _Unconvertible("no patterns")
        word = pure_literal(filt.args[0])
        if word is None or word not in (os.path.basename(exe), exe):
            raise _Unconvertible(
                f"argv[0] pattern {filt.args[0]!r} is not the executable's name or path"
            )


def _regex(pattern: str) -> dict:
    try:  # what the native loader compiles: a pattern it refuses stays a rootwrap rule
        compile_regex(pattern, re.ASCII)
    except PolicyError as exc:
        raise _Unconvertible(exc.reason) from None
    if not fullmatch_is_oslo(pattern):
        raise _Unconvertible(f"pattern {pattern!r} reads differently under oslo's p+'$'")
    return {"regex": pattern, "max_len": ARG_MAX_LEN}


def _convert_one(filt: Filter, exec_dirs: Sequence[str]) -> tuple[str, list] | None:
    """(exec, args) of the native form; None to drop; raise _Unconvertible to keep."""
    kind = filt.kind
    if kind in ("KillFilter", "EnvFilter", "IpFilter"):
        raise _Unconvertible(f"{kind} has no native form that decides the same way")
    if kind == "ChainingFilter":
        return None
    if kind == "IpNetnsExecFilter" and filt.run_as != "root":
        return None
    if kind == "ReadFileFilter":
        return "/bin/cat", [filt.file_path]  # type: ignore[attr-defined]
    exe = _resolve(filt.exec_path, exec_dirs)
    if exe is None:
        raise _Unconvertible(f"executable {filt.exec_path!r} not found in exec_dirs")
    if kind == "CommandFilter":
        return exe, [{"rest": _ANY}]
    if kind == "IpNetnsExecFilter":
        return exe, [
            {"choice": ["net", "netn", "netns"]},
            {"choice": ["e", "ex", "exe", "exec"]},
            _ANY,
            {"chain": True},
        ]
    _command_word(filt, exe)
    if kind == "RegExpFilter":
        return exe, [_regex(p) for p in filt.args[1:]]
    if kind == "ChainingRegExpFilter":
        return exe, [*(_regex(p) for p in filt.args[1:]), {"chain": True}]
    if kind == "PathFilter":
        args: list = []
        for c in filt.args:
            if c == "pass":
                args.append(_ANY)
            elif not os.path.isabs(c):
                args.append(c)
            elif os.path.normpath(c) != c or os.path.realpath(c) != c:
                raise _Unconvertible(
                    f"base {c!r} is not a normalised, symlink-free path without a trailing "
                    "'/' (path_under would compare a different directory)"
                )
            else:
                args.append({"path_under": c, "must_exist": False})
        return exe, args
    raise _Unconvertible(f"unknown filter class {kind}")


def _keys(filt: Filter) -> set[str] | None:
    """argv[0] values a rule can match, for order conflicts (None: any)."""
    if filt.kind == "EnvFilter":
        return {"env", "="}
    keys = filt.index_keys()
    return None if keys is None else set(keys)


def _native_keys(exe: str, rootwrap_keys: set[str] | None) -> set[str]:
    return {exe, os.path.basename(exe), *(rootwrap_keys or ())}


def _name(raw: str, used: set[str]) -> str:
    name = raw if _RULE_NAME.fullmatch(raw) else re.sub(r"[^A-Za-z0-9_.:-]", "_", raw)
    name = name.lstrip("_.:-")[:120] or "rule"
    base, n = name, 2
    while name in used:
        name = f"{base}-{n}"
        n += 1
    used.add(name)
    return name


def _filters_line(filt: Filter) -> str:
    if filt.kind == "KillFilter":
        cols = [filt.kind, filt.run_as, *filt.args]
    elif filt.kind == "ReadFileFilter":
        cols = [filt.kind, filt.file_path, *filt.args]  # type: ignore[attr-defined]
    elif filt.kind == "EnvFilter":
        original = "env" if filt.args and filt.exec_path == filt.args[-1] else filt.exec_path
        cols = [filt.kind, original, filt.run_as, *filt.args]
    else:
        cols = [filt.kind, filt.exec_path, filt.run_as, *filt.args]
    return f"{filt.source.name}: {', '.join(cols)}"


def convert_filters(
    filters: Sequence[Filter], exec_dirs: Sequence[str], context: str | None = None
) -> Conversion:
    """Convert rules in policy order; see the module docstring for the rules."""
    from privsepd.authoring.learn import _toml_str, _toml_value

    out: list[str] = []
    conv = Conversion("")
    used: set[str] = set()
    residual_keys: set[str] = set()
    residual_any = False
    for filt in filters:
        where = f"{filt.source.path}:{filt.source.line} {filt.source.name}"
        keys = _keys(filt)
        try:
            native = _convert_one(filt, exec_dirs)
            if native is not None:
                exe = native[0]
                nkeys = _native_keys(exe, keys)
                if residual_any or nkeys & residual_keys:
                    raise _Unconvertible(
                        "an earlier rule for the same command stays rootwrap; kept with it to "
                        "preserve first-match order"
                    )
        except _Unconvertible as exc:
            conv.residual.append(filt)
            conv.notes.append(f"{where}: kept as rootwrap: {exc}")
            if keys is None:
                residual_any = True
            else:
                residual_keys |= keys
                if filt.kind not in ("EnvFilter", "KillFilter", "ReadFileFilter"):
                    exe = _resolve(filt.exec_path, exec_dirs)
                    if exe:
                        residual_keys |= {exe, os.path.basename(exe)}
            continue
        if native is None:
            conv.dropped += 1
            conv.notes.append(f"{where}: dropped: {filt.kind} can never match")
            continue
        exe, args = native
        conv.converted += 1
        out.append("")
        out.append(f"# from {filt.source.path}:{filt.source.line}: {_filters_line(filt)}")
        out.append("[[command]]")
        out.append(f"name = {_toml_str(_name(filt.source.name, used))}")
        if context:
            out.append(f"context = {_toml_str(context)}")
        out.append(f"exec = {_toml_str(exe)}")
        out.append(f"args = {_toml_value(args)}")
        out.append(f"run_as = {_toml_str(filt.run_as)}")
    conv.toml = "\n".join(out).lstrip("\n") + "\n"
    if conv.residual:
        lines = [
            "# Rules privsepd filters convert kept in rootwrap syntax (no lossless native",
            "# form). Load this file AFTER the converted TOML (e.g. 20-x.toml, 30-x.filters).",
            "[Filters]",
        ]
        lines += [_filters_line(f) for f in conv.residual]
        conv.residual_text = "\n".join(lines) + "\n"
    return conv


# -- CLI --------------------------------------------------------------------------------


def _load(
    paths: Sequence[str], missing: list[str] | None = None
) -> tuple[list[Filter], tuple[str, ...] | None]:
    """Rules of every input, in order; filters_path directories that do not
    exist are appended to ``missing`` (the conversion would be incomplete)."""
    from privsepd.policy.rootwrap import parse_config, parse_filters

    filters: list[Filter] = []
    exec_dirs: tuple[str, ...] | None = None

    def add_file(path: str) -> None:
        with open(path, encoding="utf-8") as f:
            filters.extend(parse_filters(f.read(), path))

    def add_dir(directory: str) -> None:
        for name in sorted(os.listdir(directory)):
            full = os.path.join(directory, name)
            if not name.startswith(".") and os.path.isfile(full):
                add_file(full)

    for path in paths:
        if os.path.isdir(path):
            add_dir(path)
        elif path.endswith(".conf"):
            with open(path, encoding="utf-8") as f:
                config = parse_config(f.read(), path)
            exec_dirs = config.exec_dirs
            for directory in config.filters_path:
                if os.path.isdir(directory):
                    add_dir(directory)
                elif missing is not None:
                    missing.append(f"{path}: filters_path directory {directory} does not exist")
        else:
            add_file(path)
    return filters, exec_dirs


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _convert(args: argparse.Namespace) -> int:
    from privsepd.authoring.check_base import DEFAULT_EXEC_DIRS
    from privsepd.policy.native import parse_policy
    from privsepd.policy.rootwrap import parse_filters

    missing: list[str] = []
    try:
        filters, conf_dirs = _load(args.inputs, missing)
    except (OSError, PolicyError) as exc:
        print(f"privsepd filters convert: {exc}", file=sys.stderr)
        return 2
    for problem in missing:
        print(f"privsepd filters convert: warning: {problem}", file=sys.stderr)
    if not filters:
        print(
            "privsepd filters convert: no rules found in the input: nothing to convert",
            file=sys.stderr,
        )
        return 1
    exec_dirs = args.exec_dirs or conf_dirs or DEFAULT_EXEC_DIRS
    conv = convert_filters(filters, exec_dirs, args.context)
    parse_policy(conv.toml, args.output or "<output>")  # self-check: must load
    if conv.residual_text:
        parse_filters(conv.residual_text, args.residual or "<residual>")
    if args.output:
        _write(args.output, conv.toml)
    else:
        sys.stdout.write(conv.toml)
    if conv.residual and args.residual:
        _write(args.residual, conv.residual_text)
    for note in conv.notes:
        print(f"privsepd filters convert: {note}", file=sys.stderr)
    print(
        f"privsepd filters convert: {conv.converted} converted, {len(conv.residual)} kept as "
        f"rootwrap, {conv.dropped} dropped",
        file=sys.stderr,
    )
    if conv.residual and not args.residual:
        print(
            "privsepd filters convert: some rules have no lossless native form; "
            "write them with --residual FILE.filters",
            file=sys.stderr,
        )
        return 1
    if missing:
        print(
            "privsepd filters convert: the output lacks the rules of the missing "
            "directories; convert on the machine that has them, or name the directories",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser(
        "convert",
        help="rootwrap .filters to native TOML without changing any decision",
        description="Convert rootwrap rules to native [[command]] rules; rules without a "
        "lossless native form go to --residual (exit 1 if that is not given).",
    )
    conv.add_argument("inputs", nargs="+", help="rootwrap.conf, .filters files or directories")
    conv.add_argument("-o", "--output", help="TOML output file (default: stdout)")
    conv.add_argument("--residual", help=".filters file for rules kept in rootwrap syntax")
    conv.add_argument("--context", default=None, help="put every command in this context")
    conv.add_argument(
        "--exec-dirs",
        type=lambda v: tuple(d for d in v.replace(",", ":").split(":") if d),
        default=None,
        help="resolve relative executables here (default: the conf's exec_dirs)",
    )
    conv.set_defaults(func=_convert)
