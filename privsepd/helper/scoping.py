"""Turn a freshly forked root child into a capability-scoped helper.

:func:`enter_scope` runs a fixed sequence of small named steps (in the spirit
of bubblewrap's setup), each commented with why it sits where it does, then
reads the result back from ``/proc`` and refuses to continue if the kernel's
view differs in any way from the declared :class:`Scope`.

Design decisions:

* Inheritable is left **empty**. A process with a non-empty inheritable set
  hands those capabilities to any exec of a binary with matching file
  capabilities; keeping it empty means nothing leaks across exec unless a
  thread asks for it explicitly with :func:`ambient_capabilities`.
* Securebits NOROOT and NO_SETUID_FIXUP are set (and locked) *before* the
  uid switch: NO_SETUID_FIXUP is what lets the declared capabilities survive
  setresuid() away from 0, and NOROOT stops uid 0 (or a setuid-root binary)
  from being granted the full set again at exec. KEEP_CAPS stays off and is
  locked off.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from privsepd.errors import ScopingError
from privsepd.files import Files
from privsepd.helper import kernel, procinfo

__all__ = [
    "SECUREBITS",
    "Landlock",
    "Scope",
    "ScopeReport",
    "ambient_capabilities",
    "enter_scope",
    "parse_capabilities",
    "read_scope",
    "refuse_root_identity",
    "resolve_user",
    "verify_scope",
]

#: Securebits every scoped helper ends up with (0x2f).
SECUREBITS = (
    kernel.SECBIT_NOROOT
    | kernel.SECBIT_NOROOT_LOCKED
    | kernel.SECBIT_NO_SETUID_FIXUP
    | kernel.SECBIT_NO_SETUID_FIXUP_LOCKED
    | kernel.SECBIT_KEEP_CAPS_LOCKED
)

_T = TypeVar("_T")


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------


def parse_capabilities(names: Iterable[str]) -> frozenset[str]:
    """Canonical ``CAP_*`` names for *names* (``"CAP_NET_ADMIN"`` or ``"net_admin"``).

    Raises ValueError naming every unknown entry, so a typo in a context
    declaration can never silently grant or drop the wrong capability.
    """
    if isinstance(names, (str, bytes)):
        raise TypeError("parse_capabilities() takes an iterable of names, not one string")
    out: set[str] = set()
    unknown: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            unknown.append(repr(raw))
            continue
        name = raw.strip().upper()
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name in kernel.CAPABILITIES:
            out.add(name)
        else:
            unknown.append(repr(raw))
    if unknown:
        raise ValueError(f"unknown capability name(s): {', '.join(unknown)}")
    return frozenset(out)


def resolve_user(name: str | None, group: str | None = None) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, supplementary groups) for a run-as user.

    *name* None means the dedicated ``privsepd`` account if the host has
    one, else ``nobody``: never root by default. Supplementary groups are
    the user's groups from the group database (including the primary gid,
    as initgroups() would); *group* overrides the primary group.
    """
    if name is None:
        try:
            pw = pwd.getpwnam("privsepd")
        except KeyError:
            pw = _getpw("nobody")
    else:
        pw = _getpw(name)
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ScopingError(f"unknown group {group!r}")
    groups = set(os.getgrouplist(pw.pw_name, gid))
    return pw.pw_uid, gid, tuple(sorted(groups))


def refuse_root_identity(
    context: str,
    user: str | None,
    group: str | None,
    uid: int,
    gid: int,
    groups: tuple[int, ...],
) -> None:
    """Raise ScopingError if a resolved identity is root's in any part.

    Checked on the numbers, not the names: ``"0"``, ``"root"`` and an alias
    such as ``toor`` (``useradd -o -u 0``) all resolve to uid 0, and
    ``group = "root"`` (or a user whose groups include gid 0) to root's
    group, which owns and can write much of the system. Root is only ever
    kept through the explicit ``stay_root`` opt-in.
    """
    found = []
    if uid == 0:
        found.append(f"user {user!r} resolves to uid 0")
    if gid == 0:
        source = f"group {group!r}" if group is not None else f"the primary group of {user!r}"
        found.append(f"{source} resolves to gid 0")
    elif 0 in groups:
        found.append(f"user {user!r} has supplementary group 0 (root)")
    if found:
        raise ScopingError(
            f"context {context!r}: {'; '.join(found)}; running as root needs the explicit "
            "opt-in stay_root = true"
        )


