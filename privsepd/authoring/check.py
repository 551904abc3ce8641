"""``privsepd filters check``: lint rootwrap and native policy for privilege holes.

A rule is judged by what a compromised service could do with it, not by its
syntax: every :class:`Finding` names the place (file:line, rule name), the
lint rule (a stable ``code``), a severity, what is wrong, what an attacker
can do with it and how to tighten it.

Regex arguments are judged by probing them with attacker-shaped strings
(``/etc/shadow``, the pattern's own literal prefix followed by ``../``, a
path under ``/tmp``, shell metacharacters) under privsepd's matching rule
(oslo's ``re.match(p + '$')`` *and* ``re.fullmatch``), so a finding always
comes with a concrete argument the rule admits.

Files are read without the runtime trust check (an operator lints a checkout
too); ownership is reported as the ``unsafe-ownership`` finding instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from privsepd.errors import PolicyError
from privsepd.policy.filters import (
    EnvFilter,
    Filter,
    dangerous_env_name,
)
from privsepd.policy.rootwrap import PolicyWarning, lint_filter, parse_config, parse_filters

__all__ = [
    "DEFAULT_EXEC_DIRS",
    "Finding",
    "LINT_RULES",
    "Report",
    "SEVERITIES",
    "check_paths",
]

SEVERITIES = ("info", "warning", "error")
DEFAULT_EXEC_DIRS = (
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
)
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")

# code -> one line: what the lint rule looks for (listed by --list-rules and docs).
LINT_RULES: dict[str, str] = {
    "unrestricted-program": "any arguments to a program that can write files, run programs, "
    "read any file, change permissions, mount, load kernel code or signal any process",
    "shell-command": "a shell or interpreter allowed to run a script given on the command line",
    "wildcard-path": "an argument pattern or PathFilter base that admits any path (/etc/shadow)",
    "path-traversal": "an argument pattern that admits '..' after its directory prefix",
    "world-writable-path": "a path argument, base, file or executable under /tmp, /var/tmp, "
    "/dev/shm (symlink planting)",
    "command-filter-args": "arguments written on a CommandFilter, which ignores them",
    "chaining": "a rule that runs another allowed command (ip netns exec, nice, ...)",
    "env-unchecked": "EnvFilter variables whose values are never checked",
    "dangerous-env": "an EnvFilter variable that injects code (LD_PRELOAD, PYTHONPATH, ...)",
    "duplicate-name": "a rule name defined twice (the earlier rule silently disappears)",
    "shadowed": "a rule that can never win because an earlier rule accepts all it accepts",
    "never-matches": "a rule that can never match (bare ChainingFilter, bad regex, ...)",
    "missing-executable": "an executable that does not exist in exec_dirs",
    "untrusted-executable": "an executable or exec_dir that a non-root user can replace",
    "unsafe-ownership": "a policy file or directory not owned by root or writable by others",
    "loose-regex": "a pattern oslo.rootwrap reads more loosely than privsepd (top-level '|')",
    "path-prefix": "a PathFilter base without a trailing '/' (oslo: /data admits /data2)",
    "kill-signal": "a KillFilter signal that is not an option (kill 9 PID kills pid 9 too)",
    "kill-shared-executable": "a KillFilter on an interpreter many services run",
    "sensitive-read": "a ReadFileFilter on a secret (shadow, keys, sudoers)",
    "ip-filter": "IpFilter: any ip command but netns exec / -batch",
    "capability": "a native command or context holding a capability close to full root",
    "load-warning": "what the loader reports: odd suffix, untrimmed entry, comma-split "
    "regex, unknown class, [DEFAULT] rules, ignored section, ...",
    "parse-error": "a file that cannot be read or parsed (the runtime refuses it)",
}


@dataclass(frozen=True)
class Finding:
    """One lint result: where, which rule, how bad, and what to do about it."""

    path: str
    line: int | None
    rule: str  # the policy rule's name ('' for file-level findings)
    code: str  # the lint rule (a key of LINT_RULES)
    severity: str  # info | warning | error
    problem: str
    attack: str = ""
    fix: str = ""

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def to_json(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        name = f" rule {self.rule!r}:" if self.rule else ""
        out = [f"{self.where()}: {self.severity}: [{self.code}]{name} {self.problem}"]
        if self.attack:
            out.append(f"    attack: {self.attack}")
        if self.fix:
            out.append(f"    fix: {self.fix}")
        return "\n".join(out)


@dataclass
class Report:
    """All findings of one ``check`` run, plus whether some input was unusable."""

    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    unusable: bool = False

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            counts[f.severity] += 1
        return counts

    @property
    def exit_code(self) -> int:
        """0 clean, 1 error findings, 2 unusable input."""
        if self.unusable:
            return 2
        return 1 if any(f.severity == "error" for f in self.findings) else 0


# -- what programs can do -------------------------------------------------------

# category -> (severity, attack template, fix)
_CATEGORIES: dict[str, tuple[str, str, str]] = {
    "exec": (
        "error",
        "run any program as {user}, e.g. `{example}`",
        "allow only the exact invocations the service needs (RegExpFilter with anchored "
        "arguments, or a native [[command]] with typed args); never a program that runs "
        "other programs with free arguments",
    ),
    "config-exec": (
        "error",
        "start it with an attacker-chosen config or hook that runs a program as {user}, "
        "e.g. `{example}`",
        "pin the options: RegExpFilter/native args that fix the config file path under a "
        "root-owned directory and refuse script/hook options",
    ),
    "write": (
        "error",
        "overwrite or destroy any file or device as {user}, e.g. `{example}`",
        "constrain every path argument to the service's own directory (PathFilter or native "
        "path_under) and fix the options with RegExpFilter/native args",
    ),
    "read": (
        "error",
        "read any file as {user}, e.g. `{example}`",
        "use ReadFileFilter for the exact file, or constrain the path argument",
    ),
    "perm": (
        "error",
        "take ownership of or open up any file as {user} (then edit it), e.g. `{example}`",
        "PathFilter/native path_under on the path argument and a literal owner/mode",
    ),
    "mount": (
        "error",
        "mount over system directories or a filesystem with setuid binaries, e.g. `{example}`",
        "fix device and mount point with RegExpFilter/native args (path_under, no options)",
    ),
    "kernel": (
        "error",
        "change kernel state as {user}, e.g. `{example}`",
        "allow only the exact parameter/module (RegExpFilter or native regex on the argument)",
    ),
    "kill": (
        "error",
        "signal any process, including init and other services, e.g. `{example}`",
        "use KillFilter with the target's executable and the needed signals",
    ),
    "network": (
        "warning",
        "rewrite host networking or firewall rules, e.g. `{example}`",
        "restrict subcommands and arguments with RegExpFilter or native args (ifname, cidr)",
    ),
    "create": (
        "warning",
        "create files or directories anywhere as {user}, e.g. `{example}`",
        "constrain the path argument with PathFilter or native path_under",
    ),
}

# Programs for which a free path argument is itself the hole.
_PATH_CATEGORIES = {"write", "read", "perm", "mount", "config-exec"}

_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "ash", "busybox"}
_INTERPRETERS = {
    "python",
    "perl",
    "ruby",
    "php",
    "node",
    "nodejs",
    "lua",
    "tclsh",
    "awk",
    "gawk",
    "mawk",
    "nawk",
}
_SCRIPT_FLAGS = ("-c", "-e", "-E", "-r", "--eval", "--command")

_PROGRAMS: dict[str, tuple[str, str]] = {}


def _add(category: str, example: str, *names: str) -> None:
    for name in names:
        _PROGRAMS[name] = (category, example.replace("{p}", name))


_add("exec", "{p} -c 'cp /bin/sh /tmp/s; chmod 4755 /tmp/s'", *_SHELLS)
_add("exec", "{p} -c 'import os; os.system(\"sh\")'", "python")
_add("exec", "{p} -e 'exec \"sh\"'", "perl", "ruby", "php", "lua", "tclsh")
_add("exec", '{p} -e \'require("child_process").execSync("sh")\'', "node", "nodejs")
_add("exec", "{p} 'BEGIN {system(\"sh\")}'", "awk", "gawk", "mawk", "nawk")
_add(
    "exec",
    "{p} /bin/sh",
    "env",
    "nice",
    "ionice",
    "timeout",
    "nohup",
    "chroot",
    "nsenter",
    "unshare",
    "setsid",
    "stdbuf",
    "taskset",
    "chrt",
    "xargs",
    "sudo",
    "su",
    "runuser",
    "flock",
    "watch",
    "strace",
    "ltrace",
    "gdb",
    "script",
    "systemd-run",
    "prlimit",
    "numactl",
)
_add("exec", "find / -maxdepth 0 -exec sh \\;", "find")
_add("exec", "ip netns exec any-ns sh", "ip")
_add("exec", "{p} run --privileged -v /:/host IMAGE sh", "docker", "podman", "nerdctl")
_add("exec", "{p} exec CONTAINER sh", "ctr", "crictl", "runc", "kubectl")
_add("exec", "systemctl start/enable any unit, or edit one with systemctl edit", "systemctl")
_add("exec", "tar cf /dev/null /etc --checkpoint=1 --checkpoint-action=exec=sh", "tar")
_add("exec", "rsync -e 'sh -c \"sh 0<&2 1>&2\"' x:/ /", "rsync")
_add("exec", "tcpdump -i lo -w /dev/null -z /tmp/payload -G 1", "tcpdump")
_add("exec", "{p} then :!sh", "vi", "vim", "less", "more", "man", "nano")
_add("exec", "ssh -o ProxyCommand='sh -c id' x", "ssh", "scp")
_add("exec", "git -c core.pager='sh -c id' log", "git")
_add("exec", "setcap cap_setuid+ep /tmp/python", "setcap")
_add("exec", "crontab /tmp/evil-crontab", "crontab", "at")
_add("exec", "dhclient -sf /tmp/payload eth0", "dhclient")
_add("exec", "make -f /tmp/Makefile", "make")
_add("exec", "{p} install /tmp/evil.pkg", "dpkg", "rpm", "apt-get", "yum", "dnf", "pip")
_add("config-exec", "dnsmasq --dhcp-script=/tmp/payload", "dnsmasq")
_add("config-exec", "keepalived -f /tmp/conf (notify /tmp/payload)", "keepalived")
_add("config-exec", "haproxy -f /tmp/conf (external-check command /tmp/payload)", "haproxy")
_add("config-exec", "radvd -C /tmp/conf -p /etc/ld.so.preload", "radvd")
_add("config-exec", "conntrackd -C /tmp/conf", "conntrackd")
_add(
    "config-exec",
    "privsep-helper --config-file /tmp/x.conf (the config picks the helper's user and "
    "capabilities)",
    "privsep-helper",
)
_add("config-exec", "ovs-vsctl set-manager ptcp:6640 (open a root control socket)", "ovs-vsctl")
_add("write", "tee /etc/sudoers.d/x", "tee")
_add("write", "dd if=/tmp/x of=/etc/shadow", "dd")
_add("write", "{p} /tmp/x /etc/shadow", "cp", "mv", "install", "ln")
_add("write", "sed -i 's/^root:[^:]*:/root::/' /etc/shadow (and sed 'e' runs commands)", "sed")
_add("write", "{p} /etc/shadow", "truncate", "rm", "shred", "unlink")
_add(
    "write",
    "{p} /dev/sda",
    "mkfs",
    "mke2fs",
    "mkswap",
    "wipefs",
    "parted",
    "sgdisk",
    "sfdisk",
    "fdisk",
    "tune2fs",
)
_add("write", "qemu-img convert -O raw /tmp/x /etc/shadow", "qemu-img")
_add("write", "qemu-nbd -c /dev/nbd0 /etc/shadow", "qemu-nbd")
_add("write", "dmsetup create x --table '0 8 linear /dev/sda 0'", "dmsetup")
_add("write", "losetup /dev/loop0 /etc/shadow", "losetup", "kpartx")
_add("write", "mknod /tmp/sda b 8 0 (raw disk access)", "mknod")
_add("write", "cryptsetup erase /dev/sda", "cryptsetup")
_add("perm", "chown nova /etc/shadow", "chown", "chgrp")
_add("perm", "chmod 0666 /etc/shadow", "chmod")
_add("perm", "setfacl -m u:nova:rw /etc/shadow", "setfacl")
_add("perm", "chattr -i /etc/passwd", "chattr")
_add("mount", "mount --bind /tmp/x /etc", "mount")
_add("mount", "umount /proc", "umount")
_add("read", "{p} /etc/shadow", "cat", "head", "tail", "od", "xxd", "base64", "strings", "nl")
_add("read", "grep '' /etc/shadow", "grep", "egrep", "zcat")
_add("kernel", "sysctl -w kernel.core_pattern='|/tmp/payload' (runs as root on a crash)", "sysctl")
_add("kernel", "{p} /tmp/rootkit.ko", "insmod", "modprobe", "kexec")
_add("kill", "{p} -9 1", "kill", "pkill", "killall")
_add(
    "network",
    "{p} -F (flush the host firewall)",
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
    "ebtables",
    "arptables",
    "nft",
    "ipset",
)
_add("network", "{p} del the host's uplink", "tc", "brctl", "bridge", "ovs-ofctl", "conntrack")
_add("create", "{p} /etc/cron.d/x", "touch", "mkdir")

_VERSIONED = re.compile(r"(python|perl|ruby|php|lua|tclsh|node)[0-9.]*\Z")
_SUFFIXED = re.compile(r"(mkfs|mke2fs|fsck|iptables|ip6tables)[.-][\w.-]+\Z")


def program_info(exec_path: str) -> tuple[str, str] | None:
    """(category, example) for a dangerous program, else None."""
    base = os.path.basename(exec_path)
    if base in _PROGRAMS:
        return _PROGRAMS[base]
    for regex in (_VERSIONED, _SUFFIXED):
        m = regex.match(base)
        if m and m.group(1) in _PROGRAMS:
            category, example = _PROGRAMS[m.group(1)]
            return category, example.replace(m.group(1), base, 1)
    return None


def _is_root(user: str) -> bool:
    return user in ("root", "0")


def _downgrade(severity: str, user: str) -> str:
    """A rule running as an unprivileged user is one notch less severe."""
    if _is_root(user):
        return severity
    return SEVERITIES[max(SEVERITIES.index(severity) - 1, 0)]


# -- regex probing -----------------------------------------------------------------


def admits(pattern: str, value: str) -> bool:
    """True if privsepd's rootwrap matching accepts value (oslo's AND full match)."""
    try:
        return (
            re.match(pattern + "$", value) is not None and re.fullmatch(pattern, value) is not None
        )
    except re.error:
        return False


def literal_prefix(pattern: str) -> str:
    """The literal characters a pattern starts with ('' if none or unparsable)."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        tree = _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - any parse trouble: no prefix
        return ""
    out = []
    for op, av in tree.data:
        if op is _parser.LITERAL:
            out.append(chr(av))
        else:
            break
    return "".join(out)


