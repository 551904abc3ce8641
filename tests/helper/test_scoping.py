"""Real-kernel tests of privsepd.helper.scoping: real forks, real /proc, no mocks.

Every scoped test forks a child that runs enter_scope() and then a probe; the
probe's JSON result comes back over a pipe. The child always leaves through
os._exit so a failure can never run the rest of pytest twice.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import needs_python_prctl, require_feature
from sysaccounts import system_group, system_user, unique

from privsepd.errors import ScopingError
from privsepd.helper import kernel
from privsepd.helper.scoping import (
    Landlock,
    Scope,
    ambient_capabilities,
    enter_scope,
    parse_capabilities,
    read_scope,
    resolve_user,
    verify_scope,
)

NOBODY = 65534
NET_ADMIN = 1 << 12
CLONE_NEWUTS = 0x04000000


# ---------------------------------------------------------------------------
# Test utility
# ---------------------------------------------------------------------------


class ChildError(AssertionError):
    """The scoped child raised; carries the remote type and message."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def run_scoped(
    scope: Scope,
    probe: Callable[[], Any] | None = None,
    *,
    inspect: Callable[[int], None] | None = None,
    prepare: Callable[[], None] | None = None,
    timeout: float = 20.0,
) -> Any:
    """Fork, enter *scope* in the child, run *probe* there, return its result.

    *prepare()* runs in the child before enter_scope, to set up the state a
    step must undo (supplementary groups, a pipe on stdin).
    *inspect(pid)* runs in the parent while the scoped child is still alive
    (blocked on a pipe), so tests can read /proc/PID/status of a live helper.
    A child exception is re-raised in the parent as ChildError.
    """
    result_r, result_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(result_r)
            os.close(go_w)
            try:
                if prepare is not None:
                    prepare()
                enter_scope(scope, keep_fds=[result_w, go_r])
                out: dict[str, Any] = {"ok": probe() if probe else None}
            except BaseException as e:
                out = {"error": type(e).__name__, "message": str(e)}
            data = json.dumps(out).encode() + b"\n"
            while data:
                data = data[os.write(result_w, data) :]
            os.read(go_r, 1)  # parent closes go_w when done inspecting
        finally:
            os._exit(0)
    os.close(result_w)
    os.close(go_r)
    try:
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([result_r], [], [], left)[0]:
                raise AssertionError("scoped child timed out")
            chunk = os.read(result_r, 65536)
            if not chunk:
                raise AssertionError(f"scoped child died without a result: {buf!r}")
            buf += chunk
        if inspect is not None:
            inspect(pid)
    finally:
        os.close(go_w)
        os.close(result_r)
        _reap(pid, timeout)
    out = json.loads(buf)
    if "error" in out:
        raise ChildError(out["error"], out["message"])
    return out["ok"]


