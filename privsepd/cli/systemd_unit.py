"""``privsepd systemd-unit --policy ...``: a hardened unit fitted to a policy.

The daemon runs as root because it forks helpers that switch to other users,
but it needs far less than root: the capabilities its contexts declare, plus
what scoping a helper takes (CAP_SETUID, CAP_SETGID, CAP_SETPCAP) and
signalling helpers that run as other users (CAP_KILL). That union is the
unit's ``CapabilityBoundingSet``.

Every other directive is added unless some context contradicts it, and each
one left out (or weakened) is named in a comment with the context and the
reason. A context contradicts a filesystem restriction when it may write
where the restriction forbids: its writes are known only if it declares a
Landlock sandbox (``landlock_read``/``landlock_write``), so a context without
one keeps ``ProtectSystem=full`` rather than ``strict``. Capabilities reveal
the rest (CAP_SYS_ADMIN needs namespaces and mounts, CAP_NET_* the host
network, CAP_SYS_MODULE kernel modules, ...), and contexts that run commands
keep what commands commonly need (netlink and IP sockets).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from privsepd.errors import PrivsepError

# What the daemon needs whatever the contexts hold: scoping switches uid and
# gid, drops the bounding set and locks securebits; stopping and evicting
# helpers signals processes of other uids.
DAEMON_CAPABILITIES = ("CAP_KILL", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID")
DEFAULT_EXEC = "/usr/local/bin/privsepd"
NET_CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST"}


@dataclass
class _Plan:
    """Directives to write, and why some were left out."""

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def omit(self, directive: str, why: str) -> None:
        self.notes.append(f"# {directive} not set: {why}")


def _under(path: str, prefixes: Iterable[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _holders(contexts: Sequence[Any], caps: Iterable[str]) -> list[str]:
    wanted = set(caps)
    return [c.name for c in contexts if wanted & c.all_caps]


@dataclass(frozen=True)
class _Context:
    """A context as the unit sees it: its capabilities and its commands' together."""

    name: str
    all_caps: frozenset[str]
    spec: Any


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def render_unit(
    policy: Any,
    policy_paths: Sequence[str],
    exec_path: str = DEFAULT_EXEC,
    socket_dir: str = "/run/privsepd",
    drain_timeout: float = 10.0,
    home_install: bool | None = None,
) -> str:
    """The unit text for ``policy`` (loaded from ``policy_paths``)."""
    specs = [policy.contexts[name] for name in sorted(policy.contexts)]
    commands: dict[str, list[Any]] = {}
    for rule in policy.filters:
        context = getattr(rule, "context", None)
        if context is not None:
            commands.setdefault(context, []).append(rule)
    with_commands = sorted(commands)
    contexts = []
    for spec in specs:
        held = set(spec.capabilities)
        for rule in commands.get(spec.name, ()):
            held |= set(getattr(rule, "capabilities", ()))
        contexts.append(_Context(spec.name, frozenset(held), spec))
    caps = set(DAEMON_CAPABILITIES).union(*(c.all_caps for c in contexts))

    undeclared = [
        c.name for c in specs if not (c.sandbox.landlock_read or c.sandbox.landlock_write)
    ]
    writes = sorted({p for c in specs for p in c.sandbox.landlock_write})
    reads = sorted({p for c in specs for p in c.sandbox.landlock_read})
    touched = writes + reads
    audit_dirs = sorted(
        {os.path.dirname(c.audit) for c in specs if c.audit and c.audit.startswith("/")}
    )
    if home_install is None:
        home_install = _installed_under_home()

    plan = _Plan()
    add, omit = plan.add, plan.omit

    add(f"CapabilityBoundingSet={' '.join(sorted(caps))}")
    add("AmbientCapabilities=")
    add("NoNewPrivileges=yes")
    add("UMask=0077")
    add("KeyringMode=private")

    # -- the filesystem
    if undeclared:
        add("ProtectSystem=full")
        omit(
            "ProtectSystem=strict",
            f"context(s) {_names(undeclared)} declare no Landlock sandbox, so where they write "
            "is unknown; /usr, /boot, /efi and /etc stay read-only",
        )
    else:
        add("ProtectSystem=strict")
        rw = [p for p in writes if not _under(p, ("/proc", "/sys", "/dev"))]
        rw += audit_dirs
        if rw:
            add(f"ReadWritePaths={' '.join('-' + p for p in sorted(set(rw)))}")
    if any(_under(p, ("/home", "/root", "/run/user")) for p in writes):
        omit("ProtectHome", "a context declares writes under /home, /root or /run/user")
    elif home_install or any(_under(p, ("/home", "/root", "/run/user")) for p in reads):
        add("ProtectHome=read-only")
        if home_install:
            plan.notes.append(
                "# ProtectHome=read-only, not yes: privsepd is installed under /root or /home"
            )
    else:
        add("ProtectHome=yes")
    if any(_under(p, ("/tmp", "/var/tmp")) for p in touched):
        omit("PrivateTmp", "a context declares paths under /tmp or /var/tmp")
    else:
        add("PrivateTmp=yes")
    device_caps = _holders(contexts, ("CAP_SYS_RAWIO", "CAP_MKNOD", "CAP_SYS_ADMIN"))
    device_paths = any(_under(p, ("/dev",)) for p in touched)
    if device_caps or device_paths:
        omit(
            "PrivateDevices",
            f"context(s) {_names(device_caps)} hold a capability for devices"
            if device_caps
            else "a context declares paths under /dev",
        )
    else:
        add("PrivateDevices=yes")
        add("DevicePolicy=closed")

    # -- the kernel
    tunables = [p for p in writes if _under(p, ("/proc/sys", "/sys"))]
    if undeclared or tunables:
        why = (
            f"context(s) {_names(undeclared)} may write /proc/sys or /sys (no Landlock declared)"
            if undeclared
            else f"a context declares writes to {', '.join(tunables)}"
        )
        omit("ProtectKernelTunables", why)
    else:
        add("ProtectKernelTunables=yes")
    _unless(plan, contexts, "ProtectKernelModules=yes", ("CAP_SYS_MODULE",))
    _unless(plan, contexts, "ProtectKernelLogs=yes", ("CAP_SYSLOG",))
    _unless(plan, contexts, "ProtectClock=yes", ("CAP_SYS_TIME", "CAP_WAKE_ALARM"))
    _unless(plan, contexts, "ProtectHostname=yes", ("CAP_SYS_ADMIN",))
    # ip netns add bind-mounts /run/netns/NAME for the whole host.
    _unless(plan, contexts, "PrivateMounts=yes", ("CAP_SYS_ADMIN",))
    watchers = _holders(contexts, ("CAP_SYS_PTRACE", "CAP_KILL"))
    if watchers or with_commands:
        who = sorted(set(watchers) | set(with_commands))
        omit(
            "ProtectProc=invisible",
            f"context(s) {_names(who)} may look at other processes (commands, CAP_KILL, "
            "CAP_SYS_PTRACE)",
        )
    else:
        add("ProtectProc=invisible")
    if any(_under(p, ("/sys/fs/cgroup",)) for p in writes):
        omit("ProtectControlGroups", "a context declares writes under /sys/fs/cgroup")
    else:
        add("ProtectControlGroups=yes")
    admins = _holders(contexts, ("CAP_SYS_ADMIN",))
    if admins:
        add("RestrictNamespaces=mnt net")
        plan.notes.append(
            f"# RestrictNamespaces allows mnt and net: context(s) {_names(admins)} hold "
            "CAP_SYS_ADMIN (ip netns)"
        )
    else:
        add("RestrictNamespaces=yes")
    add("LockPersonality=yes")
    # No cffi callbacks and no JIT: nothing in privsepd needs writable code.
    add("MemoryDenyWriteExecute=yes")
    add("RestrictRealtime=yes")
    _unless(plan, contexts, "RestrictSUIDSGID=yes", ("CAP_FSETID",))
    add("SystemCallArchitectures=native")
    denied = ["@cpu-emulation", "@obsolete"]
    for group, needs in (
        ("@clock", ("CAP_SYS_TIME", "CAP_WAKE_ALARM")),
        ("@debug", ("CAP_SYS_PTRACE",)),
        ("@module", ("CAP_SYS_MODULE",)),
        ("@mount", ("CAP_SYS_ADMIN",)),
        ("@raw-io", ("CAP_SYS_RAWIO",)),
        ("@reboot", ("CAP_SYS_BOOT",)),
        ("@swap", ("CAP_SYS_ADMIN",)),
    ):
        holders = _holders(contexts, needs)
        if holders:
            omit(f"SystemCallFilter=~{group}", f"context(s) {_names(holders)} hold {needs[0]}")
        else:
            denied.append(group)
    add(f"SystemCallFilter=~{' '.join(sorted(denied))}")
    add("SystemCallErrorNumber=EPERM")

    # -- the network
    netters = _holders(contexts, NET_CAPS)
    families = ["AF_UNIX"]
    if netters or with_commands:
        families += ["AF_NETLINK", "AF_INET", "AF_INET6"]
        who = sorted(set(netters) | set(with_commands))
        plan.notes.append(
            f"# AF_NETLINK, AF_INET, AF_INET6 allowed: context(s) {_names(who)} hold a "
            "CAP_NET_* capability or run commands"
        )
        omit("PrivateNetwork", f"context(s) {_names(who)} work on the host's network")
        omit("IPAddressDeny=any", f"context(s) {_names(who)} may use IP")
    else:
        add("PrivateNetwork=yes")
        add("IPAddressDeny=any")
    add(f"RestrictAddressFamilies={' '.join(families)}")

    policy_args = " ".join(f"--policy {shlex.quote(p)}" for p in policy_paths)
    summary = "; ".join(
        f"{c.name} ({', '.join(sorted(c.all_caps)) or 'no capabilities'})" for c in contexts
    )
    socket_name = os.path.basename(socket_dir.rstrip("/"))
    head = [
        "# privsepd daemon mode, hardened for this policy. Generated by:",
        f"#   privsepd systemd-unit {policy_args}",
        f"# Contexts: {summary}",
        "# Regenerate after changing the contexts' capabilities or sandboxes;",
        "# a helper whose capability is outside the bounding set fails to scope.",
        "[Unit]",
        "Description=privsepd privilege-separation daemon",
        "Documentation=https://opendev.org/privsepd",
        "After=local-fs.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_path} serve {policy_args}"
        + ("" if socket_dir == "/run/privsepd" else f" --socket-dir {shlex.quote(socket_dir)}"),
        "ExecReload=/bin/kill -HUP $MAINPID",
        # SIGTERM to the daemon only: it drains its helpers, then systemd
        # kills what is left of the cgroup.
        "KillMode=mixed",
        f"TimeoutStopSec={int(drain_timeout) + 5}",
        "Restart=on-failure",
        f"RuntimeDirectory={socket_name}",
        "RuntimeDirectoryMode=0755",
        "LogsDirectory=privsepd",
        "LogsDirectoryMode=0750",
    ]
    tail = ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(head + plan.notes + plan.lines + tail)