def _top_level_branch(pattern: str) -> bool:
    """True if the pattern has a '|' outside any group."""
    depth = 0
    escaped = False
    in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return True
    return False


def _parse(pattern: str):
    try:
        from re import _parser  # type: ignore[attr-defined]

        return _parser, _parser.parse(pattern)
    except Exception:  # noqa: BLE001 - an unparsable pattern has no examples
        return None, None


_EXAMPLE_CAP = 64


def examples(pattern: str) -> list[str]:
    """A few strings the pattern admits: every branch, each repeat 0/1/2 times.

    Enough to see where a pattern can lead (``(/var)?/tmp/...`` reaches /tmp)
    without a regex-intersection engine; only admitted strings are returned.
    """
    sre, tree = _parse(pattern)
    if tree is None:
        return []

    def char(items) -> str:
        negate = any(op is sre.NEGATE for op, _ in items)
        if negate:
            banned = set()
            for op, av in items:
                if op is sre.LITERAL:
                    banned.add(chr(av))
                elif op is sre.RANGE:
                    banned.update(chr(c) for c in range(av[0], min(av[1], av[0] + 256) + 1))
            return next((c for c in "ax0_-." if c not in banned), "")
        for op, av in items:
            if op is sre.LITERAL:
                return chr(av)
            if op is sre.RANGE:
                return chr(av[0])
            if op is sre.CATEGORY:
                return "0" if "DIGIT" in str(av) else ("a" if "WORD" in str(av) else " ")
        return ""

    def seq(data) -> list[str]:
        out = [""]
        for op, av in data:
            alts = node(op, av)
            out = [a + b for a in out for b in alts][:_EXAMPLE_CAP]
        return out

    def node(op, av) -> list[str]:
        if op is sre.LITERAL:
            return [chr(av)]
        if op is sre.NOT_LITERAL:
            return ["a" if chr(av) != "a" else "b"]
        if op is sre.ANY:
            return ["a"]
        if op is sre.IN:
            return [char(av)]
        if op is sre.BRANCH:
            return [x for alt in av[1] for x in seq(alt.data)][:_EXAMPLE_CAP]
        if op is sre.SUBPATTERN:
            return seq(av[-1].data)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)):
            lo, hi, sub = av
            inner = seq(sub.data)
            counts = sorted({lo, min(lo + 1, hi), min(lo + 2, hi)})
            out = []
            for n in counts:
                combos = [""]
                for _ in range(n):
                    combos = [a + b for a in combos for b in inner][:_EXAMPLE_CAP]
                out.extend(combos)
            return out[:_EXAMPLE_CAP]
        return [""]  # anchors, lookarounds, backreferences

    try:
        found = seq(tree.data)
    except Exception:  # noqa: BLE001 - exotic constructs: no examples
        return []
    return [e for e in dict.fromkeys(found) if admits(pattern, e)]


