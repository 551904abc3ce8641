"""Declared file access (``files=``), on a real kernel: /proc and real attempts.

Every test starts a real helper (fork mode, as the library does) in a forked
child, usually inside a fresh network namespace with a veth pair named
eth0/eth1, and reads its /proc/PID/status or makes it attempt the access.
Attempts that must fail never write anything if they unexpectedly succeed
(files are opened for append and closed again).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from bpf import run_bpf
from conftest import in_child, proc_status, require_feature

from privsepd import Files
from privsepd.context import Context
from privsepd.errors import PolicyError, PrivsepError, ScopingError
from privsepd.helper import grants, kernel
from privsepd.helper.scoping import Landlock

NOBODY = 65534
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NET_ADMIN = 1 << 12
DAC_OVERRIDE = 1 << 1
DAC_READ_SEARCH = 1 << 2
STATUS_KEYS = ("Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")

_names = itertools.count()


@pytest.fixture(autouse=True)
def _landlock(root):
    require_feature(kernel.landlock_abi() >= 3, "landlock ABI >= 3")


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------


def outcome(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"


def open_for_write(path: str) -> None:
    """Open for append and close: proves write access without changing a byte."""
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Any:
    """A fresh network namespace holding a veth pair eth0 <-> eth1."""
    name = f"privsepd-files-{os.getpid()}-{next(_names)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def link_mtu(ns: str, dev: str = "eth0") -> int:
    out = sh("ip", "-n", ns, "-o", "link", "show", dev)
    return int(re.search(r" mtu (\d+)", out).group(1))


def unshare_mounts() -> None:
    kernel.syscall(kernel.SYSCALLS["unshare"][0], CLONE_NEWNS)
    sh("mount", "--make-rslave", "/")


def enter_netns(name: str) -> None:
    """What ``ip netns exec`` does: join the netns, and see its devices in /sys."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.syscall(kernel.SYSCALLS["setns"][0], fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    unshare_mounts()
    sh("umount", "-l", "/sys")
    sh("mount", "-t", "sysfs", "sysfs", "/sys")


