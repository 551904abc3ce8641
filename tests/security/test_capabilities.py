"""Red team, capabilities: getting more than the scope, or getting at the helper itself.

The attacker reaches for privilege three ways: a privileged binary run from
an entrypoint or an allowed command (setuid root, file capabilities), a
command raising a capability it was not granted, and the kernel's debugging
interfaces aimed at the helper (ptrace, /proc/PID/mem, its descriptors).

The binaries are built for real: copies of cat made setuid root and given
file capabilities (``setcap``) on a filesystem that honours both. The
ptrace and /proc attempts run as uid 65534, the same uid the helper runs
as (the strongest position a service can be in); they never reach the
helper, so no helper record can exist: those tests assert the kernel's
refusal, the helper's intact state and a good call, and say so.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from .attack import PTRACE_ATTACH, PTRACE_SEIZE, argv_has, as_user, ptrace, wait_for
from .conftest import status_of

NOBODY = 65534
CAP_DAC_OVERRIDE = 1 << 1
CAP_DAC_READ_SEARCH = 1 << 2
CAP_NET_ADMIN = 1 << 12
CAP_SYS_ADMIN = 1 << 21


def assert_no_privilege(result: list | tuple | BaseException, what: str) -> None:
    """A run of ``cat /etc/shadow`` that must have failed (or not started)."""
    if isinstance(result, BaseException):
        assert isinstance(result, PermissionError), result
        return
    rc, out, _ = result
    assert rc != 0 and b"root:" not in out, f"ATTACK SUCCEEDED: {what} read /etc/shadow"


def run_or_error(action) -> list | BaseException:
    try:
        return action()
    except Exception as exc:
        return exc


# -- privileged binaries from an entrypoint ----------------------------------------------------


def test_helper_setuid_root_binary_run_by_an_entrypoint_gains_nothing(helper, binaries):
    suid = binaries["suid"]
    rc, out, _ = helper.call("run", [suid, "/proc/self/status"])
    st = status_of(out)
    assert rc == 0 and st["Uid"].split()[1] != "0", st["Uid"]  # euid stays the helper's
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
    assert_no_privilege(helper.call("run", [suid, "/etc/shadow"]), "setuid cat")
    helper.good_call()
    helper.audit.expect(decision="allow", name=":run", args=suid)


def test_helper_file_capability_binary_run_by_an_entrypoint_gains_nothing(helper, binaries):
    fcaps = binaries["fcaps"]
    result = run_or_error(lambda: helper.call("run", [fcaps, "/etc/shadow"]))
    assert_no_privilege(result, "cap_dac_override+ep cat")
    helper.good_call()
    helper.audit.expect(name=":run", args=fcaps)


# -- privileged binaries from an allowed command --------------------------------------------------


def command_rule(name: str, exec_path: str, caps: list[str] = ()) -> str:
    return (
        f'\n[[command]]\ncontext = "t-sec"\nname = "{name}"\nexec = "{exec_path}"\n'
        f'args = [{{ rest = true }}]\nrun_as = "nobody"\ncapabilities = {list(caps)!r}\n'
    ).replace("'", '"')


@pytest.fixture(params=["fork", "spawn", "daemon"])
def with_binaries(request, targets, binaries):
    rules = command_rule("suid-cat", binaries["suid"]) + command_rule(
        "fcaps-cat", binaries["fcaps"], ["CAP_NET_ADMIN"]
    )
    caps = ("CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN")
    return targets.open(request.param, extra_policy=rules, caps=caps), binaries


def test_helper_setuid_root_binary_from_an_allowed_command_gains_nothing(with_binaries):
    helper, binaries = with_binaries
    suid = binaries["suid"]
    rc, out, _ = helper.execute([suid, "/proc/self/status"])
    st = status_of(out)
    assert rc == 0 and st["Uid"].split()[1] == str(NOBODY) and int(st["CapEff"], 16) == 0, st
    assert_no_privilege(helper.execute([suid, "/etc/shadow"]), "setuid cat (command)")
    helper.good_call()
    helper.audit.expect(event="command", decision="allow", argv=argv_has(suid))


def test_helper_file_capability_binary_from_an_allowed_command_gains_nothing(with_binaries):
    helper, binaries = with_binaries
    fcaps = binaries["fcaps"]
    result = run_or_error(lambda: helper.execute([fcaps, "/etc/shadow"]))
    assert_no_privilege(result, "cap_dac_override+ep cat (command)")
    helper.good_call()
    helper.audit.expect(event="command", argv=argv_has(fcaps))


# -- ambient raise ---------------------------------------------------------------------------------

# -- ambient raise ---------------------------------------------------------------------


@pytest.fixture(params=["fork", "spawn", "daemon"])
def with_capraise(request, targets, capraise):
    """A generous rule: capraise with any arguments, granted CAP_NET_ADMIN only."""
    rule = command_rule("capraise", capraise, ["CAP_NET_ADMIN"])
    caps = ("CAP_DAC_READ_SEARCH", "CAP_NET_ADMIN")
    return targets.open(request.param, extra_policy=rule, caps=caps), capraise


@pytest.mark.parametrize("cap", [2, 21], ids=["held-by-helper", "not-held"])
def test_helper_command_cannot_raise_an_ambient_capability_it_was_not_granted(with_capraise, cap):
    helper, capraise = with_capraise
    rc, out, err = helper.execute([capraise, str(cap), "/bin/cat", "/etc/shadow"])
    assert f"ambient raise {cap}: Operation not permitted".encode() in err, err
    assert_no_privilege((rc, out, err), f"ambient raise of capability {cap}")
    rc, out, err = helper.execute([capraise, "12", "/bin/cat", "/proc/self/status"])
    st = status_of(out)
    assert int(st["CapAmb"], 16) == CAP_NET_ADMIN == int(st["CapEff"], 16), st  # the grant holds
    helper.good_call()
    helper.audit.expect(
        event="command", decision="allow", argv=argv_has(capraise, str(cap), "/etc/shadow")
    )


# -- the kernel's doors into the helper ------------------------------------------------------


def helper_pid(helper) -> int:
    return helper.serving_pid()


def test_helper_cannot_be_ptraced_by_a_service_running_as_its_own_uid(helper):
    pid = helper_pid(helper)
    got = as_user(NOBODY, NOBODY, lambda: [ptrace(PTRACE_ATTACH, pid), ptrace(PTRACE_SEIZE, pid)])
    assert got == [-errno.EPERM, -errno.EPERM], f"ATTACK SUCCEEDED: ptrace returned {got}"
    assert "TracerPid:\t0" in open(f"/proc/{pid}/status").read()
    helper.good_call()
    assert helper_pid(helper) == pid  # the same helper, still serving


def _poke(pid: int) -> dict[str, str]:
    """What a service running as the helper's uid can get at through /proc."""
    out = {}
    fd_dir = f"/proc/{pid}/fd"
    for what, action in [
        ("mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1)),
        ("environ", lambda: open(f"/proc/{pid}/environ", "rb").read()),
        ("fd-list", lambda: os.listdir(fd_dir)),
        ("fd-3", lambda: os.open(f"{fd_dir}/3", os.O_WRONLY | os.O_APPEND)),
        ("vm_readv", lambda: _vm_read(pid)),
    ]:
        try:
            action()
            out[what] = "read"
        except OSError as exc:
            out[what] = errno.errorcode.get(exc.errno, str(exc.errno))
    return out


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _vm_read(pid: int) -> None:
    """process_vm_readv of the helper's first mapped page."""
    with open(f"/proc/{pid}/maps") as f:
        start = int(f.readline().split("-")[0], 16)
    buf = ctypes.create_string_buffer(64)
    local, remote = _IoVec(ctypes.addressof(buf), 64), _IoVec(start, 64)
    libc = ctypes.CDLL(None, use_errno=True)
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        raise OSError(ctypes.get_errno(), "process_vm_readv")


def test_helper_memory_and_descriptors_are_closed_to_a_service_running_as_its_uid(helper):
    pid = helper_pid(helper)
    got = as_user(NOBODY, NOBODY, lambda: _poke(pid))
    opened = {k: v for k, v in got.items() if v == "read"}
    assert not opened, f"ATTACK SUCCEEDED: the service read the helper's {opened}"
    helper.good_call()


def test_helper_command_holding_a_capability_cannot_be_ptraced_by_the_service(with_capraise):
    helper, capraise = with_capraise
    pid = helper_pid(helper)
    argv = [capraise, "12", "/bin/sleep", "1.5"]
    runner = threading.Thread(target=lambda: helper.execute(argv), daemon=True)
    runner.start()
    command = wait_for(lambda: _child_named(pid, "sleep"), 5, "the command to start")
    got = as_user(NOBODY, NOBODY, lambda: [ptrace(PTRACE_ATTACH, command), _poke(command)["mem"]])
    assert got[0] == -errno.EPERM and got[1] != "read", f"ATTACK SUCCEEDED on the command: {got}"
    runner.join(10)
    helper.good_call()
    helper.audit.expect(event="command", decision="allow", argv=argv_has("/bin/sleep"))
    assert runner.is_alive() is False


def _child_named(parent: int, name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == name and ppid == parent:
            return int(entry.name)
    time.sleep(0.02)
    return None