def _reap(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def status_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def caps_of(text: str) -> dict[str, int]:
    f = status_fields(text)
    return {k: int(f[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def proc_status(pid: int | str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return f.read()


def outcome(fn: Callable[[], object]) -> str:
    """'ok' or the errno name of the OSError *fn* raised (probe-friendly)."""
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def run_status(argv: list[str]) -> dict[str, int]:
    """Caps of a command that prints a /proc status file (run from the probe)."""
    return caps_of(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_file(path: str) -> None:
    with open(path, "a") as f:
        f.write("x\n")


def scope_nobody(*caps: str, **kw: Any) -> Scope:
    return Scope(frozenset(caps), uid=NOBODY, gid=NOBODY, **kw)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def files(root: None) -> Iterator[dict[str, str]]:
    """A 0755 scratch dir (not nosuid) with root-owned and nobody-owned files."""
    d = tempfile.mkdtemp(prefix="privsepd-scoping-")
    try:
        os.chmod(d, 0o755)
        nosuid = bool(os.statvfs(d).f_flag & getattr(os, "ST_NOSUID", 2))
        require_feature(not nosuid, f"{d} is on a nosuid filesystem")
        paths = {
            "dir": d,
            "secret": os.path.join(d, "secret"),
            "passwd": os.path.join(d, "passwd"),
            "mine": os.path.join(d, "nobody-owned"),
            "suid_cat": os.path.join(d, "suid-cat"),
        }
        with open(paths["secret"], "w") as f:
            f.write("top secret\n")
        os.chmod(paths["secret"], 0o600)
        shutil.copyfile("/etc/passwd", paths["passwd"])
        os.chmod(paths["passwd"], 0o644)
        with open(paths["mine"], "w") as f:
            f.write("mine\n")
        os.chown(paths["mine"], NOBODY, NOBODY)
        shutil.copyfile(shutil.which("cat") or "/bin/cat", paths["suid_cat"])
        os.chown(paths["suid_cat"], 0, 0)
        os.chmod(paths["suid_cat"], 0o4755)
        yield paths
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# Declarations (no root needed)
# ---------------------------------------------------------------------------


def test_parse_capabilities_accepts_full_and_short_names() -> None:
    assert parse_capabilities(["CAP_NET_ADMIN", "net_raw", " Sys_Admin "]) == {
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_ADMIN",
    }


def test_parse_capabilities_unknown_name_is_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="CAP_FLY"):
        parse_capabilities(["CAP_NET_ADMIN", "CAP_FLY"])


def test_scope_with_unknown_capability_is_scoping_error() -> None:
    with pytest.raises(ScopingError, match="net_admn"):
        Scope(frozenset({"net_admn"}))


def test_scope_with_unknown_syscall_is_scoping_error_naming_it() -> None:
    with pytest.raises(ScopingError, match="mount_everything"):
        Scope(frozenset(), seccomp_deny=("mount", "mount_everything"))


def test_scope_with_uid_but_no_gid_is_refused() -> None:
    with pytest.raises(ScopingError, match="gid"):
        Scope(frozenset(), uid=NOBODY)


def test_landlock_relative_path_is_refused() -> None:
    with pytest.raises(ScopingError, match="absolute"):
        Landlock(read=("etc",))


def _groups_from_the_database(name: str, primary: int) -> tuple[int, ...]:
    """What initgroups() would give, read straight from the group database."""
    members = {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    return tuple(sorted(members | {primary}))


def test_resolve_user_default_is_privsepd_or_nobody() -> None:
    try:
        account = pwd.getpwnam("privsepd")
    except KeyError:
        account = pwd.getpwnam("nobody")
    expected = (
        account.pw_uid,
        account.pw_gid,
        _groups_from_the_database(account.pw_name, account.pw_gid),
    )
    assert resolve_user(None) == expected
    assert expected[0] != 0


def test_resolve_user_reads_the_passwd_and_group_databases() -> None:
    assert resolve_user("root")[:2] == (0, 0)
    assert resolve_user("0")[:2] == (0, 0)
    assert resolve_user("nobody")[:2] == (NOBODY, pwd.getpwnam("nobody").pw_gid)
    assert resolve_user("nobody", "root")[1] == 0
    assert resolve_user("nobody", str(grp.getgrnam("nogroup").gr_gid))[1] == 65534


def test_resolve_user_lists_a_real_users_supplementary_groups(root: None) -> None:
    group_name, user_name = unique("psdsg"), unique("psdsu")
    with system_group(group_name) as group, system_user(user_name, "-G", group_name) as user:
        uid, gid, groups = resolve_user(user_name)
        assert (uid, gid) == (user.pw_uid, user.pw_gid)
        assert groups == tuple(sorted({user.pw_gid, group.gr_gid}))


def test_resolve_user_unknown_user_or_group_is_named() -> None:
    with pytest.raises(ScopingError, match="no-such-user-xyz"):
        resolve_user("no-such-user-xyz")
    with pytest.raises(ScopingError, match="no-such-group-xyz"):
        resolve_user("nobody", "no-such-group-xyz")


def test_report_as_dict_is_json_serializable() -> None:
    report = read_scope()
    d = report.as_dict()
    assert json.loads(json.dumps(d))["cap_eff"] == sorted(report.cap_eff)


# ---------------------------------------------------------------------------
# The scoped helper as the kernel sees it
# ---------------------------------------------------------------------------


def test_helper_status_shows_declared_caps_amb_zero_and_no_new_privs(root: None) -> None:
    scope = Scope(frozenset({"CAP_NET_ADMIN"}))
    seen: dict[str, Any] = {}

    def inspect(pid: int) -> None:
        text = proc_status(pid)
        seen["caps"] = caps_of(text)
        seen["nnp"] = status_fields(text)["NoNewPrivs"]
        verify_scope(scope, read_scope(pid))  # also from outside, securebits unknown

    run_scoped(scope, inspect=inspect)
    assert seen["caps"] == {
        "CapInh": 0,
        "CapPrm": NET_ADMIN,
        "CapEff": NET_ADMIN,
        "CapBnd": NET_ADMIN,
        "CapAmb": 0,
    }
    assert seen["nnp"] == "1"


def test_uid_switched_to_nobody_with_declared_caps_kept(root: None) -> None:
    seen: dict[str, Any] = {}

    def inspect(pid: int) -> None:
        f = status_fields(proc_status(pid))
        seen.update(uid=f["Uid"].split(), gid=f["Gid"].split(), eff=int(f["CapEff"], 16))

    run_scoped(scope_nobody("CAP_NET_ADMIN"), inspect=inspect)
    assert seen["uid"] == [str(NOBODY)] * 4
    assert seen["gid"] == [str(NOBODY)] * 4
    assert seen["eff"] == NET_ADMIN


def test_supplementary_groups_are_set_from_scope(root: None) -> None:
    uid, gid, groups = resolve_user("nobody")
    scope = Scope(frozenset(), uid=uid, gid=gid, groups=groups + (4242,))
    got = run_scoped(scope, lambda: sorted(os.getgroups()))
    assert got == sorted(set(groups) | {4242})


def test_only_kept_fds_stay_open_and_stdin_is_dev_null(root: None) -> None:
    extra = os.open("/dev/null", os.O_RDONLY)  # inherited by the child, must be closed
    try:

        def probe() -> dict[str, Any]:
            open_fds = []
            for fd in range(3, 4096):
                try:
                    os.fstat(fd)
                    open_fds.append(fd)
                except OSError:
                    pass
            return {"fds": open_fds, "stdin": os.readlink("/proc/self/fd/0")}

        got = run_scoped(Scope(frozenset()), probe)
    finally:
        os.close(extra)
    assert extra not in got["fds"]
    assert len(got["fds"]) == 2  # the result pipe and the go pipe, nothing else
    assert got["stdin"] == "/dev/null"


def test_umask_is_applied(root: None) -> None:
    got = run_scoped(Scope(frozenset(), umask=0o027), lambda: read_scope().umask)
    assert got == 0o027


def test_securebits_are_locked_and_cannot_be_cleared(root: None) -> None:
    def probe() -> dict[str, Any]:
        return {
            "bits": kernel.get_securebits(),
            "clear": outcome(lambda: kernel.set_securebits(0)),
            "keepcaps": outcome(lambda: kernel._prctl(8, 1)),  # PR_SET_KEEPCAPS
        }

    got = run_scoped(Scope(frozenset({"CAP_SETPCAP"})), probe)
    # NOROOT | NOROOT_LOCKED | NO_SETUID_FIXUP | NO_SETUID_FIXUP_LOCKED |
    # KEEP_CAPS_LOCKED (KEEP_CAPS itself off), spelled out rather than taken
    # from the implementation under test.
    assert got["bits"] == 0x2F
    assert got["clear"] == "EPERM"
    assert got["keepcaps"] == "EPERM"


def test_capabilities_outside_the_declaration_cannot_be_raised(root: None) -> None:
    def probe() -> str:
        eff, prm, inh = kernel.capget()
        sys_admin = 1 << kernel.CAPABILITIES["CAP_SYS_ADMIN"]
        return outcome(lambda: kernel.capset(eff | sys_admin, prm | sys_admin, inh))

    assert run_scoped(scope_nobody("CAP_NET_ADMIN"), probe) == "EPERM"


def test_helper_dies_with_its_parent_after_uid_switch(root: None) -> None:
    """PR_SET_PDEATHSIG is cleared by setresuid; enter_scope must re-arm it."""
    alive_r, alive_w = os.pipe()  # only the helper holds alive_w: EOF == helper gone
    pid_r, pid_w = os.pipe()
    mid = os.fork()
    if mid == 0:
        try:
            os.close(alive_r)
            os.close(pid_r)
            if os.fork() == 0:
                try:
                    enter_scope(scope_nobody(), keep_fds=[alive_w, pid_w])
                    os.write(pid_w, f"{os.getpid()}\n".encode())
                    time.sleep(30)
                finally:
                    os._exit(0)
            os.close(alive_w)
            os.close(pid_w)
            time.sleep(30)  # the parent kills us once the helper is scoped
        finally:
            os._exit(0)
    os.close(alive_w)
    os.close(pid_w)
    helper = 0
    try:
        assert select.select([pid_r], [], [], 20)[0], "helper never scoped"
        helper = int(os.read(pid_r, 64) or b"0")
        assert helper, "helper failed to scope"
        os.kill(mid, signal.SIGKILL)
        os.waitpid(mid, 0)
        ready = select.select([alive_r], [], [], 5)[0]
        assert ready and os.read(alive_r, 1) == b"", "helper outlived its parent"
        helper = 0
    finally:
        if helper:
            os.kill(helper, signal.SIGKILL)
        os.close(alive_r)
        os.close(pid_r)


# ---------------------------------------------------------------------------
# What a helper holding only CAP_NET_ADMIN cannot do
# ---------------------------------------------------------------------------


def test_net_admin_helper_cannot_read_root_0600_file(files: dict[str, str]) -> None:
    got = run_scoped(
        scope_nobody("CAP_NET_ADMIN"), lambda: outcome(lambda: read_file(files["secret"]))
    )
    assert got == "EACCES"


def test_net_admin_helper_cannot_write_root_owned_passwd_copy(files: dict[str, str]) -> None:
    got = run_scoped(
        scope_nobody("CAP_NET_ADMIN"), lambda: outcome(lambda: write_file(files["passwd"]))
    )
    assert got == "EACCES"


def test_net_admin_helper_cannot_chown(files: dict[str, str]) -> None:
    got = run_scoped(
        scope_nobody("CAP_NET_ADMIN"), lambda: outcome(lambda: os.chown(files["mine"], 0, 0))
    )
    assert got == "EPERM"


def test_dac_override_helper_can_read_root_0600_file(files: dict[str, str]) -> None:
    got = run_scoped(scope_nobody("CAP_DAC_OVERRIDE"), lambda: read_file(files["secret"]))
    assert got == "top secret\n"


def test_setuid_root_exec_does_not_regain_caps(files: dict[str, str]) -> None:
    got = run_scoped(
        scope_nobody("CAP_NET_ADMIN"), lambda: run_status([files["suid_cat"], "/proc/self/status"])
    )
    assert got["CapEff"] == 0
    assert got["CapPrm"] == 0
    assert got["CapBnd"] == NET_ADMIN


def test_stay_root_helper_setuid_exec_gets_no_caps_thanks_to_noroot(
    files: dict[str, str],
) -> None:
    """uid 0 stays, but locked NOROOT means exec grants root nothing."""

    def probe() -> dict[str, Any]:
        return {
            "suid": run_status([files["suid_cat"], "/proc/self/status"]),
            "plain": run_status(["cat", "/proc/self/status"]),
        }

    got = run_scoped(Scope(frozenset({"CAP_NET_ADMIN"})), probe)
    for which in ("suid", "plain"):
        assert got[which]["CapEff"] == 0, which
        assert got[which]["CapPrm"] == 0, which


# ---------------------------------------------------------------------------
# Commands run by the helper
# ---------------------------------------------------------------------------


def test_subprocess_of_helper_has_no_caps_and_declared_bounding_set(root: None) -> None:
    got = run_scoped(
        scope_nobody("CAP_NET_ADMIN"), lambda: run_status(["cat", "/proc/self/status"])
    )
    assert got == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": NET_ADMIN, "CapAmb": 0}


def test_ambient_capabilities_pass_exactly_those_caps_to_subprocess(root: None) -> None:
    def probe() -> dict[str, int]:
        with ambient_capabilities(frozenset({"CAP_NET_ADMIN"})):
            return run_status(["cat", "/proc/self/status"])

    got = run_scoped(scope_nobody("CAP_NET_ADMIN", "CAP_NET_RAW"), probe)
    assert got["CapEff"] == NET_ADMIN
    assert got["CapPrm"] == NET_ADMIN
    assert got["CapAmb"] == NET_ADMIN


def test_ambient_capabilities_are_lowered_after_the_block(root: None) -> None:
    def probe() -> dict[str, Any]:
        with ambient_capabilities(frozenset({"CAP_NET_ADMIN"})):
            pass
        report = read_scope()
        return {
            "child": run_status(["cat", "/proc/self/status"]),
            "inh": sorted(report.cap_inh),
            "amb": sorted(report.cap_amb),
        }

    got = run_scoped(scope_nobody("CAP_NET_ADMIN"), probe)
    assert got["child"]["CapAmb"] == 0 and got["child"]["CapEff"] == 0
    assert got["inh"] == [] and got["amb"] == []


def test_ambient_capabilities_affect_only_the_calling_thread(root: None) -> None:
    """A thread that already exists sees nothing of another thread's block."""

    def probe() -> dict[str, int]:
        other: dict[str, dict[str, int]] = {}
        go = threading.Event()

        def worker() -> None:
            go.wait(10)
            other["caps"] = run_status(["cat", "/proc/self/status"])

        t = threading.Thread(target=worker)
        t.start()  # created before the block: threads inherit creds at clone()
        with ambient_capabilities(frozenset({"CAP_NET_ADMIN"})):
            go.set()
            t.join()
        return other["caps"]

    got = run_scoped(scope_nobody("CAP_NET_ADMIN"), probe)
    assert got["CapAmb"] == 0 and got["CapEff"] == 0


def test_ambient_capabilities_refuse_caps_not_permitted(root: None) -> None:
    def probe() -> str:
        try:
            with ambient_capabilities(frozenset({"CAP_SYS_ADMIN"})):
                return "raised"
        except ScopingError as e:
            return str(e)

    got = run_scoped(scope_nobody("CAP_NET_ADMIN"), probe)
    assert "CAP_SYS_ADMIN" in got and "permitted" in got


# ---------------------------------------------------------------------------
# Seccomp and Landlock
# ---------------------------------------------------------------------------


def _unshare_uts() -> int:
    return kernel.syscall(kernel.SYSCALLS["unshare"][0], CLONE_NEWUTS)


def _mount_missing() -> int:
    target = kernel.ffi.new("char[]", b"/nonexistent-privsepd-mountpoint")
    fstype = kernel.ffi.new("char[]", b"tmpfs")
    return kernel.syscall(
        kernel.SYSCALLS["mount"][0],
        int(kernel.ffi.cast("intptr_t", fstype)),
        int(kernel.ffi.cast("intptr_t", target)),
        int(kernel.ffi.cast("intptr_t", fstype)),
        0,
        0,
    )


def _seccomp_probe() -> dict[str, Any]:
    return {
        "unshare": outcome(_unshare_uts),
        "mount": outcome(_mount_missing),
        "umount2": outcome(
            lambda: kernel.syscall(
                kernel.SYSCALLS["umount2"][0],
                int(kernel.ffi.cast("intptr_t", kernel.ffi.new("char[]", b"/nonexistent-x"))),
                0,
            )
        ),
        "seccomp": read_scope().seccomp,
    }


def test_seccomp_deny_list_returns_eperm_for_mount_and_unshare(root: None) -> None:
    require_feature(kernel.native_arch() in ("x86_64", "aarch64"), "seccomp arch table")
    scope = Scope(frozenset({"CAP_SYS_ADMIN"}), seccomp_deny=("mount", "unshare"))
    got = run_scoped(scope, _seccomp_probe)
    assert got["unshare"] == "EPERM"
    assert got["mount"] == "EPERM"
    assert got["umount2"] == "ENOENT"  # not listed: reaches the kernel
    assert got["seccomp"] == 2


def test_without_seccomp_the_same_calls_reach_the_kernel(root: None) -> None:
    """Control for the test above: CAP_SYS_ADMIN alone lets both calls through."""
    got = run_scoped(Scope(frozenset({"CAP_SYS_ADMIN"})), _seccomp_probe)
    assert got["unshare"] == "ok"
    assert got["mount"] == "ENOENT"


def test_landlock_read_only_dir_denies_writes_and_reads_outside(files: dict[str, str]) -> None:
    require_feature(kernel.landlock_abi() >= 1, "landlock")
    ro = os.path.join(files["dir"], "ro")
    rw = os.path.join(files["dir"], "rw")
    for d in (ro, rw):
        os.mkdir(d)
    with open(os.path.join(ro, "data"), "w") as f:
        f.write("data\n")
    scope = Scope(frozenset(), landlock=Landlock(read=(ro,), write=(rw,)))

    def probe() -> dict[str, str]:
        return {
            "read_ro": outcome(lambda: read_file(os.path.join(ro, "data"))),
            "write_ro": outcome(lambda: write_file(os.path.join(ro, "data"))),
            "create_ro": outcome(lambda: write_file(os.path.join(ro, "new"))),
            "create_rw": outcome(lambda: write_file(os.path.join(rw, "new"))),
            "read_outside": outcome(lambda: read_file(files["passwd"])),
            "read_etc": outcome(lambda: read_file("/etc/hostname")),
        }

    got = run_scoped(scope, probe)
    assert got == {
        "read_ro": "ok",
        "write_ro": "EACCES",
        "create_ro": "EACCES",
        "create_rw": "ok",
        "read_outside": "EACCES",
        "read_etc": "EACCES",
    }


def test_landlock_missing_path_fails_naming_the_step_and_path(root: None) -> None:
    require_feature(kernel.landlock_abi() >= 1, "landlock")
    scope = Scope(frozenset(), landlock=Landlock(read=("/nonexistent-privsepd-dir",)))
    with pytest.raises(ChildError) as info:
        run_scoped(scope)
    assert info.value.type_name == "ScopingError"
    assert "'landlock'" in info.value.message
    assert "/nonexistent-privsepd-dir" in info.value.message


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


def test_verify_scope_passes_for_the_declared_scope_and_lists_every_mismatch(
    root: None,
) -> None:
    scope = scope_nobody("CAP_NET_ADMIN")

    def probe() -> dict[str, str]:
        report = read_scope()
        verify_scope(scope, report)  # must not raise
        try:
            verify_scope(Scope(frozenset({"CAP_NET_RAW"}), uid=0, gid=0, umask=0o022), report)
        except ScopingError as e:
            return {"mismatch": str(e)}
        return {"mismatch": ""}

    msg = run_scoped(scope, probe)["mismatch"]
    for field in ("cap_eff", "cap_prm", "cap_bnd", "uid", "gid", "umask"):
        assert field in msg, field
    assert "CAP_NET_RAW" in msg


def test_verify_scope_rejects_an_unscoped_process(root: None) -> None:
    with pytest.raises(ScopingError) as info:
        verify_scope(Scope(frozenset({"CAP_NET_ADMIN"})), read_scope())
    for field in ("cap_eff", "cap_bnd", "no_new_privs", "securebits"):
        assert field in str(info.value), field


@needs_python_prctl
def test_read_scope_of_self_matches_proc(root: None) -> None:
    import prctl  # python-prctl: an independent read of the securebits

    report = read_scope()
    fields = status_fields(proc_status("thread-self"))
    assert kernel.cap_mask(report.cap_eff) == int(fields["CapEff"], 16)
    assert kernel.cap_mask(report.cap_bnd) == int(fields["CapBnd"], 16)
    assert report.securebits == prctl.get_securebits()
    assert [report.uid, report.euid, report.suid, report.fsuid] == [
        int(x) for x in fields["Uid"].split()
    ]
    assert report.groups == tuple(sorted(int(x) for x in fields["Groups"].split()))


def test_read_scope_in_a_scoped_child_reports_the_locked_bits(root: None) -> None:
    got = run_scoped(scope_nobody("CAP_NET_ADMIN"), lambda: read_scope().as_dict())
    assert got["securebits"] == 0x2F  # spelled out, not taken from the code under test
    assert got["uid"] == got["euid"] == NOBODY
    assert got["cap_eff"] == ["CAP_NET_ADMIN"] and got["no_new_privs"] is True


def test_enter_scope_without_setpcap_fails_naming_the_step(root: None) -> None:
    """A child that already lost CAP_SETPCAP cannot shrink the bounding set."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            eff, prm, inh = kernel.capget()
            bit = 1 << kernel.CAPABILITIES["CAP_SETPCAP"]
            kernel.capset(eff & ~bit, prm & ~bit, inh)
            try:
                enter_scope(Scope(frozenset()), keep_fds=[w])
                msg = "no error"
            except ScopingError as e:
                msg = str(e)
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert "'bounding_set'" in msg.decode()


# ---------------------------------------------------------------------------
# Pins: each test sets up the state its step must undo, so that removing the
# step (or its check) makes it fail.
# ---------------------------------------------------------------------------


def test_verify_scope_refuses_an_ambient_capability(root: None) -> None:
    scope = scope_nobody("CAP_NET_ADMIN")

    def probe() -> str:
        with ambient_capabilities(frozenset({"CAP_NET_ADMIN"})):
            report = read_scope()
        try:
            verify_scope(scope, report)
        except ScopingError as exc:
            return str(exc)
        return "accepted"

    message = run_scoped(scope, probe)
    assert "cap_amb: extra ['CAP_NET_ADMIN']" in message


def test_supplementary_groups_are_cleared_when_the_scope_lists_none(root: None) -> None:
    def join_groups() -> None:
        os.setgroups([4242, 4243])  # what a service running as root may hold

    def probe() -> dict[str, Any]:
        return {"groups": os.getgroups(), "status": status_fields(proc_status("self"))["Groups"]}

    got = run_scoped(scope_nobody(), probe, prepare=join_groups)
    assert got == {"groups": [], "status": ""}


def test_a_pipe_on_stdin_is_replaced_by_dev_null(root: None) -> None:
    read_end, write_end = os.pipe()

    def pipe_on_stdin() -> None:
        os.dup2(read_end, 0)

    def probe() -> str:
        return os.readlink("/proc/self/fd/0")

    try:
        got = run_scoped(Scope(frozenset()), probe, prepare=pipe_on_stdin)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert got == "/dev/null"


def test_a_helper_whose_parent_already_exited_refuses_to_serve(root: None) -> None:
    """The parent named before the fork is gone by the time the helper scopes."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:
        try:
            os.close(r)
            parent = os.getpid()
            if os.fork() == 0:
                try:
                    deadline = time.monotonic() + 10
                    while os.getppid() == parent and time.monotonic() < deadline:
                        time.sleep(0.005)  # until our parent is gone
                    try:
                        enter_scope(scope_nobody(), keep_fds=[w], parent=parent)
                        msg = "scoped"
                    except ScopingError as exc:
                        msg = str(exc)
                    os.write(w, msg.encode())
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(mid, 0)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    assert f"'pdeathsig' failed: parent {mid} exited during scoping" in msg.decode()