def run_helper(
    files: Files | None,
    probes: dict[str, Callable[[], Any]],
    *,
    caps: tuple[str, ...] = ("CAP_NET_ADMIN",),
    netns: str | None = None,
    before: Callable[[], Any] | None = None,
    after: Callable[[], Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Start a helper with *files* in a child (inside *netns*), run each probe in it.

    Returns ``{"status": ..., "results": {probe: "ok" | errno name}, "after": ...}``,
    or ``{"start_error": "Type: message"}`` when the helper refused to start.
    """

    def child() -> dict[str, Any]:
        if netns is not None:
            enter_netns(netns)
        if before is not None:
            before()
        ctx = Context(f"t-files-{next(_names)}", list(caps), files=files, **context)

        @ctx.entrypoint
        def probe(name: str) -> str:
            return outcome(probes[name])

        try:
            ctx.start()
        except PrivsepError as e:
            return {"start_error": f"{type(e).__name__}: {e}"}
        try:
            status = proc_status(ctx.helper_pid)
            out = {
                "status": {k: status[k] for k in STATUS_KEYS},
                "results": {name: probe(name) for name in probes},
            }
        finally:
            ctx.stop()
        if after is not None:
            out["after"] = after()
        return out

    return in_child(child)


MTU_WRITE = Files(write=["/sys/class/net/*/mtu"])


# ---------------------------------------------------------------------------
# What the helper holds (/proc)
# ---------------------------------------------------------------------------


def test_write_access_adds_dac_override_to_the_declared_caps_and_nothing_else(netns):
    got = run_helper(MTU_WRITE, {}, netns=netns)
    st = got["status"]
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert int(st[key], 16) == NET_ADMIN | DAC_OVERRIDE, key
    assert int(st["CapInh"], 16) == 0
    assert int(st["CapAmb"], 16) == 0
    assert st["Uid"].split() == [str(NOBODY)] * 4
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"  # the side-door filter


def test_read_only_access_adds_only_dac_read_search():
    got = run_helper(Files(read=["/etc/hostname"]), {}, caps=())
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert int(got["status"][key], 16) == DAC_READ_SEARCH, key


def test_scope_and_context_report_the_added_capability():
    ctx = Context("t-files-scope", ["CAP_NET_ADMIN"], files=MTU_WRITE)
    assert ctx.scope().capabilities == {"CAP_NET_ADMIN", "CAP_DAC_OVERRIDE"}
    assert ctx.capabilities == {"CAP_NET_ADMIN"}  # what was declared stays as declared


# ---------------------------------------------------------------------------
# What it can and cannot do (real attempts)
# ---------------------------------------------------------------------------


def test_helper_writes_the_mtu_of_a_veth_in_a_fresh_netns(netns):
    assert link_mtu(netns) == 1500
    got = run_helper(
        MTU_WRITE, {"mtu": lambda: write("/sys/class/net/eth0/mtu", "1400")}, netns=netns
    )
    assert got["results"] == {"mtu": "ok"}
    assert link_mtu(netns) == 1400


def test_without_files_the_same_write_is_refused(netns):
    """Control: the MTU write needs the declaration (sysfs is root-owned 0644)."""
    got = run_helper(None, {"mtu": lambda: write("/sys/class/net/eth0/mtu", "1400")}, netns=netns)
    assert got["results"] == {"mtu": "EACCES"}
    assert link_mtu(netns) == 1500


def test_helper_cannot_write_or_read_etc_shadow(netns):
    got = run_helper(
        MTU_WRITE,
        {"write": lambda: open_for_write("/etc/shadow"), "read": lambda: read("/etc/shadow")},
        netns=netns,
    )
    assert got["results"] == {"write": "EACCES", "read": "EACCES"}


def test_helper_cannot_write_files_outside_the_declared_set(netns, trusted_dir):
    root_file = trusted_dir / "root-0644"
    root_file.write_text("x\n")
    root_file.chmod(0o644)
    got = run_helper(
        MTU_WRITE,
        {
            "sibling_attribute": lambda: open_for_write("/sys/class/net/eth0/tx_queue_len"),
            "root_0644_file": lambda: open_for_write(str(root_file)),
            "create": lambda: os.close(os.open(str(trusted_dir / "new"), os.O_CREAT | os.O_WRONLY)),
            "truncate": lambda: os.truncate(str(root_file), 0),
            "unlink": lambda: os.unlink(str(root_file)),
        },
        netns=netns,
    )
    assert set(got["results"].values()) == {"EACCES"}, got["results"]
    assert root_file.read_text() == "x\n"
    assert not (trusted_dir / "new").exists()


def test_reading_an_undeclared_root_only_file_fails_while_a_declared_one_reads(trusted_dir):
    declared, undeclared = trusted_dir / "declared", trusted_dir / "undeclared"
    for path in (declared, undeclared):
        path.write_text("secret\n")
        path.chmod(0o600)
    got = run_helper(
        Files(read=[str(declared)]),
        {
            "declared": lambda: read(str(declared)),
            "declared_write": lambda: open_for_write(str(declared)),
            "undeclared": lambda: read(str(undeclared)),
            "list_dir": lambda: os.listdir(str(trusted_dir)),
        },
        caps=(),
    )
    assert got["results"] == {
        "declared": "ok",
        "declared_write": "EACCES",  # CAP_DAC_READ_SEARCH only
        "undeclared": "EACCES",
        "list_dir": "EACCES",
    }


def test_a_declared_directory_is_a_whole_tree(trusted_dir):
    tree, other = trusted_dir / "tree", trusted_dir / "other"
    for d in (tree, other):
        (d / "sub").mkdir(parents=True)
    got = run_helper(
        Files(write=[str(tree)]),
        {
            "create_deep": lambda: write(str(tree / "sub" / "new.conf"), "a\n"),
            "rename_within": lambda: os.rename(str(tree / "sub" / "new.conf"), str(tree / "n")),
            "create_in_other": lambda: write(str(other / "sub" / "new.conf"), "a\n"),
            "execute": lambda: subprocess.run(["/bin/true"], check=True),
        },
        caps=(),
    )
    assert got["results"] == {
        "create_deep": "ok",
        "rename_within": "ok",
        "create_in_other": "EACCES",
        "execute": "EACCES",  # no execute right anywhere
    }
    created = tree / "n"
    assert created.read_text() == "a\n"
    assert created.stat().st_uid == NOBODY


def test_proc_sys_net_tree_is_writable_and_the_rest_of_proc_sys_is_not(netns):
    conf = "/proc/sys/net/ipv4/conf/eth0/forwarding"
    got = run_helper(
        Files(write=["/proc/sys/net"]),
        {
            "forwarding": lambda: write(conf, "1"),
            "vm_read": lambda: read("/proc/sys/vm/swappiness"),
            "proc_self": lambda: read("/proc/self/status"),
        },
        netns=netns,
        after=lambda: read(conf).decode().strip(),
    )
    assert got["results"] == {"forwarding": "ok", "vm_read": "EACCES", "proc_self": "EACCES"}
    assert got["after"] == "1"


def test_entrypoint_cannot_import_after_the_helper_started():
    name = next(m for m in ("tabnanny", "wave", "sndhdr", "mailcap") if m not in sys.modules)
    got = run_helper(MTU_WRITE, {"import": lambda: __import__(name)})
    assert got["results"] == {"import": "EACCES"}


# ---------------------------------------------------------------------------
# Side doors: DAC uses Landlock does not see
# ---------------------------------------------------------------------------


@pytest.fixture
def root_socket(trusted_dir):
    """A listening Unix socket only root may connect to (0600)."""
    path = str(trusted_dir / "root.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(4)
    yield path
    listener.close()


def connect(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)


def test_dac_override_alone_reaches_a_root_only_unix_socket(root_socket):
    """Control: this is the door the side-door filter closes."""
    got = run_helper(None, {"connect": lambda: connect(root_socket)}, caps=("CAP_DAC_OVERRIDE",))
    assert got["results"] == {"connect": "ok"}


def _handle_open(path: str) -> None:
    """open_by_handle_at: the classic CAP_DAC_READ_SEARCH escape hatch."""
    libc = ctypes.CDLL(None, use_errno=True)
    handle = ctypes.create_string_buffer(8 + 128)
    ctypes.c_uint.from_buffer(handle).value = 128
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, path.encode(), handle, ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    mount_fd = os.open("/", getattr(os, "O_PATH", 0o10000000))
    try:
        fd = libc.open_by_handle_at(mount_fd, handle, os.O_RDONLY)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "open_by_handle_at")
        os.close(fd)
    finally:
        os.close(mount_fd)


def _bad_args_call(name: str) -> Callable[[], Any]:
    """The call with invalid arguments: EPERM if filtered, else EBADF/EFAULT/EINVAL."""
    return lambda: kernel.syscall(kernel.syscall_numbers([name])[0], -1, -1, -1, -1, -1, -1)


def test_side_doors_answer_eperm(trusted_dir, root_socket):
    declared = trusted_dir / "declared"
    declared.write_text("x\n")
    probes = {
        "unix_socket": lambda: connect(root_socket),
        "unix_socketpair": lambda: socket.socketpair(socket.AF_UNIX).__class__,
        "setxattr": lambda: os.setxattr(str(declared), "user.privsepd", b"1"),
        "removexattr": lambda: os.removexattr(str(declared), "user.privsepd"),
        "utime_now": lambda: os.utime(str(declared)),
        "open_by_handle_at": lambda: _handle_open(str(declared)),
        "inet_socket": lambda: socket.socket(socket.AF_INET).close(),  # not a side door
    }
    probes.update({f"nr:{n}": _bad_args_call(n) for n in grants.SIDE_DOOR_SYSCALLS})
    got = run_helper(Files(write=[str(declared)]), probes, caps=())
    results = got["results"]
    assert results.pop("inet_socket") == "ok"
    assert {k: v for k, v in results.items() if v != "EPERM"} == {}


def test_side_door_syscall_numbers_are_real_system_calls_here():
    """Called unfiltered with invalid arguments, none of them is ENOSYS."""
    missing = [n for n in grants.SIDE_DOOR_SYSCALLS if outcome(_bad_args_call(n)) == "ENOSYS"]
    newer = {"setxattrat", "removexattrat"}  # Linux 6.13
    release = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    assert set(missing) <= (newer if release < (6, 13) else set())


def test_socket_family_rule_is_checked_in_a_bpf_interpreter():
    """socket(AF_UNIX)/socketpair(AF_UNIX) EPERM; other families and calls pass."""
    for arch, column in (("x86_64", 0), ("aarch64", 1)):
        prog = kernel.seccomp_deny_program([], arch, socket_families=[socket.AF_UNIX])
        audit = kernel._ARCHES[arch][1]
        eperm = kernel.SECCOMP_RET_ERRNO | errno.EPERM
        for call in ("socket", "socketpair"):
            nr = kernel.SYSCALLS[call][column]
            assert run_bpf(prog, nr, audit, socket.AF_UNIX) == eperm
            # Only the low 32 bits count, as in the kernel (the arg is an int).
            assert run_bpf(prog, nr, audit, (1 << 32) | socket.AF_UNIX) == eperm
            assert run_bpf(prog, nr, audit, socket.AF_INET) == kernel.SECCOMP_RET_ALLOW
            assert run_bpf(prog, nr, audit, socket.AF_NETLINK) == kernel.SECCOMP_RET_ALLOW
        other = kernel.SYSCALLS["setns"][column]
        assert run_bpf(prog, other, audit, socket.AF_UNIX) == kernel.SECCOMP_RET_ALLOW


# ---------------------------------------------------------------------------
# Declarations that are refused, and why
# ---------------------------------------------------------------------------


def test_a_path_below_a_directory_a_user_can_write_is_refused(trusted_dir):
    svc = trusted_dir / "svc"
    svc.mkdir()
    (svc / "conf").write_text("x\n")
    os.chown(svc, NOBODY, NOBODY)
    got = run_helper(Files(write=[str(svc / "conf")]), {}, caps=())
    assert "refusing to grant write access" in got["start_error"]
    assert str(svc) in got["start_error"]


def test_a_symlink_planted_by_a_user_cannot_redirect_the_grant(trusted_dir):
    svc = trusted_dir / "svc"
    svc.mkdir()
    os.chown(svc, NOBODY, NOBODY)
    os.symlink("/etc", svc / "data")  # what a compromised service would do
    os.lchown(svc / "data", NOBODY, NOBODY)
    got = run_helper(Files(write=[str(svc / "data")]), {}, caps=())
    assert "refusing to grant write access" in got["start_error"]


def test_a_root_symlink_in_a_root_directory_is_followed_like_sysfs(trusted_dir):
    target = trusted_dir / "real"
    target.write_text("x\n")
    target.chmod(0o600)
    os.symlink("real", trusted_dir / "link")
    got = run_helper(
        Files(read=[str(trusted_dir / "link")]), {"read": lambda: read(str(target))}, caps=()
    )
    assert got["results"] == {"read": "ok"}


def test_a_missing_declared_path_is_refused_naming_it(trusted_dir):
    missing = str(trusted_dir / "absent")
    got = run_helper(Files(write=[missing]), {}, caps=())
    assert "does not exist" in got["start_error"] and missing in got["start_error"]


def test_a_glob_whose_literal_prefix_is_missing_is_refused():
    got = run_helper(Files(write=["/sys/class/nett/*/mtu"]), {}, caps=())
    assert "/sys/class/nett is not an existing directory" in got["start_error"]


def test_a_glob_may_match_nothing_and_the_helper_is_still_confined(netns):
    got = run_helper(
        Files(write=["/sys/class/net/nomatch*/mtu"]),
        {"mtu": lambda: open_for_write("/sys/class/net/eth0/mtu")},
        netns=netns,
    )
    assert got["results"] == {"mtu": "EACCES"}


def test_a_tree_needs_protected_hardlinks(trusted_dir):
    fake = trusted_dir / "protected_hardlinks"
    fake.write_text("0\n")

    def pretend_hardlinks_unprotected() -> None:
        # In a private mount namespace only: the host's setting is untouched.
        unshare_mounts()
        sh("mount", "--bind", str(fake), "/proc/sys/fs/protected_hardlinks")
        assert read("/proc/sys/fs/protected_hardlinks") == b"0\n"

    tree = run_helper(
        Files(write=[str(trusted_dir)]), {}, caps=(), before=pretend_hardlinks_unprotected
    )
    assert "fs.protected_hardlinks = 1" in tree["start_error"]
    one_file = run_helper(
        Files(write=[str(fake)]), {}, caps=(), before=pretend_hardlinks_unprotected
    )
    assert "start_error" not in one_file


def test_an_interface_created_after_start_is_covered_only_after_a_restart(netns):
    def child() -> list[str]:
        enter_netns(netns)
        ctx = Context("t-files-late", ["CAP_NET_ADMIN"], files=MTU_WRITE)

        @ctx.entrypoint
        def set_mtu(dev: str) -> str:
            return outcome(lambda: write(f"/sys/class/net/{dev}/mtu", "1300"))

        ctx.start()
        try:
            sh("ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1")
            before = set_mtu("late0")
            ctx.stop()
            after = set_mtu("late0")  # the next call starts a fresh helper
        finally:
            ctx.stop()
        return [before, after]

    assert in_child(child) == ["EACCES", "ok"]
    assert link_mtu(netns, "late0") == 1300


def test_files_and_commands_in_one_context_are_refused():
    ctx = Context("t-files-cmd", files=MTU_WRITE, command_runner=lambda: lambda argv, kw: None)
    with pytest.raises(PolicyError, match="cannot execute programs"):
        ctx.start()


# ---------------------------------------------------------------------------
# Without Landlock
# ---------------------------------------------------------------------------


def hide_landlock(err: int = errno.ENOSYS) -> None:
    """Make this process's kernel look like one without Landlock.

    A seccomp filter answers the three Landlock system calls with ENOSYS,
    which is exactly what a kernel built without Landlock returns (or
    EOPNOTSUPP: Landlock built in but disabled at boot). Children (the
    helper) inherit it.
    """
    arch = kernel.native_arch()
    audit = kernel._ARCHES[arch][1]
    enosys = kernel.SECCOMP_RET_ERRNO | err
    prog: list[tuple] = [
        (kernel.BPF_LD_W_ABS, 0, 0, 4),
        (kernel.BPF_JEQ_K, 1, 0, audit),
        (kernel.BPF_RET_K, 0, 0, kernel.SECCOMP_RET_ALLOW),
        (kernel.BPF_LD_W_ABS, 0, 0, 0),
    ]
    for nr in (kernel.NR_LANDLOCK_CREATE_RULESET, kernel.NR_LANDLOCK_ADD_RULE):
        prog += [(kernel.BPF_JEQ_K, 0, 1, nr), (kernel.BPF_RET_K, 0, 0, enosys)]
    prog += [
        (kernel.BPF_JEQ_K, 0, 1, kernel.NR_LANDLOCK_RESTRICT_SELF),
        (kernel.BPF_RET_K, 0, 0, enosys),
        (kernel.BPF_RET_K, 0, 0, kernel.SECCOMP_RET_ALLOW),
    ]
    filters = kernel.ffi.new("struct sock_filter[]", prog)
    fprog = kernel.ffi.new("struct sock_fprog *", (len(prog), filters))
    kernel.set_no_new_privs()
    kernel._prctl(
        kernel.PR_SET_SECCOMP, kernel.SECCOMP_MODE_FILTER, int(kernel.ffi.cast("uintptr_t", fprog))
    )
    assert kernel.landlock_abi() == 0


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EOPNOTSUPP], ids=["absent", "disabled"])
def test_without_landlock_the_helper_refuses_to_start_and_says_how_to_accept(err):
    got = run_helper(MTU_WRITE, {}, before=lambda: hide_landlock(err))
    error = got["start_error"]
    assert "no Landlock" in error
    assert 'without_landlock = "allow"' in error
    assert "CAP_DAC_OVERRIDE" in error


def test_without_landlock_allow_starts_with_the_wider_grant_it_accepted():
    got = run_helper(
        Files(write=["/sys/class/net/*/mtu"], without_landlock="allow"),
        {"shadow": lambda: read("/etc/shadow"), "unix": lambda: socket.socket(socket.AF_UNIX)},
        before=hide_landlock,
    )
    assert int(got["status"]["CapEff"], 16) == NET_ADMIN | DAC_OVERRIDE
    # Unconfined: it can read every file. That is what "allow" accepts.
    assert got["results"] == {"shadow": "ok", "unix": "EPERM"}


def test_write_access_needs_landlock_abi_3_read_access_abi_1():
    write_files, read_files = Files(write=["/x"]), Files(read=["/x"])
    with pytest.raises(ScopingError, match="has Landlock ABI 2.*needs ABI >= 3"):
        grants.landlock_available(write_files, 2)
    assert grants.landlock_available(write_files, 3)
    assert grants.landlock_available(read_files, 1)
    with pytest.raises(ScopingError, match="no Landlock"):
        grants.landlock_available(read_files, 0)
    allow = Files(write=["/x"], without_landlock="allow")
    assert grants.landlock_available(allow, 2) is True  # confines what it can
    assert grants.landlock_available(allow, 0) is False


def test_glob_expansion_follows_shell_rules(trusted_dir):
    for name in ("a", "b", ".hidden"):
        (trusted_dir / name).mkdir()
        (trusted_dir / name / "mtu").write_text("1\n")
    (trusted_dir / "file").write_text("1\n")
    got = grants.expand(f"{trusted_dir}/*/mtu")
    assert got == [f"{trusted_dir}/a/mtu", f"{trusted_dir}/b/mtu"]
    assert grants.expand(f"{trusted_dir}/.*/mtu") == [f"{trusted_dir}/.hidden/mtu"]
    assert grants.expand(f"{trusted_dir}/[ab]") == [f"{trusted_dir}/a", f"{trusted_dir}/b"]


def test_a_glob_matching_too_many_paths_is_refused(trusted_dir, monkeypatch):
    monkeypatch.setattr(grants, "MAX_GRANTS", 3)
    for i in range(5):
        (trusted_dir / f"f{i}").write_text("")
    with pytest.raises(ScopingError, match="matches more than 3 paths"):
        grants.expand(f"{trusted_dir}/f*")


def test_landlock_proof_fails_if_the_ruleset_did_not_apply(trusted_dir):
    """prove_confined is a real read-back: unconfined, it refuses."""
    g = grants.FileGrants(Files(read=[str(trusted_dir)]), confine=True)
    with pytest.raises(ScopingError, match="did not take effect"):
        g.prove_confined()


def test_a_glob_match_that_vanished_before_it_was_opened_is_skipped(trusted_dir, monkeypatch):
    """An interface deleted between expansion and open must not stop the helper."""
    present, gone = str(trusted_dir / "a"), str(trusted_dir / "b")
    (trusted_dir / "a").write_text("")
    monkeypatch.setattr(grants, "expand", lambda pattern: [present, gone])
    opened = grants.open_grants(Files(write=[f"{trusted_dir}/*"]))
    try:
        assert [g.path for _, g in opened.rules] == [present]
    finally:
        opened.close()
    monkeypatch.undo()
    with pytest.raises(ScopingError, match="does not exist"):
        grants.open_grants(Files(write=[gone]))


def test_links_and_symlinks_inside_a_declared_tree_do_not_extend_it(trusted_dir):
    """The ways to bring an outside file into a writable tree, each refused."""
    tree, secret = trusted_dir / "tree", trusted_dir / "secret"
    tree.mkdir()
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert os.stat(tree).st_dev == os.stat(secret).st_dev  # else EXDEV proves nothing
    os.symlink(str(secret), tree / "link")  # as if planted beforehand
    got = run_helper(
        Files(write=[str(tree)]),
        {
            "write_via_symlink": lambda: open_for_write(str(tree / "link")),
            "read_via_symlink": lambda: read(str(tree / "link")),
            "hardlink_in": lambda: os.link(str(secret), str(tree / "hard")),
            "rename_in": lambda: os.rename(str(secret), str(tree / "moved")),
        },
        caps=(),
    )
    assert got["results"]["write_via_symlink"] == "EACCES"
    assert got["results"]["read_via_symlink"] == "EACCES"
    # Landlock refuses a link or rename that would give the file more rights
    # than it has where it is (EXDEV: "copy it instead", which reading forbids).
    assert got["results"]["hardlink_in"] in ("EACCES", "EXDEV")
    assert got["results"]["rename_in"] in ("EACCES", "EXDEV")
    assert sorted(os.listdir(tree)) == ["link"]
    assert secret.read_text() == "s3cret\n"


def test_dac_override_alone_hardlinks_a_root_only_file_anywhere(trusted_dir):
    """Control for the test above: without Landlock the link is made."""
    secret = trusted_dir / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    got = run_helper(
        None,
        {"hardlink_in": lambda: os.link(str(secret), str(trusted_dir / "hard"))},
        caps=("CAP_DAC_OVERRIDE",),
    )
    assert got["results"] == {"hardlink_in": "ok"}


def test_files_combine_with_a_deny_list_that_holds_prctl():
    got = run_helper(
        Files(read=["/etc/hostname"]),
        {"hostname": lambda: read("/etc/hostname"), "shadow": lambda: read("/etc/shadow")},
        caps=(),
        seccomp_deny=["prctl", "mount"],
    )
    assert got["results"] == {"hostname": "ok", "shadow": "EACCES"}


def test_files_and_a_landlock_sandbox_stack_a_path_must_be_in_both(trusted_dir):
    both, files_only = trusted_dir / "both", trusted_dir / "files-only"
    for path in (both, files_only):
        path.write_text("x\n")
        path.chmod(0o600)
    got = run_helper(
        Files(read=[str(both), str(files_only)]),
        {"both": lambda: read(str(both)), "files_only": lambda: read(str(files_only))},
        caps=(),
        landlock=Landlock(read=(str(both),)),
    )
    assert got["results"] == {"both": "ok", "files_only": "EACCES"}