def _getpw(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ScopingError(f"unknown user {name!r}")


@dataclass(frozen=True)
class Landlock:
    """Paths the helper may still touch after scoping; everything else is denied.

    ``write`` implies read. Paths must be absolute and exist at scoping time.
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("read", "write"):
            paths = tuple(getattr(self, field))
            bad = [p for p in paths if not isinstance(p, str) or not os.path.isabs(p)]
            if bad:
                raise ScopingError(f"landlock {field} paths must be absolute: {bad!r}")
            object.__setattr__(self, field, paths)


@dataclass(frozen=True)
class Scope:
    """What a helper keeps: capabilities, identity, umask, sandboxing.

    Capability names are normalized (``"net_admin"`` -> ``"CAP_NET_ADMIN"``)
    and syscall names checked against the table for this architecture at
    construction, so a bad declaration fails before any fork.

    ``uid=None`` keeps uid 0 (an explicit opt-in; NOROOT still denies root
    powers at exec). ``uid`` requires ``gid``. Supplementary groups are set
    (to ``groups``, possibly empty) whenever uid, gid or groups is given.
    With ``landlock`` set, the helper can no longer open paths outside it,
    /proc and the Python library included: import what it needs first.
    ``files`` adds its DAC capability to ``capabilities`` and confines it
    (and the helper) to the declared paths (:mod:`privsepd.helper.grants`);
    with both, a path must be allowed by both rulesets.
    """

    capabilities: frozenset[str]
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    umask: int = 0o077
    landlock: Landlock | None = None
    seccomp_deny: tuple[str, ...] = ()
    files: Files | None = None

    def __post_init__(self) -> None:
        try:
            caps = parse_capabilities(self.capabilities)
        except (TypeError, ValueError) as e:
            raise ScopingError(str(e))
        if self.files is not None and not isinstance(self.files, Files):
            raise ScopingError(f"files must be a privsepd.Files, got {self.files!r}")
        if self.files is not None and self.files.empty:
            object.__setattr__(self, "files", None)
        if self.files is not None:
            caps |= self.files.capabilities
            # Imported here, in the service: a forked helper then finds it
            # loaded instead of importing it (and the policy package) anew.
            import privsepd.helper.grants  # noqa: F401
        object.__setattr__(self, "capabilities", caps)
        if self.uid is not None and self.gid is None:
            # Dropping the uid but keeping gid 0 would leave root-group access.
            raise ScopingError("scope sets uid but not gid; declare both")
        object.__setattr__(self, "groups", tuple(sorted(set(self.groups))))
        if not 0 <= self.umask <= 0o777:
            raise ScopingError(f"umask out of range: {self.umask:o}")
        deny = tuple(self.seccomp_deny)
        kernel.syscall_numbers(deny)  # raises ScopingError naming unknown names
        object.__setattr__(self, "seccomp_deny", deny)


# ---------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeReport:
    """The kernel's view of one task's credentials, from ``/proc/PID/status``.

    ``securebits`` is only readable for the calling thread (via prctl); for
    another pid it is None because ``/proc`` does not expose it.
    """

    uid: int
    euid: int
    suid: int
    fsuid: int
    gid: int
    egid: int
    sgid: int
    fsgid: int
    groups: tuple[int, ...]
    cap_inh: frozenset[str]
    cap_prm: frozenset[str]
    cap_eff: frozenset[str]
    cap_bnd: frozenset[str]
    cap_amb: frozenset[str]
    securebits: int | None
    no_new_privs: bool
    seccomp: int
    umask: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (sets become sorted lists) for status output and audit."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, frozenset):
                out[key] = sorted(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


def _parse_status(text: str, securebits: int | None) -> ScopeReport:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    try:
        uids = [int(x) for x in fields["Uid"].split()]
        gids = [int(x) for x in fields["Gid"].split()]

        def caps(key: str) -> frozenset[str]:
            return kernel.cap_names(int(fields[key], 16))

        return ScopeReport(
            uid=uids[0],
            euid=uids[1],
            suid=uids[2],
            fsuid=uids[3],
            gid=gids[0],
            egid=gids[1],
            sgid=gids[2],
            fsgid=gids[3],
            groups=tuple(sorted(int(x) for x in fields["Groups"].split())),
            cap_inh=caps("CapInh"),
            cap_prm=caps("CapPrm"),
            cap_eff=caps("CapEff"),
            cap_bnd=caps("CapBnd"),
            cap_amb=caps("CapAmb"),
            securebits=securebits,
            no_new_privs=fields["NoNewPrivs"] == "1",
            seccomp=int(fields["Seccomp"]),
            umask=int(fields["Umask"], 8),
        )
    except (KeyError, ValueError, IndexError) as e:
        raise ScopingError(f"cannot parse /proc status: {e!r}")


def _is_self(pid: int | str) -> bool:
    return pid in ("self", "thread-self") or pid == os.getpid()


def read_scope(pid: int | str = "self") -> ScopeReport:
    """Credentials of *pid* as the kernel reports them.

    For "self" this reads ``/proc/thread-self``: capabilities are per
    thread, and the calling thread is the one whose scope matters.
    """
    path = "/proc/thread-self/status" if _is_self(pid) else f"/proc/{pid}/status"
    with open(path) as f:
        text = f.read()
    securebits = kernel.get_securebits() if _is_self(pid) else None
    return _parse_status(text, securebits)


def verify_scope(scope: Scope, report: ScopeReport) -> None:
    """Raise ScopingError listing every way *report* differs from *scope*."""
    want = scope.capabilities
    diffs: list[str] = []

    def check(name: str, got: object, expected: object) -> None:
        if got != expected:
            if isinstance(got, frozenset) and isinstance(expected, frozenset):
                extra, missing = sorted(got - expected), sorted(expected - got)
                diffs.append(f"{name}: extra {extra} missing {missing}")
            else:
                diffs.append(f"{name}: got {got!r}, expected {expected!r}")

    check("cap_eff", report.cap_eff, want)
    check("cap_prm", report.cap_prm, want)
    check("cap_bnd", report.cap_bnd, want)
    check("cap_inh", report.cap_inh, frozenset())
    check("cap_amb", report.cap_amb, frozenset())
    if report.securebits is not None:
        check("securebits", hex(report.securebits), hex(SECUREBITS))
    check("no_new_privs", report.no_new_privs, True)
    if scope.seccomp_deny or scope.files is not None:
        check("seccomp", report.seccomp, kernel.SECCOMP_MODE_FILTER)
    check("umask", oct(report.umask), oct(scope.umask))
    if scope.uid is not None:
        for f in ("uid", "euid", "suid", "fsuid"):
            check(f, getattr(report, f), scope.uid)
    if scope.gid is not None:
        for f in ("gid", "egid", "sgid", "fsgid"):
            check(f, getattr(report, f), scope.gid)
    if _changes_identity(scope):
        check("groups", report.groups, scope.groups)
    if diffs:
        raise ScopingError("scope mismatch: " + "; ".join(diffs))


# ---------------------------------------------------------------------------
# Entering the scope
# ---------------------------------------------------------------------------


def _changes_identity(scope: Scope) -> bool:
    return scope.uid is not None or scope.gid is not None or bool(scope.groups)


def _step(name: str, fn: Callable[..., _T], *args: Any) -> _T:
    """Run one step; any failure becomes a ScopingError naming the step."""
    try:
        return fn(*args)
    except ScopingError as e:
        raise ScopingError(f"enter_scope step {name!r} failed: {e}") from e
    except Exception as e:
        raise ScopingError(f"enter_scope step {name!r} failed: {e!r}") from e


def _close_fds(keep: list[int]) -> None:
    kernel.close_fds(keep)
    if 0 not in keep:
        # The helper never reads a terminal; an inherited tty or pipe on
        # stdin would be a channel nobody audits.
        null = os.open("/dev/null", os.O_RDONLY)
        if null != 0:
            os.dup2(null, 0)
            os.close(null)


def _set_pdeathsig(parent: int) -> None:
    kernel.set_pdeathsig(signal.SIGKILL)
    # The parent may have died before the signal was armed; then nobody
    # would ever kill us, so check after arming (bubblewrap does the same).
    if os.getppid() != parent:
        raise ScopingError(f"parent {parent} exited during scoping")
    if kernel.get_pdeathsig() != signal.SIGKILL:
        raise ScopingError("PR_SET_PDEATHSIG did not stick")


def _drop_bounding(keep_mask: int) -> None:
    for cap in range(kernel.last_cap() + 1):
        if not keep_mask >> cap & 1:
            kernel.bounding_drop(cap)


def _switch_identity(scope: Scope) -> None:
    # Groups before uid: setgroups/setresgid need CAP_SETGID, which the
    # uid switch alone would not remove (NO_SETUID_FIXUP) but the capset
    # step will; gid before uid mirrors what every sane daemon does.
    if scope.gid is not None:
        os.setresgid(scope.gid, scope.gid, scope.gid)
    os.setgroups(list(scope.groups))
    if scope.uid is not None:
        os.setresuid(scope.uid, scope.uid, scope.uid)


def _set_capabilities(mask: int) -> None:
    kernel.capset(mask, mask, 0)
    kernel.ambient_clear_all()


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def enter_scope(scope: Scope, keep_fds: Iterable[int] = (), parent: int | None = None) -> None:
    """Scope the calling (freshly forked, root) process to *scope*, then prove it.

    Must run single-threaded, before the helper serves anything. Raises
    ScopingError naming the step that failed; the caller must then exit
    rather than serve, since the process may be half-scoped. *parent* is the
    pid the helper must die with; pass the pid taken before the fork (the
    default, the parent at this moment, misses a parent that already died).
    """
    keep = sorted({int(fd) for fd in keep_fds})
    mask = kernel.cap_mask(scope.capabilities)
    if parent is None:
        parent = os.getppid()

    # 1. First, so nothing the parent had open (sockets, log files, the
    #    service's database connection) stays reachable from the helper.
    _step("close_fds", _close_fds, keep)
    # Opened now, read at the end: after landlock/seccomp the helper may no
    # longer be allowed to open /proc, but a file opened before still reads.
    status_fd = _step(
        "open_status", os.open, "/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC
    )
    grants = None
    try:
        # 2. Early, so a parent dying anywhere below takes us with it.
        _step("pdeathsig", _set_pdeathsig, parent)
        # 2b. Declared files: decided (Landlock or refuse), globs expanded,
        #     chains checked and paths opened while still root and before
        #     anything is dropped, so a refusal leaves nothing half done.
        if scope.files is not None:
            from privsepd.helper.grants import open_grants

            grants = _step("files", open_grants, scope.files)
        # 3. Bounding set while we still hold CAP_SETPCAP. Dropping from the
        #    bounding set does not touch effective, so the steps below can
        #    still use CAP_SETPCAP/CAP_SETUID/CAP_SETGID.
        _step("bounding_set", _drop_bounding, mask)
        # 4. Securebits before the uid switch: NO_SETUID_FIXUP keeps the
        #    permitted/effective sets across setresuid(non-zero), so the
        #    declared caps survive it; NOROOT denies root-at-exec powers;
        #    all locked so the helper cannot undo them.
        _step("securebits", kernel.set_securebits, SECUREBITS)
        # 5. Identity, while CAP_SETUID/CAP_SETGID are still effective.
        if _changes_identity(scope):
            _step("identity", _switch_identity, scope)
            # commit_creds() clears the parent-death signal whenever euid,
            # egid or fsuid change, so it must be armed again.
            _step("pdeathsig_rearm", _set_pdeathsig, parent)
        # 6. Capabilities last among credential changes: it removes the
        #    CAP_SET* powers the steps above needed. Inheritable empty,
        #    ambient cleared (see module docstring).
        _step("capabilities", _set_capabilities, mask)
        # 7. Files the helper creates are private unless it says otherwise.
        _step("umask", os.umask, scope.umask)
        # 8. No exec can ever grant privileges again (setuid bits, file
        #    caps); also a precondition of landlock and seccomp without
        #    CAP_SYS_ADMIN.
        _step("no_new_privs", kernel.set_no_new_privs)
        # 9. Filesystem sandbox; needs no_new_privs. The files ruleset first
        #    (it is what confines the DAC capability), then proven by a
        #    denied access; an extra landlock= ruleset stacks on top.
        if grants is not None and grants.confine:
            _step("files_landlock", grants.restrict)
            _step("files_confined", grants.prove_confined)
        if scope.landlock is not None:
            _step(
                "landlock",
                kernel.landlock_restrict,
                scope.landlock.read,
                scope.landlock.write,
            )
        # securebits come from prctl, which a deny list may forbid: read now.
        securebits = _step("read_securebits", kernel.get_securebits)
        # The same, through python-prctl (libcap), checked against /proc below.
        second = _step("read_prctl", procinfo.prctl_readback)
        # 10. Seccomp last: its deny list may include calls the steps above
        #     needed (prctl, setresuid, capset).
        #     The files side-door filter goes first: a deny list may hold
        #     prctl itself.
        if grants is not None:
            _step("files_seccomp", grants.install_side_door_filter)
        if scope.seccomp_deny:
            _step("seccomp", kernel.seccomp_install_deny, scope.seccomp_deny)
        # 11. Trust nothing above: read back what the kernel says and refuse
        #     to serve if it differs from the declaration.
        report = _step("read_scope", lambda: _parse_status(_read_fd(status_fd), securebits))
        _step("verify", verify_scope, scope, report)
        if second is not None:
            _step("verify_prctl", procinfo.verify_readback, second, report)
    finally:
        if grants is not None:
            grants.close()
        os.close(status_fd)


# ---------------------------------------------------------------------------
# Per-thread ambient capabilities for commands
# ---------------------------------------------------------------------------


@contextmanager
def ambient_capabilities(caps: Iterable[str]) -> Iterator[None]:
    """Raise *caps* in this thread's inheritable+ambient sets for the block.

    A subprocess forked from this thread (``subprocess.Popen`` without
    preexec_fn) then keeps exactly these capabilities across exec, while
    every other thread and later command gets none. *caps* must be within
    the permitted set. Capabilities are per thread, so commands run by other
    existing threads are unaffected; a thread *started* inside the block
    inherits the raised sets (clone copies the creator's credentials).
    """
    try:
        names = parse_capabilities(caps)
    except (TypeError, ValueError) as e:
        raise ScopingError(str(e))
    mask = kernel.cap_mask(names)
    _eff, prm, inh = kernel.capget()
    if mask & ~prm:
        raise ScopingError(
            "ambient_capabilities: not in permitted set: "
            + ", ".join(sorted(kernel.cap_names(mask & ~prm)))
        )
    nums = sorted(kernel.CAPABILITIES[n] for n in names)
    try:
        eff, prm, _ = kernel.capget()
        kernel.capset(eff, prm, inh | mask)
        for cap in nums:
            kernel.ambient_raise(cap)
        yield
    finally:
        for cap in nums:
            try:
                kernel.ambient_lower(cap)
            except OSError:
                pass  # lowering inheritable below clears it anyway
        eff, prm, _ = kernel.capget()
        kernel.capset(eff, prm, inh)