def backtracking(pattern: str) -> bool:
    """True for an unbounded repeat of something that itself repeats unboundedly.

    ``([^/]+/?)*`` can split a long argument in exponentially many ways; a
    body that starts with a separator its inner repeats cannot consume
    (``(/[a-z]+)*``) cannot, and is not reported.
    """
    sre, tree = _parse(pattern)
    if tree is None:
        return False
    repeats = (sre.MAX_REPEAT, sre.MIN_REPEAT)

    def admits_char(op, av, ch: str) -> bool:
        if op is sre.LITERAL:
            return chr(av) == ch
        if op is sre.NOT_LITERAL:
            return chr(av) != ch
        if op is sre.ANY:
            return ch != "\n"
        if op is sre.IN:
            negate = any(o is sre.NEGATE for o, _ in av)
            hit = False
            for o, v in av:
                if o is sre.LITERAL and chr(v) == ch:
                    hit = True
                elif o is sre.RANGE and v[0] <= ord(ch) <= v[1]:
                    hit = True
                elif o is sre.CATEGORY:
                    hit = hit or re.fullmatch(r"[\d\w\s]", ch) is not None
            return hit != negate
        return True  # groups, branches: assume the worst

    def inner_repeats(data, sep: str | None) -> bool:
        for op, av in data:
            if op in repeats:
                lo, hi, sub = av
                if hi == sre.MAXREPEAT and (
                    sep is None or any(admits_char(o, v, sep) for o, v in sub.data)
                ):
                    return True
                if inner_repeats(sub.data, sep):
                    return True
            elif op is sre.SUBPATTERN:
                if inner_repeats(av[-1].data, sep):
                    return True
            elif op is sre.BRANCH:
                if any(inner_repeats(alt.data, sep) for alt in av[1]):
                    return True
        return False

    def walk(data) -> bool:
        for op, av in data:
            if op in repeats:
                lo, hi, sub = av
                body = sub.data
                if len(body) == 1 and body[0][0] is sre.SUBPATTERN:
                    body = body[0][1][-1].data
                if hi == sre.MAXREPEAT:
                    sep = chr(body[0][1]) if body and body[0][0] is sre.LITERAL else None
                    if inner_repeats(body, sep):
                        return True
                if walk(sub.data):
                    return True
            elif op is sre.SUBPATTERN:
                if walk(av[-1].data):
                    return True
            elif op is sre.BRANCH:
                if any(walk(alt.data) for alt in av[1]):
                    return True
        return False

    return walk(tree.data)


