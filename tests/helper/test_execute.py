"""``ctx.execute`` through a real scoped helper, and CommandRunner details.

Each command reports from inside itself (``/proc/self/status``, ``env``)
what it actually ran with.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import textwrap
import time

import pytest
from conftest import needs_posix_spawn, require_feature, require_root

from privsepd import CallTimeout, DeniedError
from privsepd.context import Context
from privsepd.helper.execute import CommandRunner, runner_factory
from privsepd.policy.index import FilterIndex
from privsepd.policy.loader import load_policy
from privsepd.policy.rootwrap import parse_filters

pytestmark = needs_posix_spawn


FILTERS = """
[Filters]
status: RegExpFilter, /bin/cat, root, cat, /proc/self/status
status_nobody: RegExpFilter, /usr/bin/tail, nobody, tail, -n, 60, /proc/self/status
cat: RegExpFilter, /bin/cat, root, cat
env: RegExpFilter, /usr/bin/env, root, env
sh: CommandFilter, /bin/sh, root
true: CommandFilter, /bin/true, root
"""


def ini_index(text: str = FILTERS) -> FilterIndex:
    return FilterIndex(parse_filters(textwrap.dedent(text), "test.filters"), ["/bin", "/usr/bin"])


def status(out: bytes) -> dict[str, str]:
    lines = out.decode().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


@pytest.fixture
def root_ctx(root):
    """A stay_root helper with no capabilities, running INI rules."""
    ctx = Context("t-exec-root", stay_root=True, command_runner=runner_factory(ini_index()))
    yield ctx
    ctx.stop()


@pytest.fixture
def setuid_ctx(root):
    """A helper as nobody that may switch users (CAP_SETUID/SETGID) for commands."""
    ctx = Context(
        "t-exec-setuid",
        ["CAP_SETUID", "CAP_SETGID"],
        command_runner=runner_factory(ini_index()),
    )
    yield ctx
    ctx.stop()


def test_allowed_command_returns_rc_stdout_stderr(root_ctx):
    rc, out, err = root_ctx.execute(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (rc, out, err) == (3, b"out\n", b"err\n")


def test_input_is_the_commands_stdin(root_ctx):
    assert root_ctx.execute(["cat"], input=b"hello") == (0, b"hello", b"")


def test_denied_command_raises_denied_error_with_the_reason(root_ctx):
    with pytest.raises(DeniedError, match=r"\['ls', '/root'\] denied: no filter matched"):
        root_ctx.execute(["ls", "/root"])


def test_denial_names_the_refused_rule_for_a_deviation(root_ctx):
    with pytest.raises(DeniedError, match="regex-anchor"):
        root_ctx.execute(["cat", "/proc/self/status\n"])


def test_killed_command_returns_minus_the_signal(root_ctx):
    rc, _, _ = root_ctx.execute(["sh", "-c", "kill -9 $$"])
    assert rc == -9


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before or during the read
        return False


def test_timeout_kills_the_whole_process_group(root_ctx, trusted_dir):
    pids = trusted_dir / "pids"
    script = f"sleep 100 & echo $$ $! > {pids}; sleep 100"
    with pytest.raises(CallTimeout, match="process group"):
        root_ctx.execute(["sh", "-c", script], timeout=1.0)
    shell, background = (int(p) for p in pids.read_text().split())
    for _ in range(500):  # SIGKILL is asynchronous: let the kernel finish the job
        if not (_alive(shell) or _alive(background)):
            break
        time.sleep(0.01)
    assert not _alive(shell) and not _alive(background)


def test_helper_environment_never_reaches_the_command(root, monkeypatch):
    # monkeypatch restores both afterwards (PYTHONPATH may well have been set before).
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent-privsepd.so")
    monkeypatch.setenv("PYTHONPATH", "/evil")
    ctx = Context("t-exec-env", stay_root=True, command_runner=runner_factory(ini_index()))
    try:
        rc, out, err = ctx.execute(["env"])
    finally:
        ctx.stop()
    names = {line.split("=", 1)[0] for line in out.decode().splitlines()}
    assert rc == 0, err
    assert names == {"PATH", "HOME", "USER", "LOGNAME"}


def test_caller_env_outside_the_locale_is_judged_as_env_prefix_and_denied(root_ctx):
    with pytest.raises(DeniedError, match=r"\['env', 'LD_PRELOAD=/x.so', 'true'\]"):
        root_ctx.execute(["true"], env={"LD_PRELOAD": "/x.so"})


def test_caller_locale_reaches_the_command(root_ctx):
    _, out, _ = root_ctx.execute(["env"], env={"LC_ALL": "C"})
    assert b"LC_ALL=C\n" in out


def test_ini_rule_command_gets_no_capability_by_default(root):
    # The helper holds CAP_NET_ADMIN: an INI rule's command must not get it.
    ctx = Context(
        "t-exec-ininocaps",
        ["CAP_NET_ADMIN"],
        stay_root=True,
        command_runner=runner_factory(ini_index()),
    )
    try:
        st = status(ctx.execute(["cat", "/proc/self/status"])[1])
    finally:
        ctx.stop()
    assert st["Uid"].split() == ["0"] * 4
    assert int(st["CapEff"], 16) == int(st["CapAmb"], 16) == int(st["CapPrm"], 16) == 0


def test_ini_capabilities_opt_in_grants_them_as_ambient(root):
    factory = runner_factory(ini_index(), ini_capabilities=["CAP_NET_ADMIN"])
    ctx = Context("t-exec-inicaps", ["CAP_NET_ADMIN"], stay_root=True, command_runner=factory)
    try:
        st = status(ctx.execute(["cat", "/proc/self/status"])[1])
    finally:
        ctx.stop()
    assert int(st["CapEff"], 16) == int(st["CapAmb"], 16) == 1 << 12


@pytest.fixture(scope="module")
def account():
    """A real user (not the helper's) with a primary group and two supplementary groups."""
    require_root()
    name = f"psd-t{os.getpid()}"
    groups = [f"{name}-a", f"{name}-b"]
    for group in (name, *groups):
        subprocess.run(["groupadd", group], check=True, capture_output=True)
    subprocess.run(
        [
            "useradd",
            "-M",
            "-N",
            "-g",
            name,
            "-G",
            ",".join(groups),
            "-s",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        capture_output=True,
    )
    try:
        pw = pwd.getpwnam(name)
        extra = sorted(grp.getgrnam(g).gr_gid for g in groups)
        yield pw, extra
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        for group in (*groups, name):
            subprocess.run(["groupdel", group], capture_output=True)


def test_run_as_rule_runs_with_the_users_uid_gid_and_groups(account):
    pw, extra = account
    rules = "[Filters]\nstatus: RegExpFilter, /usr/bin/tail, "
    rules += f"{pw.pw_name}, tail, -n, 60, /proc/self/status\n"
    ctx = Context(
        "t-exec-runas",
        ["CAP_SETUID", "CAP_SETGID"],  # the helper itself runs as nobody
        command_runner=runner_factory(ini_index(rules)),
    )
    try:
        rc, out, err = ctx.execute(["tail", "-n", "60", "/proc/self/status"])
    finally:
        ctx.stop()
    assert rc == 0, err
    st = status(out)
    assert st["Uid"].split() == [str(pw.pw_uid)] * 4 != ["65534"] * 4
    assert st["Gid"].split() == [str(pw.pw_gid)] * 4
    assert sorted(int(g) for g in st["Groups"].split()) == sorted({pw.pw_gid, *extra})
    assert len(extra) == 2 and int(st["CapEff"], 16) == 0


def test_native_rule_without_run_as_runs_as_the_helper_even_with_cap_setuid(native_ctx):
    # The helper holds CAP_SETUID and CAP_SETGID: a rule that names no user
    # must still not get uid 0 back.
    rc, out, err = native_ctx.execute(["/bin/cat", "/proc/self/status"])
    assert rc == 0, err
    st = status(out)
    assert st["Uid"].split() == ["65534"] * 4  # the helper's own user (nobody), not root
    assert st["Gid"].split() == ["65534"] * 4


def test_explain_and_runtime_agree_on_the_user_of_a_rule_without_run_as(native_ctx, capsys):
    from privsepd.authoring.cli import main

    policy = native_ctx.policy_path
    rc = main(
        ["explain", "--config", policy, "--context", "t-exec-native", "--json", "--"]
        + ["/bin/cat", "/proc/self/status"]
    )
    explained = json.loads(capsys.readouterr().out)
    st = status(native_ctx.execute(["/bin/cat", "/proc/self/status"])[1])
    assert rc == 0
    assert [str(explained["uid"])] * 4 == st["Uid"].split()
    assert [str(explained["gid"])] * 4 == st["Gid"].split()


def test_root_rule_from_a_helper_without_setuid_is_denied_with_the_reason(root):
    ctx = Context("t-exec-nosetuid", command_runner=runner_factory(ini_index()))
    try:
        with pytest.raises(DeniedError, match="without CAP_SETUID and CAP_SETGID"):
            ctx.execute(["true"])
    finally:
        ctx.stop()


NATIVE = """
[context.t-exec-native]
capabilities = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SETUID", "CAP_SETGID"]

[[command]]
name = "status"
context = "t-exec-native"
exec = "/bin/cat"
args = ["/proc/self/status"]
capabilities = ["CAP_NET_RAW"]

[[command]]
name = "too-much"
context = "t-exec-native"
exec = "/usr/bin/tail"
args = ["/proc/self/status"]
capabilities = ["CAP_SYS_ADMIN"]
"""


@pytest.fixture
def native_ctx(trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(NATIVE)
    path.chmod(0o644)
    ctx = Context("t-exec-native")
    ctx.apply_policy(load_policy([str(path)]))
    ctx.policy_path = str(path)
    yield ctx
    ctx.stop()


def test_native_rule_command_gets_exactly_its_capabilities(native_ctx):
    rc, out, err = native_ctx.execute(["/bin/cat", "/proc/self/status"])
    assert rc == 0, err
    st = status(out)
    assert int(st["CapEff"], 16) == 1 << 13  # CAP_NET_RAW only, not the context's others
    assert int(st["CapAmb"], 16) == 1 << 13


def test_native_rule_granting_a_capability_the_context_lacks_is_denied(native_ctx):
    with pytest.raises(DeniedError, match="CAP_SYS_ADMIN"):
        native_ctx.execute(["/usr/bin/tail", "/proc/self/status"])


def test_native_command_outside_the_context_rules_is_denied(native_ctx):
    with pytest.raises(DeniedError, match="no filter matched"):
        native_ctx.execute(["/bin/true"])


def test_output_beyond_the_limit_kills_the_command_with_efbig(root):
    runner = CommandRunner(ini_index(), max_output=1000)
    with pytest.raises(OSError, match="more than 1000 bytes") as info:
        runner.run(["sh", "-c", "yes | head -c 5000"])
    assert info.value.errno == 27  # EFBIG


def test_unknown_execute_option_is_refused(root):
    runner = CommandRunner(ini_index())
    with pytest.raises(ValueError, match="cwd"):
        runner(["true"], {"cwd": "/tmp"})


def test_every_decision_is_audited_with_rule_and_rc(root, trusted_dir):
    from privsepd.audit import AuditLog

    log = trusted_dir / "audit.jsonl"
    runner = CommandRunner(ini_index(), audit=AuditLog.open(str(log)), context="t")
    runner.run(["true"])
    with pytest.raises(DeniedError):
        runner.run(["ls"])
    import json

    allow, done, deny = (json.loads(line) for line in log.read_text().splitlines())
    # The decision is written before the command runs, the outcome after.
    assert allow["decision"] == "allow" and "rc" not in allow and allow["argv"] == ["true"]
    assert allow["rule"].startswith("test.filters:") and allow["rule"].endswith("(true)")
    assert done["decision"] == "done" and done["rc"] == 0 and done["argv"] == ["true"]
    assert deny["decision"] == "deny" and "no filter matched" in deny["error"]
    assert deny["argv"] == ["ls"]


def test_command_runs_in_its_own_session(root_ctx):
    _, out, _ = root_ctx.execute(["sh", "-c", "cat /proc/$$/stat"])
    fields = out.decode().rsplit(")", 1)[1].split()
    pid, pgrp, session = int(out.split()[0]), int(fields[2]), int(fields[3])
    assert pid == pgrp == session


# --- chained commands: the tightest timeout along the chain ---------------------------

CHAINED = """
[context.t-exec-chain]

[[command]]
name = "nice"
context = "t-exec-chain"
exec = "/usr/bin/nice"
args = ["-n", { regex = "[0-9]+" }, { chain = true }]
{nice_timeout}

[[command]]
name = "sleep"
context = "t-exec-chain"
exec = "/bin/sleep"
args = [{ regex = "[0-9]+" }]
{sleep_timeout}
"""


def _chain_ctx(trusted_dir, nice_timeout: str = "", sleep_timeout: str = "") -> Context:
    path = trusted_dir / "chain.toml"
    path.write_text(
        CHAINED.replace("{nice_timeout}", nice_timeout).replace("{sleep_timeout}", sleep_timeout)
    )
    path.chmod(0o644)
    ctx = Context("t-exec-chain")
    ctx.apply_policy(load_policy([str(path)]))
    return ctx


@pytest.mark.parametrize(
    ("nice", "sleep"),
    [("", "timeout = 0.5"), ("timeout = 20", "timeout = 0.5"), ("timeout = 0.5", "timeout = 20")],
    ids=["only-the-chained-rule", "chained-rule-tighter", "chaining-rule-tighter"],
)
def test_chained_command_gets_the_tightest_rule_timeout_of_the_chain(trusted_dir, nice, sleep):
    ctx = _chain_ctx(trusted_dir, nice, sleep)
    try:
        start = time.monotonic()
        with pytest.raises(CallTimeout, match="timed out after 0.5s"):
            ctx.execute(["nice", "-n", "5", "sleep", "5"])
        assert time.monotonic() - start < 3.0
        assert ctx.execute(["nice", "-n", "5", "sleep", "0"])[0] == 0  # still serves
    finally:
        ctx.stop()


# --- what each check guards, set up for real ----------------------------------------------


@pytest.mark.parametrize("value", ["/tmp/x", "../../tmp/x", ".hidden", "C;id", "en US", "C\n"])
def test_locale_variable_whose_value_is_not_a_locale_name_is_judged_as_env(root_ctx, value):
    with pytest.raises(DeniedError, match=r"\['env', 'LANG="):
        root_ctx.execute(["env"], env={"LANG": value})


@pytest.mark.parametrize(
    "value", ["C", "C.UTF-8", "en_US.UTF-8", "sr_RS@latin", "de_DE.ISO-8859-1"]
)
def test_locale_variable_with_a_locale_name_reaches_the_command(root_ctx, value):
    _, out, _ = root_ctx.execute(["env"], env={"LANG": value})
    assert f"LANG={value}\n".encode() in out


def test_native_rule_with_no_capabilities_gets_none_of_the_ini_opt_in(root):
    from privsepd.policy.native import NativeCommand

    bare = NativeCommand(
        "bare", "/usr/bin/head", ["-n", "60", "/proc/self/status"], context="t-exec-nocaps"
    )
    assert bare.capabilities == frozenset()
    index = FilterIndex([*ini_index().filters, bare], ["/bin", "/usr/bin"])
    factory = runner_factory(index, ini_capabilities=["CAP_NET_ADMIN"])
    ctx = Context("t-exec-nocaps", ["CAP_NET_ADMIN"], stay_root=True, command_runner=factory)
    try:
        native = status(ctx.execute(["head", "-n", "60", "/proc/self/status"])[1])
        ini = status(ctx.execute(["cat", "/proc/self/status"])[1])
    finally:
        ctx.stop()
    assert int(ini["CapEff"], 16) == 1 << 12  # control: the INI rule gets the opt-in
    assert int(native["CapEff"], 16) == int(native["CapAmb"], 16) == 0


def test_an_inheritable_descriptor_never_reaches_the_command(root, monkeypatch):
    monkeypatch.chdir("/")  # where the posix_spawn fast path would otherwise be taken
    runner = CommandRunner(
        ini_index("[Filters]\nls: RegExpFilter, /bin/ls, root, ls, /proc/self/fd\n")
    )
    r, w = os.pipe()
    leaked = os.dup(w)
    os.set_inheritable(leaked, True)
    try:
        rc, out, err = runner.run(["ls", "/proc/self/fd"])
    finally:
        for fd in (r, w, leaked):
            os.close(fd)
    assert rc == 0, err
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3]  # 3: ls's own directory


def test_output_written_just_before_exit_is_read_in_full_on_both_streams(root_ctx):
    script = "head -c 300000 /dev/zero; head -c 200001 /dev/zero >&2; exit 3"
    rc, out, err = root_ctx.execute(["sh", "-c", script])
    assert (rc, len(out), len(err)) == (3, 300000, 200001)
    assert out == b"\0" * 300000 and err == b"\0" * 200001


def test_data_left_in_a_hung_up_pipe_is_read_before_its_end():
    # Both pipes hold data and have no writer left before the reader first
    # polls (POLLIN|POLLHUP at once): the hang-up must not end the stream
    # before the data is read. Real pipes and a real (exited) child.
    from privsepd.helper.execute import _communicate, _Fd, _Spawned

    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(out_w, b"o" * 1000)
    os.write(err_w, b"e" * 700)
    os.close(out_w)
    os.close(err_w)
    proc = _Spawned(["/bin/true"], pid, None, _Fd(out_r), _Fd(err_r))
    assert _communicate(proc, None, 5.0, 1 << 20) == (b"o" * 1000, b"e" * 700)
    assert proc.wait() == 0


def test_concurrent_slow_commands_overlap_in_the_helper(root_ctx):
    # Six 0.4 s commands from six threads: run one at a time they would take
    # 2.4 s; overlapped, about 0.4 s plus hand-offs (generous bound: 1.6 s).
    import threading

    assert root_ctx.execute(["true"])[0] == 0  # helper up before the clock starts
    results: list[int] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        barrier.wait()
        results.append(root_ctx.execute(["sh", "-c", "sleep 0.4"])[0])

    threads = [threading.Thread(target=one) for _ in range(6)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert results == [0] * 6
    assert elapsed < 1.6, f"6 x 0.4 s commands took {elapsed:.2f} s: run one at a time"


@pytest.mark.parametrize("libc_spawn", [True, False], ids=["libc-spawn", "fallback"])
def test_command_gets_only_its_own_descriptors_and_root_cwd_from_any_cwd(
    root, tmp_path, monkeypatch, libc_spawn
):
    from privsepd.helper import spawn as spawn_module

    if libc_spawn:
        require_feature(spawn_module.AVAILABLE, "libc posix_spawn with closefrom/chdir")
    monkeypatch.setattr(spawn_module, "AVAILABLE", libc_spawn and spawn_module.AVAILABLE)
    monkeypatch.chdir(tmp_path)
    runner = CommandRunner(
        ini_index(
            "[Filters]\nls: RegExpFilter, /bin/ls, root, ls, /proc/self/fd\n"
            "sh: RegExpFilter, /bin/sh, root, sh, -c, pwd\n"
        )
    )
    leaked = os.dup(1)
    os.set_inheritable(leaked, True)
    try:
        rc, out, err = runner.run(["ls", "/proc/self/fd"])
        cwd = runner.run(["sh", "-c", "pwd"])
    finally:
        os.close(leaked)
    assert rc == 0, err
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3]
    assert cwd == (0, b"/\n", b"")