def _unless(plan: _Plan, contexts: Sequence[Any], line: str, caps: Sequence[str]) -> None:
    holders = _holders(contexts, caps)
    if holders:
        plan.omit(line.split("=")[0], f"context(s) {_names(holders)} hold {caps[0]}")
    else:
        plan.add(line)


def _installed_under_home() -> bool:
    import privsepd

    places = (os.path.realpath(sys.executable), os.path.realpath(privsepd.__file__))
    return any(_under(p, ("/root", "/home")) for p in places)


def main(argv: list[str] | None = None) -> int:
    from privsepd.policy.loader import load_policy

    parser = argparse.ArgumentParser(
        prog="privsepd systemd-unit",
        description="Print a hardened systemd unit for privsepd serve, fitted to a policy.",
    )
    parser.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="PATH",
        help="policy file or drop-in directory the unit serves; may repeat",
    )
    parser.add_argument(
        "--exec",
        dest="exec_path",
        default=DEFAULT_EXEC,
        metavar="PATH",
        help=f"path of the privsepd program in ExecStart (default: {DEFAULT_EXEC})",
    )
    parser.add_argument(
        "--socket-dir",
        default="/run/privsepd",
        metavar="DIR",
        help="the socket directory written to the unit (default: /run/privsepd)",
    )
    parser.add_argument(
        "--installed-as",
        action="append",
        metavar="PATH",
        help="the policy paths to write in ExecStart, if not the --policy paths (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        policy = load_policy(args.policy)
    except PrivsepError as exc:
        print(f"privsepd systemd-unit: {exc}", file=sys.stderr)
        return 2
    paths = args.installed_as or [os.path.abspath(p) for p in args.policy]
    sys.stdout.write(render_unit(policy, paths, args.exec_path, args.socket_dir))
    return 0