_ANY_PATHS = ("/etc/shadow", "/root/.ssh/authorized_keys")
_INJECTIONS = ("$(id)", "`id`", ";id;", "|id|", "&&id&&", "\nid\n")


def admits_injection(pattern: str) -> str | None:
    """A string with shell syntax that the pattern admits, if any."""
    prefix = literal_prefix(pattern)
    for inj in _INJECTIONS:
        for value in (inj, prefix + inj):
            if admits(pattern, value):
                return value
    for example in examples(pattern)[:8]:
        for pos in range(len(example) + 1):
            for inj in _INJECTIONS:
                value = example[:pos] + inj + example[pos:]
                if admits(pattern, value):
                    return value
    return None


def probe_path(pattern: str) -> list[tuple[str, str]]:
    """(lint code, admitted example) for each kind of dangerous path a pattern admits.

    ``wildcard-path`` (any absolute path at all) implies the others and is
    reported alone; otherwise ``path-traversal`` and ``world-writable-path``
    are reported independently.
    """
    prefix = literal_prefix(pattern)
    heads = [""]
    if prefix.endswith(("=", ":")) or (prefix.startswith("-") and not prefix.endswith("/")):
        heads.append(prefix)
    for head in heads:
        if all(admits(pattern, head + p) for p in _ANY_PATHS):
            return [("wildcard-path", head + _ANY_PATHS[0])]
    found: list[tuple[str, str]] = []
    stem = prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""
    if stem:
        for value in (
            prefix + "../../../../etc/shadow",
            stem + "../../../../etc/shadow",
            stem + "x/../../../../etc/shadow",
            stem + "..",
        ):
            if admits(pattern, value):
                found.append(("path-traversal", value))
                break
    head = prefix.split("=", 1)[0] + "=" if "=" in prefix else ""
    candidates = [h + v for v in ("/tmp/x", "/var/tmp/x", "/dev/shm/x") for h in ("", head)]
    for candidate in candidates:
        if admits(pattern, candidate):
            found.append(("world-writable-path", candidate))
            return found
    for example in examples(pattern):
        if under_world_writable(example.split("=", 1)[1] if head else example):
            found.append(("world-writable-path", example))
            break
    return found


def under_world_writable(path: str) -> bool:
    norm = os.path.normpath(path)
    return any(norm == d or norm.startswith(d + "/") for d in WORLD_WRITABLE)


# -- the checker ---------------------------------------------------------------------

# loader warning code -> (lint code, severity, attack, fix)
_LOAD_WARNINGS: dict[str, tuple[str, str, str, str]] = {
    "duplicate-name": (
        "duplicate-name",
        "warning",
        "the earlier rule is silently dropped: the policy is not what it reads like",
        "give every rule a unique name",
    ),
    "regex-comma-split": (
        "load-warning",
        "error",
        "columns are split on ',', so the pattern was cut in two: one argument is checked "
        "against a broken pattern and a column is added (the rule changes meaning)",
        "rewrite the pattern without ',' (e.g. [0-9]{1,3} instead of a {m,n} with a comma: "
        "use alternatives or a native TOML rule)",
    ),
    "invalid-regex": (
        "never-matches",
        "warning",
        "",
        "fix the pattern; as written the rule never matches",
    ),
    "never-matches": ("never-matches", "warning", "", "remove the rule or complete it"),
    "unknown-class": (
        "load-warning",
        "warning",
        "the rule is skipped: whatever it was meant to allow is denied",
        "use one of the rootwrap filter classes",
    ),
    "odd-suffix": (
        "load-warning",
        "warning",
        "editor backups (x.filters~, x.filters.orig) in the directory are loaded as policy, "
        "so an old, wider rule stays active",
        "keep only *.filters files in filters directories",
    ),
    "untrimmed-entry": (
        "load-warning",
        "warning",
        "the entry is used verbatim with its whitespace: the directory is not the one meant",
        "remove the spaces around ',' in the list",
    ),
    "relative-entry": (
        "load-warning",
        "warning",
        "oslo.rootwrap resolves it against the caller's current directory, which the "
        "caller chooses (privsepd ignores it)",
        "use absolute paths only",
    ),
    "default-section": (
        "load-warning",
        "warning",
        "rules in [DEFAULT] are loaded as filters too, and leak into every section",
        "move them to [Filters]",
    ),
    "ignored-section": ("load-warning", "info", "", "remove the section or rename it [Filters]"),
    "missing-dir": ("load-warning", "warning", "", "create the directory or drop it"),
    "dangerous-env": (
        "dangerous-env",
        "error",
        "under oslo.rootwrap the caller sets it for a root process and injects code "
        "(privsepd refuses the variable at run time)",
        "remove the variable from the rule",
    ),
    "kill-relative": (
        "load-warning",
        "warning",
        "the target executable is matched by name against $PATH at run time",
        "write the absolute path of the target executable",
    ),
    "order-dependent": (
        "load-warning",
        "info",
        "oslo.rootwrap picked the winning rule in directory order (arbitrary)",
        "keep each command's rules in one file",
    ),
    "implicit-privsep-helper": (
        "load-warning",
        "info",
        "privsep-helper runs as root with any arguments (oslo.rootwrap compatibility); "
        "its --privsep_context imports any module on root's path",
        "move services to privsepd contexts and drop privsep-helper from sudoers",
    ),
}

