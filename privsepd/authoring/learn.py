"""``privsepd filters learn``: record what a service runs, propose the tightest rules.

Safety by construction: recording never grants anything.

* ``learn record --log FILE -- CMD ARGS...`` is a stand-in for the service's
  root helper (``root_helper = privsepd filters learn record --log F --``
  instead of ``sudo privsepd-rootwrap CONF``). It appends one JSON line
  ``{"argv": [...], "uid": ..., "ts": ...}`` and then runs the command with
  the *caller's own* privileges (or not at all with ``--no-run``). Nothing is
  denied and nothing is elevated: commands that need root simply fail, so a
  compromised service learns nothing it could not already do. It refuses to
  run as root under sudo/pkexec/doas, so a sudoers line for it cannot turn it
  into an unfiltered root shell.
* Alternatively, privsepd's own audit log (JSON lines with an ``argv``
  field; allowed *and* denied records) from a run under the current policy.
* ``learn propose LOG...`` reads those records and writes a policy (native
  TOML, or rootwrap ``.filters``) that allows exactly the recorded commands,
  generalised only where values vary, and only to typed shapes: decimal
  numbers, UUIDs, IP addresses, CIDRs, MACs, paths under a common,
  specific directory (never ``..``), small sets of literals, or a literal
  prefix/suffix around a character class without ``/``. A value that fits
  none of those stays an alternation of the literal values seen. The proposal
  is checked against every record before it is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Proposal", "Record", "add_parser", "load_records", "propose", "record_command"]

# -- recording ------------------------------------------------------------------------


def _elevated_by_helper() -> str | None:
    """Name of the tool that made us root for someone else, if any."""
    if os.geteuid() != 0:
        return None
    for var, tool in (("SUDO_UID", "sudo"), ("PKEXEC_UID", "pkexec"), ("DOAS_USER", "doas")):
        if var in os.environ:
            return tool
    return None


def record_command(log: str, argv: Sequence[str], run: bool = True) -> int:
    """Append argv to the log, then run it as the caller; return its exit code."""
    if not argv:
        raise ValueError("no command to record")
    tool = _elevated_by_helper()
    if tool is not None:
        raise PermissionError(
            f"refusing to record as root under {tool}: learn record runs commands "
            "unfiltered and must run as the service's own user"
        )
    line = json.dumps(
        {"argv": list(argv), "uid": os.getuid(), "ts": round(time.time(), 6)},
        separators=(",", ":"),
    )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(log, flags, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")  # one write: concurrent recorders interleave lines
    finally:
        os.close(fd)
    if not run:
        return 0
    try:
        return subprocess.run(list(argv), check=False).returncode % 256
    except FileNotFoundError:
        return 127
    except PermissionError:
        return 126


# -- reading records --------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One recorded command and where it was read."""

    argv: tuple[str, ...]
    where: str
    denied: bool = False


# Records that repeat an earlier decision's argv (the outcome of a command
# that was already recorded as allowed) add nothing to learn from.
_DECISIONS = (None, "allow", "deny")


def _parse_record(line: str) -> object:
    """A JSON record, alone on its line or after a syslog/journal prefix.

    ``<86>privsepd[12]: {...}`` (what the helper sends to /dev/log) and
    ``Dec  2 01:00:00 host privsepd[12]: {...}`` (what syslog files hold)
    both carry the record after the first ``{``.
    """
    try:
        return json.loads(line)
    except ValueError:
        brace = line.find("{")
        if brace <= 0:
            raise
        return json.loads(line[brace:])


