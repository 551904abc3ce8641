"""Tests of privsepd.helper.kernel: tables against the kernel/headers, BPF semantics, raw calls."""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any

import pytest
from bpf import run_bpf
from conftest import in_child, require_feature

from privsepd.errors import ScopingError
from privsepd.helper import kernel

X86_64_HEADER = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
GENERIC_HEADER = "/usr/include/asm-generic/unistd.h"
AUDIT_ARCH_I386 = 0x40000003


def header_numbers(path: str) -> dict[str, int]:
    require_feature(os.path.exists(path), f"kernel headers ({path}, package linux-libc-dev)")
    with open(path) as f:
        text = f.read()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)\b", text)}


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def test_capability_table_covers_every_capability_of_this_kernel() -> None:
    assert max(kernel.CAPABILITIES.values()) >= kernel.last_cap()
    assert kernel.CAPABILITIES["CAP_NET_ADMIN"] == 12
    assert kernel.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40


def test_cap_names_round_trips_and_names_unknown_bits() -> None:
    names = frozenset({"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})
    assert kernel.cap_names(kernel.cap_mask(names)) == names
    assert kernel.cap_names(1 << 63) == {"CAP_BIT_63"}


# Newer than some linux-libc-dev (Linux 6.13): absent from older headers,
# present there they must match; tests/helper/test_grants.py checks on the
# running kernel that the numbers are real system calls.
NEWER_THAN_HEADERS = frozenset({"setxattrat", "removexattrat"})


def _table_mismatches(nums: dict[str, int], column: int) -> dict:
    return {
        n: (row[column], nums.get(n))
        for n, row in kernel.SYSCALLS.items()
        if nums.get(n) != row[column] and not (n in NEWER_THAN_HEADERS and n not in nums)
    }


def test_x86_64_syscall_table_matches_kernel_headers() -> None:
    assert not _table_mismatches(header_numbers(X86_64_HEADER), 0)


def test_aarch64_syscall_table_matches_generic_headers() -> None:
    assert not _table_mismatches(header_numbers(GENERIC_HEADER), 1)


def test_unknown_syscall_name_is_scoping_error_naming_it() -> None:
    with pytest.raises(ScopingError, match="frobnicate"):
        kernel.syscall_numbers(["mount", "frobnicate"], "x86_64")


def test_syscall_absent_on_arch_is_skipped() -> None:
    assert kernel.syscall_numbers(["iopl", "mount"], "aarch64") == [40]


# ---------------------------------------------------------------------------
# Seccomp program semantics (both arches, without installing anything)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_program_denies_listed_allows_rest_kills_foreign_arch(arch: str) -> None:
    prog = kernel.seccomp_deny_program(["mount", "unshare", "bpf"], arch)
    audit = kernel._ARCHES[arch][1]
    col = kernel._ARCHES[arch][0]
    eperm = kernel.SECCOMP_RET_ERRNO | errno.EPERM
    for name in ("mount", "unshare", "bpf"):
        assert run_bpf(prog, kernel.SYSCALLS[name][col], audit) == eperm, name
    for name in ("umount2", "setns", "ptrace"):
        assert run_bpf(prog, kernel.SYSCALLS[name][col], audit) == kernel.SECCOMP_RET_ALLOW
    mount_nr = kernel.SYSCALLS["mount"][col]
    other = kernel.AUDIT_ARCH_AARCH64 if arch == "x86_64" else kernel.AUDIT_ARCH_X86_64
    for foreign in (AUDIT_ARCH_I386, other):
        assert run_bpf(prog, mount_nr, foreign) == kernel.SECCOMP_RET_KILL_PROCESS
        assert run_bpf(prog, 0, foreign) == kernel.SECCOMP_RET_KILL_PROCESS


def test_seccomp_program_denies_x32_abi_on_x86_64() -> None:
    prog = kernel.seccomp_deny_program(["mount"], "x86_64")
    nr = kernel.X32_SYSCALL_BIT | 39  # x32 getpid
    assert run_bpf(prog, nr, kernel.AUDIT_ARCH_X86_64) == kernel.SECCOMP_RET_ERRNO | errno.EPERM


def test_installed_filter_returns_eperm_for_x32_and_listed_calls(root: None) -> None:
    require_feature(kernel.native_arch() == "x86_64", "x86_64 (x32 ABI check)")

    def probe() -> dict[str, Any]:
        kernel.set_no_new_privs()
        kernel.seccomp_install_deny(["unshare"])
        out: dict[str, Any] = {"mode": kernel.get_seccomp()}
        for key, nr, arg in (
            ("x32_getpid", kernel.X32_SYSCALL_BIT | 39, 0),
            ("unshare", kernel.SYSCALLS["unshare"][0], 0),
            ("getpid", 39, 0),
        ):
            try:
                out[key] = kernel.syscall(nr, arg)
            except OSError as e:
                out[key] = errno.errorcode[e.errno]
        out["pid"] = os.getpid()
        return out

    got = in_child(probe)
    assert got["mode"] == kernel.SECCOMP_MODE_FILTER
    assert got["x32_getpid"] == "EPERM"
    assert got["unshare"] == "EPERM"
    assert got["getpid"] == got["pid"]


# ---------------------------------------------------------------------------
# Raw calls
# ---------------------------------------------------------------------------


def test_capget_matches_proc_status() -> None:
    eff, prm, inh = kernel.capget()
    with open("/proc/thread-self/status") as f:
        fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    assert (eff, prm, inh) == tuple(int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapInh"))


def test_close_fds_keeps_only_listed_fds() -> None:
    keep_r, keep_w = os.pipe()
    extra = os.open("/dev/null", os.O_RDONLY)
    try:

        def probe() -> list[int]:
            kernel.close_fds([keep_w, 1000])  # 1000 is not open: harmless
            alive = []
            for fd in range(3, 1100):
                try:
                    os.fstat(fd)
                    alive.append(fd)
                except OSError:
                    pass
            return alive

        # in_child's own pipe fd is closed too, so report through keep_w instead.
        r = os.fork()
        if r == 0:
            try:
                os.close(keep_r)
                os.write(keep_w, json.dumps(probe()).encode())
            finally:
                os._exit(0)
        os.close(keep_w)
        buf = b""
        while chunk := os.read(keep_r, 4096):
            buf += chunk
        os.waitpid(r, 0)
    finally:
        os.close(keep_r)
        os.close(extra)
    assert json.loads(buf) == [keep_w]


def test_pdeathsig_and_no_new_privs_round_trip(root: None) -> None:
    def probe() -> list[Any]:
        kernel.set_pdeathsig(9)
        before = kernel.get_no_new_privs()
        kernel.set_no_new_privs()
        return [kernel.get_pdeathsig(), before, kernel.get_no_new_privs()]

    assert in_child(probe) == [9, False, True]


def test_ambient_raise_and_lower_on_this_thread(root: None) -> None:
    def probe() -> list[bool]:
        eff, prm, inh = kernel.capget()
        cap = kernel.CAPABILITIES["CAP_NET_ADMIN"]
        kernel.capset(eff, prm, inh | 1 << cap)
        kernel.ambient_raise(cap)
        raised = kernel.ambient_is_set(cap)
        kernel.ambient_lower(cap)
        return [raised, kernel.ambient_is_set(cap)]

    assert in_child(probe) == [True, False]


def test_landlock_abi_reported(root: None) -> None:
    abi = kernel.landlock_abi()
    require_feature(abi >= 1, "landlock")
    assert kernel.landlock_fs_rights(abi) & kernel.LL_READ == kernel.LL_READ
    assert kernel.landlock_fs_rights(1) == (1 << 13) - 1


def test_landlock_restrict_denies_everything_not_granted(root: None) -> None:
    require_feature(kernel.landlock_abi() >= 1, "landlock")

    def probe() -> list[str]:
        kernel.set_no_new_privs()
        kernel.landlock_restrict(read=["/etc/passwd"], write=[])
        out = []
        for path in ("/etc/passwd", "/etc/hostname"):
            try:
                with open(path):
                    out.append("ok")
            except OSError as e:
                out.append(errno.errorcode[e.errno])
        return out

    assert in_child(probe) == ["ok", "EACCES"]