_PATHLIKE_ENV = re.compile(r"(FILE|PATH|DIR|CONF|CONFIG|SCRIPT|CMD|COMMAND|EXEC|HOME)", re.I)
_SENSITIVE = re.compile(
    r"(^/etc/(shadow|gshadow|sudoers)|/\.ssh/|^/root/|\.key$|\.pem$|private|secret|password)"
)
_SHARED_EXES = re.compile(
    r"(python[0-9.]*|perl|ruby|node|java|bash|sh|sleep|tail|cat|sudo|systemd|init)\Z"
)


class Checker:
    """Accumulates findings over files; see :func:`check_paths`."""

    def __init__(self, exec_dirs: Sequence[str] | None, ownership: bool) -> None:
        self.exec_dirs = tuple(exec_dirs) if exec_dirs is not None else None
        self.ownership = ownership
        self.report = Report()
        self.filters: list[Filter] = []
        self._owned_checked: set[str] = set()

    # -- output helpers -------------------------------------------------------------
    def add(
        self,
        path: str,
        line: int | None,
        rule: str,
        code: str,
        severity: str,
        problem: str,
        attack: str = "",
        fix: str = "",
    ) -> None:
        self.report.findings.append(
            Finding(path, line or None, rule, code, severity, problem, attack, fix)
        )

    def on(self, filt: Filter, code: str, severity: str, problem: str, attack="", fix="") -> None:
        src = filt.source
        self.add(src.path, src.line, src.name, code, severity, problem, attack, fix)

    # -- inputs ----------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self.add(path, None, "", "parse-error", "error", f"cannot read: {reason}")
            self.report.unusable = True
            return None

    def owned(self, path: str) -> None:
        if not self.ownership or path in self._owned_checked:
            return
        self._owned_checked.add(path)
        from privsepd.policy.trust import check_trusted

        try:
            check_trusted(path)
        except PolicyError as exc:
            self.add(
                path,
                None,
                "",
                "unsafe-ownership",
                "error",
                exc.reason,
                "whoever can write there can rewrite the policy, i.e. grant themselves root; "
                "privsepd refuses to load it",
                f"chown root:root and chmod go-w {getattr(exc, 'offending', path)}",
            )

    def add_path(self, path: str) -> None:
        if not os.path.exists(path):
            self.add(path, None, "", "parse-error", "error", "no such file or directory")
            self.report.unusable = True
            return
        self.owned(path)
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if name.startswith(".") or not os.path.isfile(full):
                    continue
                if name.endswith(".toml"):
                    self.add_native(full)
                else:
                    if not name.endswith(".filters"):
                        self.load_warning(
                            PolicyWarning(
                                "odd-suffix",
                                "loaded although it does not end in .filters",
                                full,
                            )
                        )
                    self.add_filters(full)
            return
        if path.endswith(".toml"):
            self.add_native(path)
        elif path.endswith(".conf"):
            self.add_config(path)
        else:
            self.add_filters(path)

    def add_config(self, path: str) -> None:
        text = self.read(path)
        if text is None:
            return
        self.report.files.append(path)
        try:
            config = parse_config(text, path)
        except PolicyError as exc:
            self.parse_error(exc, path)
            return
        for w in config.warnings:
            self.load_warning(w)
        if self.exec_dirs is None:
            self.exec_dirs = config.exec_dirs
        for directory in config.exec_dirs:
            self.exec_dir(path, directory)
        for directory in config.filters_path:
            if os.path.isdir(directory):
                self.add_path(directory)
            else:
                self.load_warning(
                    PolicyWarning("missing-dir", "filters directory does not exist", directory)
                )

    def exec_dir(self, conf: str, directory: str) -> None:
        if under_world_writable(directory):
            self.add(
                conf,
                None,
                "",
                "world-writable-path",
                "error",
                f"exec_dirs entry {directory!r} is under a world-writable directory",
                "any local user can plant a program there that relative rules run as root",
                "list only root-owned system directories in exec_dirs",
            )
            return
        if not self.ownership or not os.path.isdir(directory):
            return
        from privsepd.policy.trust import check_trusted

        try:
            check_trusted(directory)
        except PolicyError as exc:
            self.add(
                conf,
                None,
                "",
                "untrusted-executable",
                "error",
                f"exec_dirs entry: {exc.reason}",
                "its owner (or group) can plant a program that relative rules run as root",
                "list only root-owned, non-writable directories in exec_dirs",
            )

    def parse_error(self, exc: PolicyError, path: str) -> None:
        self.add(
            exc.path or path,
            exc.line,
            "",
            "parse-error",
            "error",
            exc.reason,
            "",
            "fix the file: privsepd refuses to load it (and oslo.rootwrap crashes or skips it)",
        )
        self.report.unusable = True

    def load_warning(self, w: PolicyWarning) -> None:
        code, severity, attack, fix = _LOAD_WARNINGS.get(
            w.code, ("load-warning", "warning", "", "")
        )
        rule, _, message = w.message.partition(": ")
        if not message or " " in rule:
            rule, message = "", w.message
        self.add(w.path, w.line, rule, code, severity, f"{message} ({w.code})", attack, fix)

    def add_filters(self, path: str) -> None:
        text = self.read(path)
        if text is None:
            return
        self.report.files.append(path)
        warnings: list[PolicyWarning] = []
        try:
            filters = parse_filters(text, path, warnings, lint=False)
        except PolicyError as exc:
            self.parse_error(exc, path)
            return
        for filt in filters:
            lint_filter(filt, warnings)
        for w in warnings:
            self.load_warning(w)
        self.filters.extend(filters)

    def add_native(self, path: str) -> None:
        text = self.read(path)
        if text is None:
            return
        self.report.files.append(path)
        from privsepd.policy.native import parse_policy

        try:
            frag = parse_policy(text, path)
        except PolicyError as exc:
            self.parse_error(exc, path)
            return
        from privsepd.authoring.check_native import lint_fragment

        lint_fragment(self, frag)
        self.filters.extend(frag.commands.values())

    # -- per-rule checks -------------------------------------------------------------------
    def finish(self) -> Report:
        for filt in self.filters:
            self.check_filter(filt)
        self.check_names()
        self.check_shadowing()
        self.check_chaining()
        self.report.findings.sort(key=lambda f: (f.path, f.line or 0, f.code))
        return self.report

    def check_filter(self, filt: Filter) -> None:
        kind = filt.kind
        if kind == "NativeCommand":
            from privsepd.authoring.check_native import lint_command

            lint_command(self, filt)
        elif kind == "CommandFilter":
            self.command_filter(filt)
        elif kind in ("RegExpFilter", "ChainingRegExpFilter"):
            self.regexp_filter(filt)
        elif kind == "PathFilter":
            self.path_filter(filt)
        elif kind == "KillFilter":
            self.kill_filter(filt)
        elif kind == "ReadFileFilter":
            self.read_file_filter(filt)
        elif kind == "EnvFilter":
            self.env_filter(filt)
        elif kind == "IpFilter":
            self.on(
                filt,
                "ip-filter",
                _downgrade("info", filt.run_as),
                "IpFilter allows every ip command except 'netns exec' and '-batch'",
                "reconfigure any host interface, address, route, rule or namespace, and move "
                "interfaces into or out of namespaces",
                "if only some subcommands are needed, use RegExpFilter or native rules "
                "with ifname/cidr constraints",
            )
        elif kind == "IpNetnsExecFilter" and not _is_root(filt.run_as):
            self.on(
                filt,
                "never-matches",
                "warning",
                f"IpNetnsExecFilter runs as {filt.run_as!r}; it only ever matches as root",
                "",
                "set run_as to root or remove the rule",
            )
        if kind not in ("ReadFileFilter", "KillFilter"):
            self.executable(filt)

    def unrestricted(self, filt: Filter, via: str) -> bool:
        info = program_info(filt.exec_path)
        if info is None:
            return False
        category, example = info
        severity, attack, fix = _CATEGORIES[category]
        self.on(
            filt,
            "unrestricted-program",
            _downgrade(severity, filt.run_as),
            f"{via} lets the caller pass any arguments to {os.path.basename(filt.exec_path)} "
            f"as {filt.run_as}",
            attack.format(user=filt.run_as, example=example),
            fix,
        )
        return True

    def command_filter(self, filt: Filter) -> None:
        if filt.args:
            self.on(
                filt,
                "command-filter-args",
                _downgrade("error", filt.run_as),
                f"CommandFilter ignores the extra columns {list(filt.args)}: any arguments "
                "are allowed",
                "pass whatever arguments the program accepts, not just the ones written",
                "use RegExpFilter (every argument anchored) or a native [[command]] with args",
            )
        self.unrestricted(filt, "CommandFilter")
        if under_world_writable(filt.exec_path):
            self.on(
                filt,
                "world-writable-path",
                "error",
                f"executable {filt.exec_path!r} is under a world-writable directory",
                "any local user can replace it and have it run as root",
                "install the program in a root-owned directory",
            )

    def regexp_filter(self, filt: Filter) -> None:
        patterns = filt.args
        if not patterns:
            return
        info = program_info(filt.exec_path)
        category = info[0] if info else None
        for i, pattern in enumerate(patterns):
            if backtracking(pattern):
                self.on(
                    filt,
                    "loose-regex",
                    "warning",
                    f"argument {i} pattern {pattern!r} nests unbounded repeats",
                    "a long crafted argument makes matching take exponential time, stalling "
                    "every command the service runs (the shim is on its hot path)",
                    "rewrite without a repeat inside a repeat, e.g. [^\\0]+ instead of ([^/]+/?)*",
                )
            if _top_level_branch(pattern):
                self.on(
                    filt,
                    "loose-regex",
                    "warning",
                    f"argument {i} pattern {pattern!r} has a top-level '|': oslo.rootwrap "
                    "appends '$' to the last alternative only",
                    f"under oslo.rootwrap anything starting with an earlier alternative passes "
                    f"(e.g. {pattern.split('|')[0] + ' --evil'!r}); privsepd refuses it",
                    f"group the alternatives: ({pattern})",
                )
            if i == 0:
                continue
            path_shaped = literal_prefix(pattern).startswith("/")
            if category not in _PATH_CATEGORIES | {"exec"} and not path_shaped:
                continue  # free text (a device name, a rate) for a program that is no writer
            for code, example in probe_path(pattern):
                self.path_finding(filt, i, pattern, code, example, category)
        self.regexp_shell(filt)

    def path_finding(
        self, filt: Filter, i: int, pattern: str, code: str, example: str, category: str | None
    ) -> None:
        base = os.path.basename(filt.exec_path)
        severity = "error" if category in _PATH_CATEGORIES else "warning"
        what = {
            "wildcard-path": "any path",
            "path-traversal": "'..' after its directory prefix",
            "world-writable-path": "a path under a world-writable directory",
        }[code]
        info = program_info(filt.exec_path)
        how = f" (e.g. `{info[1]}`)" if info and category in _PATH_CATEGORIES else ""
        attack = {
            "wildcard-path": f"{base} acts on any file as {filt.run_as}{how}",
            "path-traversal": f"climb out of the intended directory: {base} acts on any "
            f"file as {filt.run_as}",
            "world-writable-path": "plant a symlink there (e.g. to /etc/shadow) before "
            f"{base} runs as {filt.run_as}",
        }[code]
        self.on(
            filt,
            code,
            _downgrade(severity, filt.run_as),
            f"argument {i} pattern {pattern!r} admits {what}, e.g. {example!r}",
            attack,
            "anchor the argument to the service's own directory with a character class "
            "that excludes '/' and '.' (e.g. /var/lib/nova/instances/[0-9a-f-]+/disk), "
            "or use PathFilter / native path_under",
        )

    def regexp_shell(self, filt: Filter) -> None:
        info = program_info(filt.exec_path)
        base = os.path.basename(filt.exec_path)
        if base in _SHELLS or (info is not None and base.rstrip("0123456789.") in _INTERPRETERS):
            self.shell_rule(filt)

    def shell_rule(self, filt: Filter) -> None:
        patterns = filt.args
        for i, pattern in enumerate(patterns[1:], 1):
            if not any(admits(pattern, flag) for flag in _SCRIPT_FLAGS):
                continue
            script = patterns[i + 1] if i + 1 < len(patterns) else None
            base = os.path.basename(filt.exec_path)
            if script is None or filt.kind == "ChainingRegExpFilter":
                injected = "the script is the next word"
            else:
                injected = admits_injection(script)
            if injected is None:
                self.on(
                    filt,
                    "shell-command",
                    _downgrade("warning", filt.run_as),
                    f"{base} {pattern} runs a fixed script {script!r} through a shell",
                    "the script sees root's shell environment (IFS, globbing, PATH lookups); "
                    "a later edit that loosens the pattern is a root shell",
                    "run the underlying command directly with its own rule",
                )
            else:
                self.on(
                    filt,
                    "shell-command",
                    _downgrade("error", filt.run_as),
                    f"{base} {pattern} SCRIPT: the script pattern {script!r} admits shell "
                    f"syntax, e.g. {injected!r}",
                    f"run any command as {filt.run_as} by appending it to the script",
                    "never allow a shell or interpreter with -c/-e; allow the commands the "
                    "script runs, each with its own rule",
                )
            return

    def path_filter(self, filt: Filter) -> None:
        base = os.path.basename(filt.exec_path)
        info = program_info(filt.exec_path)
        dangerous = info is not None and info[0] in _PATH_CATEGORIES
        for i, constraint in enumerate(filt.args, 1):
            if not os.path.isabs(constraint):
                continue
            norm = os.path.normpath(constraint)
            if norm == "/":
                self.on(
                    filt,
                    "wildcard-path",
                    _downgrade("error" if dangerous else "warning", filt.run_as),
                    f"argument {i} base {constraint!r} admits every path",
                    f"{base} acts on any file as {filt.run_as}, e.g. /etc/shadow",
                    "name the service's own directory as the base",
                )
            elif under_world_writable(norm):
                self.on(
                    filt,
                    "world-writable-path",
                    _downgrade("error", filt.run_as),
                    f"argument {i} base {constraint!r} is under a world-writable directory",
                    f"any local user creates {norm}/x as a symlink into /etc before "
                    f"{base} runs as {filt.run_as} (PathFilter resolves it, but files that "
                    "appear later are not)",
                    "use a root- or service-owned directory as the base",
                )
            elif not constraint.endswith("/"):
                self.on(
                    filt,
                    "path-prefix",
                    "warning",
                    f"argument {i} base {constraint!r} has no trailing '/'",
                    f"under oslo.rootwrap the prefix is a string compare: {constraint + '-x'!r} "
                    "passes (privsepd compares whole path components)",
                    f"write {constraint + '/'!r}",
                )

    def kill_filter(self, filt: Filter) -> None:
        target = filt.args[0]
        for signal in filt.args[1:]:
            if not signal.startswith("-"):
                self.on(
                    filt,
                    "kill-signal",
                    "error",
                    f"signal {signal!r} does not start with '-'",
                    f"'kill {signal} PID' is a kill of two pids: process {signal} is signalled "
                    "too, whatever it runs",
                    f"write '-{signal}'",
                )
        if under_world_writable(target):
            self.on(
                filt,
                "world-writable-path",
                "warning",
                f"target executable {target!r} is under a world-writable directory",
                "any local user can create or replace that executable, so 'processes running "
                "it' is no longer the service's own processes",
                "name the target by its root-owned install path",
            )
        elif _SHARED_EXES.match(os.path.basename(target)):
            self.on(
                filt,
                "kill-shared-executable",
                "warning",
                f"target {target!r} is an executable many processes run",
                f"signal any process running {os.path.basename(target)}, e.g. other services "
                "on the host",
                "target the service's own wrapper executable, or use pid files",
            )

    def read_file_filter(self, filt: Filter) -> None:
        path = filt.file_path  # type: ignore[attr-defined]
        if under_world_writable(path):
            self.on(
                filt,
                "world-writable-path",
                "error",
                f"file {path!r} is under a world-writable directory",
                "replace it with a symlink to /etc/shadow: cat runs as root and prints it",
                "read a file in a root-owned directory",
            )
        elif _SENSITIVE.search(path):
            self.on(
                filt,
                "sensitive-read",
                "warning",
                f"{path!r} looks like a secret",
                "the service (and whoever compromises it) reads it",
                "confirm the service needs it; grant a narrower file if possible",
            )

    def env_filter(self, filt: EnvFilter) -> None:
        names = sorted(filt.env_names)
        if not names:
            return
        risky = [n for n in names if _PATHLIKE_ENV.search(n) and not dangerous_env_name(n)]
        plain = [n for n in names if n not in risky and not dangerous_env_name(n)]
        command = os.path.basename(filt.exec_path)
        written = [a for a in filt.args if "=" in a and a.partition("=")[2]]
        ignored = (
            f"; the values written in the rule ({', '.join(written)}) are not enforced"
            if written
            else ""
        )
        if risky:
            self.on(
                filt,
                "env-unchecked",
                _downgrade("error", filt.run_as),
                f"values of {', '.join(risky)} are never checked (any non-empty value){ignored}",
                f"point {command} at a file or program the attacker wrote, e.g. "
                f"{risky[0]}=/tmp/evil, and it is read or run as {filt.run_as}",
                "use a native [[command]] whose env is fixed in the policy, or a wrapper "
                "script that validates the value",
            )
        if plain:
            self.on(
                filt,
                "env-unchecked",
                _downgrade("warning", filt.run_as),
                f"values of {', '.join(plain)} are never checked (any non-empty value)"
                + ("" if risky else ignored),
                f"pass arbitrary strings to {command} through its environment",
                "fix the values in a native [[command]] env table",
            )
        self.unrestricted(filt, "EnvFilter (the arguments after the command are not checked)")

    def executable(self, filt: Filter) -> None:
        if filt.kind == "ChainingFilter" or not filt.exec_path:
            return
        dirs = self.exec_dirs if self.exec_dirs is not None else DEFAULT_EXEC_DIRS
        if os.path.isabs(filt.exec_path):
            found = filt.exec_path if os.access(filt.exec_path, os.X_OK) else None
        else:
            found = next(
                (
                    os.path.join(d, filt.exec_path)
                    for d in dirs
                    if os.access(os.path.join(d, filt.exec_path), os.X_OK)
                ),
                None,
            )
        if found is None:
            where = "" if os.path.isabs(filt.exec_path) else f" in {list(dirs)}"
            self.on(
                filt,
                "missing-executable",
                "warning",
                f"executable {filt.exec_path!r} not found{where}",
                "",
                "install the program, fix the path, or drop the rule (it only yields "
                "'executable not found')",
            )
            return
        if not self.ownership or under_world_writable(found):
            return
        from privsepd.policy.trust import check_trusted

        try:
            check_trusted(found)
        except PolicyError as exc:
            self.on(
                filt,
                "untrusted-executable",
                "error",
                f"executable {found}: {exc.reason}",
                f"its owner or group can replace the program this rule runs as {filt.run_as}",
                "install it root-owned and not writable by group or others",
            )

    # -- cross-rule checks -----------------------------------------------------------------
    def check_names(self) -> None:
        seen: dict[str, Filter] = {}
        for filt in self.filters:
            name = filt.source.name
            first = seen.get(name)
            if first is None:
                seen[name] = filt
                continue
            if first.source.path == filt.source.path:
                continue  # the loader already reported it (and dropped the first)
            self.on(
                filt,
                "duplicate-name",
                "info",
                f"name also used at {first.source.path}:{first.source.line}",
                "audit records and explain output cannot tell the two rules apart",
                "give every rule a unique name across files",
            )

    def check_shadowing(self) -> None:
        earlier: dict[str, list[Filter]] = {}
        for filt in self.filters:
            keys = filt.index_keys()
            if filt.kind == "EnvFilter" or filt.chaining or not keys:
                for key in keys or ():
                    earlier.setdefault(key, []).append(filt)
                continue
            shadow = None
            for key in keys:
                for prev in earlier.get(key, ()):
                    if _covers(prev, filt):
                        shadow = prev
                        break
                if shadow:
                    break
            if shadow is not None:
                same = _signature(shadow) == _signature(filt)
                self.on(
                    filt,
                    "shadowed",
                    "warning",
                    (
                        f"identical to the rule at {shadow.source.path}:{shadow.source.line}"
                        if same
                        else f"never wins: {shadow.kind} {shadow.source.name!r} at "
                        f"{shadow.source.path}:{shadow.source.line} accepts every command "
                        f"this rule accepts (as {shadow.run_as})"
                    ),
                    "" if same else "the tighter rule (or its run_as) written here never applies",
                    "remove one of the two rules" if same else "remove or tighten the earlier rule",
                )
            for key in keys:
                earlier.setdefault(key, []).append(filt)

    def check_chaining(self) -> None:
        for filt in self.filters:
            if not filt.chaining or filt.kind == "ChainingFilter":
                continue
            if filt.kind == "IpNetnsExecFilter" and not _is_root(filt.run_as):
                continue
            reachable = [
                f for f in self.filters if not f.chaining and f.run_as == filt.run_as and f != filt
            ]
            risky = sorted(
                {
                    f.source.name
                    for f in reachable
                    if f.kind in ("CommandFilter", "EnvFilter") and program_info(f.exec_path)
                }
            )
            if filt.kind == "IpNetnsExecFilter":
                what = "runs, in any network namespace (the name is not checked),"
            else:
                what = f"prefixes {os.path.basename(filt.exec_path)} to"
            shown = ", ".join(risky[:8]) + (f" and {len(risky) - 8} more" if len(risky) > 8 else "")
            extra = f"; unrestricted ones among them: {shown}" if risky else ""
            self.on(
                filt,
                "chaining",
                _downgrade("warning", filt.run_as),
                f"{filt.kind} {what} any command another {filt.run_as} rule allows "
                f"({len(reachable)} rules{extra})",
                "every other rule is also reachable through this one, so its reach is the "
                "union of all of them (inside namespaces the host's view may differ)",
                "keep the reachable rules tight; in native policy give the chained "
                "commands their own context so only they can be chained",
            )