def _old_argv(text: str) -> list | None:
    """argv stored as a Python repr by earlier releases: "['ip', 'link']"."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _record_argv(obj: dict) -> tuple[object, str | None]:
    """(argv, why it cannot be used) from any audit format privsepd writes or wrote."""
    if obj.get("truncated") is True:
        return None, "fields were truncated when the record was written"
    argv = obj.get("argv", obj.get("command"))
    if argv is None and obj.get("op") == "exec":
        argv = obj.get("args")  # the helper's exec record (no argv: not all str)
    if isinstance(argv, str):
        parsed = _old_argv(argv)
        if parsed is None:
            why = "truncated" if argv.endswith("...") else "not a list"
            return None, f"'argv' is an old-format repr that is {why}: {argv[:80]!r}"
        argv = parsed
    return argv, None


def load_records(paths: Iterable[str], errors: list[str] | None = None) -> list[Record]:
    """Records from JSON-lines files: learn record logs, or privsepd audit logs.

    Reads every format privsepd writes: learn's own ``{"argv": [...]}``,
    command records of the helper and of privsepd-rootwrap (argv as a JSON
    list; a Python repr string in earlier releases), the helper's ``exec``
    records, and any of these behind a syslog prefix. Outcome records
    (``done``, ``error``) repeat an argv already recorded and are skipped.
    """
    errors = [] if errors is None else errors
    out: list[Record] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = _parse_record(line)
                except ValueError as exc:
                    errors.append(f"{where}: not JSON ({exc})")
                    continue
                if not isinstance(obj, dict):
                    errors.append(f"{where}: not a JSON object")
                    continue
                if obj.get("decision") not in _DECISIONS:
                    continue
                argv, why = _record_argv(obj)
                if why is not None:
                    errors.append(f"{where}: {why}")
                    continue
                if argv is None:
                    continue  # audit records of function calls, connects, ...
                if (
                    not isinstance(argv, list)
                    or not argv
                    or not all(isinstance(a, str) and "\0" not in a for a in argv)
                ):
                    errors.append(f"{where}: 'argv' is not a non-empty list of strings")
                    continue
                out.append(Record(tuple(argv), where, obj.get("decision") == "deny"))
    return out


# -- generalisation ---------------------------------------------------------------------

_KEYWORD = re.compile(r"-{0,2}[A-Za-z][A-Za-z_-]*")
_INT = re.compile(r"0|[1-9][0-9]*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_SAFE_COMPONENT = r"[A-Za-z0-9_:@+-][A-Za-z0-9_.:@+-]*"
_BROAD_DIRS = {
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/var",
    "/var/lib",
    "/var/log",
}
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
_MAX_CHOICES = 8


@dataclass(frozen=True)
class Shape:
    """How one argument position is allowed: a literal or a typed pattern.

    ``regex`` is the rootwrap/regex form (never contains ','); ``toml`` the
    native constraint table (a dict) or the literal string.
    """

    literal: str | None = None
    regex: str | None = None
    toml: dict | None = None
    why: str = ""


def _ip(value: str, version: int) -> bool:
    import ipaddress

    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    return addr.version == version and "%" not in value


def _cidr(value: str) -> tuple[int, bool] | None:
    """(version, has host bits) for an address/prefixlen, else None."""
    import ipaddress

    addr, slash, plen = value.partition("/")
    if not slash or not _INT.fullmatch(plen):
        return None
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return None
    return iface.version, iface.ip != iface.network.network_address


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = _OCTET + r"(?:\." + _OCTET + "){3}"
_IPV6_RE = r"[0-9a-fA-F:]*:[0-9a-fA-F:.]*"


def _common_dir(values: Sequence[str]) -> str:
    parts = [os.path.normpath(v).split("/")[1:-1] for v in values]
    common: list[str] = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return "/" + "/".join(common)


def _alternation(values: Sequence[str]) -> Shape | None:
    if len(values) > _MAX_CHOICES:
        return None
    regex = "(?:" + "|".join(_escape(v) for v in sorted(values)) + ")"
    return Shape(regex=regex, toml={"choice": sorted(values)}, why="one of the values seen")


def _char_class(middles: Sequence[str]) -> str | None:
    chars = set("".join(middles))
    if not chars or "/" in chars or any(not c.isprintable() or c.isspace() for c in chars):
        return None
    parts = []
    if any(c.islower() for c in chars):
        parts.append("a-z")
    if any(c.isupper() for c in chars):
        parts.append("A-Z")
    if any(c.isdigit() for c in chars):
        parts.append("0-9")
    for c in sorted(chars):
        if not c.isalnum():
            if c == ",":
                return None  # cannot appear in a .filters column
            parts.append(re.escape(c) if c in "\\]^-[" else c)
        elif not c.isascii():
            return None
    return "[" + "".join(parts) + "]+"


def generalise(values: Sequence[str]) -> Shape:
    """The tightest typed shape covering every value seen at one position."""
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return Shape(literal=distinct[0])
    if all(_INT.fullmatch(v) for v in distinct):
        return Shape(regex="[0-9]+", toml={"regex": "[0-9]+"}, why="decimal numbers")
    if all(_UUID.fullmatch(v) for v in distinct):
        return Shape(regex=_UUID.pattern, toml={"regex": _UUID.pattern}, why="UUIDs")
    for version, pattern in ((4, _IPV4_RE), (6, _IPV6_RE)):
        if all(_ip(v, version) for v in distinct):
            return Shape(regex=pattern, toml={"ip": version}, why=f"IPv{version} addresses")
    cidrs = [_cidr(v) for v in distinct]
    if all(cidrs) and len({c[0] for c in cidrs if c}) == 1:
        version = cidrs[0][0]  # type: ignore[index]
        host_bits = any(c[1] for c in cidrs if c)
        base = _IPV4_RE if version == 4 else _IPV6_RE
        toml: dict = {"cidr": version}
        if host_bits:
            toml["strict"] = False
        return Shape(regex=base + "/[0-9]+", toml=toml, why=f"IPv{version} networks")
    if all(_MAC.fullmatch(v) for v in distinct):
        return Shape(regex=_MAC.pattern, toml={"mac": True}, why="MAC addresses")
    if all(v.startswith("/") for v in distinct):
        return _paths(distinct)
    choice = _alternation(distinct)
    if choice is not None:
        return choice
    prefix = os.path.commonprefix(distinct)
    suffix = os.path.commonprefix([v[len(prefix) :][::-1] for v in distinct])[::-1]
    middles = [v[len(prefix) : len(v) - len(suffix)] for v in distinct]
    cls = _char_class(middles)
    if cls is not None:
        guard = r"(?!.*\.\.)" if "." in cls else ""
        regex = guard + _escape(prefix) + cls + _escape(suffix)
        if "," not in regex:
            return Shape(regex=regex, toml={"regex": regex}, why="seen values' characters")
    return _exact(distinct)


def _exact(distinct: Sequence[str]) -> Shape:
    regex = "(?:" + "|".join(_escape(v) for v in distinct) + ")"
    return Shape(regex=regex, toml={"choice": list(distinct)}, why="only the values seen")


def _paths(distinct: Sequence[str]) -> Shape:
    if any(".." in v.split("/") for v in distinct):
        return _exact(distinct)
    common = _common_dir(distinct)
    under_ww = any(common == d or common.startswith(d + "/") for d in _WORLD_WRITABLE)
    if common in _BROAD_DIRS or under_ww:
        choice = _alternation(distinct) or _exact(distinct)
        return Shape(regex=choice.regex, toml=choice.toml, why=f"paths too spread ({common})")
    regex = _escape(common) + f"(?:/{_SAFE_COMPONENT})+"
    return Shape(
        regex=regex,
        toml={"path_under": common},
        why=f"paths under {common}",
    )


# -- proposals ------------------------------------------------------------------------------


@dataclass
class Rule:
    name: str
    argv0: str
    shapes: list[Shape]
    records: list[Record] = field(default_factory=list)


@dataclass
class Proposal:
    """Proposed rules, and records no rule could express (with why)."""

    rules: list[Rule]
    skipped: list[str] = field(default_factory=list)


def _group_key(argv: Sequence[str], exact: bool) -> tuple:
    if exact:
        return tuple(argv)
    shape = tuple(a if _KEYWORD.fullmatch(a) else None for a in argv[1:])
    return (argv[0], len(argv), shape)


def _rule_name(base: str, n: int) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.:-]", "_", base).lstrip("_.:-") or "cmd"
    return f"{clean[:100]}-{n}"


def propose(records: Sequence[Record], exact: bool = False) -> Proposal:
    """Group records by program, arity and keywords; generalise each position."""
    groups: dict[tuple, list[Record]] = {}
    for rec in records:
        groups.setdefault(_group_key(rec.argv, exact), []).append(rec)
    counters: dict[str, int] = {}
    used: set[str] = set()
    rules = []
    for recs in groups.values():
        argv0 = recs[0].argv[0]
        base = os.path.basename(argv0)
        name = ""
        while not name or name in used:
            counters[base] = counters.get(base, 0) + 1
            name = _rule_name(base, counters[base])
        used.add(name)
        width = len(recs[0].argv)
        shapes = [generalise([r.argv[i] for r in recs]) for i in range(1, width)]
        rules.append(Rule(name, argv0, shapes, recs))
    return Proposal(rules)


def _resolve(argv0: str, exec_dirs: Sequence[str]) -> str | None:
    if os.path.isabs(argv0):
        return os.path.normpath(argv0)
    for d in exec_dirs:
        candidate = os.path.join(d, argv0)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _toml_str(s: str) -> str:
    """A TOML string: literal '...' when possible, else an escaped basic string."""
    if "'" not in s and all(c.isprintable() for c in s):
        return f"'{s}'"
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def _escape(s: str) -> str:
    """re.escape without the needless escaping of '-' (readable columns)."""
    return re.escape(s).replace("\\-", "-")


def _example(rule: Rule) -> str:
    argv = rule.records[0].argv
    text = " ".join(argv)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 120 else text[:117] + "..."


def render_toml(
    proposal: Proposal,
    run_as: str,
    exec_dirs: Sequence[str],
    context: str | None = None,
    header: str = "",
) -> str:
    """The proposal as native [[command]] rules."""
    out = [header] if header else []
    for rule in proposal.rules:
        out.append("")
        out.append(f"# seen {len(rule.records)} time(s), e.g.: {_example(rule)}")
        if (
            "/" in rule.argv0
            and os.path.normpath(rule.argv0) != rule.argv0
            or ("/" in rule.argv0 and not rule.argv0.startswith("/"))
            or rule.argv0 in (".", "..")
        ):
            out.append(
                f"# SKIPPED {rule.name}: argv[0] {rule.argv0!r} is a relative or unnormalised "
                "path; native rules match the program's name or its absolute path"
            )
            proposal.skipped.append(rule.name)
            continue
        exe = _resolve(rule.argv0, exec_dirs)
        denied = sum(r.denied for r in rule.records)
        if denied:
            out.append(f"# REVIEW: {denied} of these were denied by the policy in force")
        for i, shape in enumerate(rule.shapes, 1):
            if shape.why:
                out.append(f"#   argument {i}: {shape.why}")
        if exe is None:
            exe = "/usr/bin/" + os.path.basename(rule.argv0)
            out.append(f"# FIXME: {rule.argv0!r} not found in exec_dirs; check exec below")
        out.append("[[command]]")
        out.append(f"name = {_toml_str(rule.name)}")
        if context:
            out.append(f"context = {_toml_str(context)}")
        out.append(f"exec = {_toml_str(exe)}")
        args = [s.literal if s.literal is not None else s.toml for s in rule.shapes]
        out.append(f"args = {_toml_value(args)}")
        out.append(f"run_as = {_toml_str(run_as)}")
    return "\n".join(out) + "\n"


def render_filters(proposal: Proposal, run_as: str, header: str = "") -> str:
    """The proposal as rootwrap RegExpFilter rules (commas cannot be expressed)."""
    out = [header] if header else []
    out.append("[Filters]")
    for rule in proposal.rules:
        cols = [_escape(rule.argv0)]
        for shape in rule.shapes:
            cols.append(_escape(shape.literal) if shape.literal is not None else shape.regex)
        out.append(f"# seen {len(rule.records)} time(s), e.g.: {_example(rule)}")
        bad = [
            c
            for c in [rule.argv0, *cols]
            if "," in c or c != c.strip() or not c or not c.isprintable()
        ]
        if any(ch in rule.name for ch in ":=[];#") or not rule.name.isprintable():
            # The rule name is the INI key: a delimiter in it would split the line.
            bad.insert(0, rule.name)
        if bad:
            out.append(
                f"# SKIPPED {rule.name}: {bad[0]!r} cannot be written in a .filters column "
                "(comma, surrounding space, empty, or an INI delimiter in the name); "
                "use --format toml"
            )
            proposal.skipped.append(rule.name)
            continue
        out.append(f"{rule.name}: RegExpFilter, {rule.argv0}, {run_as}, {', '.join(cols)}")
    return "\n".join(out) + "\n"


def _rules(text: str, fmt: str) -> list:
    if fmt == "toml":
        from privsepd.policy.native import parse_policy

        return list(parse_policy(text, "<proposal>").commands.values())
    from privsepd.policy.rootwrap import parse_filters

    return parse_filters(text, "<proposal>")


def verify(text: str, fmt: str, records: Sequence[Record]) -> list[Record]:
    """Records the rendered proposal does not accept (should be none)."""
    rules = _rules(text, fmt)
    return [r for r in records if not any(rule.check(r.argv) is None for rule in rules)]


def review(text: str, fmt: str) -> list:
    """Lint findings on the proposal: what the service did may itself be a hole."""
    from privsepd.authoring.check import Checker

    checker = Checker(None, ownership=False)
    checker.filters = _rules(text, fmt)
    report = checker.finish()
    return [f for f in report.findings if f.code != "missing-executable"]


# -- CLI ------------------------------------------------------------------------------------


def _record(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("privsepd filters learn record: no command given", file=sys.stderr)
        return 2
    try:
        return record_command(args.log, argv, run=not args.no_run)
    except (PermissionError, OSError) as exc:
        print(f"privsepd filters learn record: {exc}", file=sys.stderr)
        return 2


def _propose(args: argparse.Namespace) -> int:
    from privsepd.authoring.check_base import DEFAULT_EXEC_DIRS

    errors: list[str] = []
    try:
        records = load_records(args.logs, errors)
    except OSError as exc:
        print(f"privsepd filters learn propose: {exc}", file=sys.stderr)
        return 2
    for err in errors:
        print(f"privsepd filters learn propose: skipped {err}", file=sys.stderr)
    if not records:
        print("privsepd filters learn propose: no command records found", file=sys.stderr)
        return 2
    proposal = propose(records, exact=args.exact)
    header = (
        f"# Proposed by 'privsepd filters learn' from {len(records)} record(s) in "
        f"{', '.join(args.logs)}.\n# Review every rule before installing it: it allows "
        "what the service did, which is not always what it should do."
    )
    exec_dirs = args.exec_dirs or DEFAULT_EXEC_DIRS
    if args.format == "toml":
        text = render_toml(proposal, args.run_as, exec_dirs, args.context, header)
    else:
        text = render_filters(proposal, args.run_as, header)
    missing = verify(text, args.format, records)
    skipped = set(proposal.skipped)
    missing = [
        r
        for r in missing
        if not any(r in rule.records for rule in proposal.rules if rule.name in skipped)
    ]
    sys.stdout.write(text)
    for finding in review(text, args.format):
        print(
            f"review: {finding.severity}: [{finding.code}] {finding.rule}: {finding.problem}",
            file=sys.stderr,
        )
    if missing:
        for rec in missing[:10]:
            print(f"privsepd filters learn propose: BUG: {rec.where} not covered", file=sys.stderr)
        return 1
    return 1 if skipped else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    learn = sub.add_parser(
        "learn",
        help="record commands as the service's own user, then propose the tightest rules",
        description="Recording never elevates: see 'learn record --help'.",
    )
    lsub = learn.add_subparsers(dest="learn_tool", required=True)
    rec = lsub.add_parser(
        "record",
        help="log a command, then run it with the caller's own privileges",
        description="Use as the service's root helper during a learning run: "
        "root_helper = privsepd filters learn record --log FILE --",
    )
    rec.add_argument("--log", required=True, help="JSON-lines file to append to (mode 0600)")
    rec.add_argument("--no-run", action="store_true", help="only log; exit 0 without running")
    rec.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    rec.set_defaults(func=_record)

    prop = lsub.add_parser(
        "propose",
        help="print the tightest policy allowing every recorded command",
        description="Read learn-record logs or privsepd audit logs (records with 'argv').",
    )
    prop.add_argument("logs", nargs="+", help="JSON-lines files")
    prop.add_argument("--format", choices=("toml", "filters"), default="toml")
    prop.add_argument("--run-as", default="root", help="run_as of every rule (default root)")
    prop.add_argument("--context", default=None, help="toml: context of every command")
    prop.add_argument(
        "--exact", action="store_true", help="one rule per distinct command, no generalisation"
    )
    prop.add_argument(
        "--exec-dirs",
        type=lambda v: tuple(d for d in v.replace(",", ":").split(":") if d),
        default=None,
        help="where to resolve program names for toml exec paths",
    )
    prop.set_defaults(func=_propose)