def _signature(filt: Filter) -> tuple:
    return (filt.kind, filt.exec_path, filt.run_as, filt.args)


def _covers(prev: Filter, filt: Filter) -> bool:
    """True if prev accepts every argv filt accepts (cheap, sound cases only)."""
    if prev.chaining or prev.kind == "EnvFilter":
        return False
    if _signature(prev) == _signature(filt):
        return True
    if prev.kind != "CommandFilter":
        return False
    if filt.kind in ("CommandFilter", "PathFilter"):
        return prev.exec_path == filt.exec_path or (
            os.path.basename(prev.exec_path) == prev.exec_path
            and prev.exec_path == os.path.basename(filt.exec_path)
            and os.path.basename(filt.exec_path) == filt.exec_path
        )
    if filt.kind == "RegExpFilter" and filt.args:
        return (
            admits(filt.args[0], os.path.basename(prev.exec_path))
            and prev.exec_path == filt.exec_path
            and literal_prefix(filt.args[0]) == filt.args[0]
        )
    return False


def check_paths(
    paths: Iterable[str],
    exec_dirs: Sequence[str] | None = None,
    ownership: bool = True,
) -> Report:
    """Lint every path (rootwrap.conf, .filters, .toml, or a directory of them)."""
    checker = Checker(exec_dirs, ownership)
    for path in paths:
        checker.add_path(path)
    return checker.finish()
