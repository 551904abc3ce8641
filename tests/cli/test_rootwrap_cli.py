"""End-to-end tests of the installed ``privsepd-rootwrap`` console script.

Real processes as root: a root-owned config and filters in a root-owned
0755 directory, the installed script, and the command reporting from inside
itself (``/proc/self/status``) what it ran with. Exit codes and messages are
compared with the real ``oslo-rootwrap`` on the same config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import needs_posix_spawn, write_rootwrap_conf

pytestmark = needs_posix_spawn


FILTERS = """
[Filters]
cat: CommandFilter, /bin/cat, root
status_nobody: RegExpFilter, /usr/bin/tail, nobody, tail, -n, 60, /proc/self/status
fds: RegExpFilter, /bin/ls, root, ls, /proc/self/fd
fds_nobody: RegExpFilter, /bin/ls, nobody, ls, -1, /proc/self/fd
true: CommandFilter, /bin/true, root
missing: CommandFilter, /usr/bin/privsepd-no-such-binary, root
sh: RegExpFilter, /bin/sh, root, sh, -c, kill -[0-9]+ \\$\\$
env_echo: EnvFilter, env, root, GREETING=, /bin/sh
"""


def _script(name: str) -> str:
    """The console script next to this interpreter (not a pyenv shim on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e .[test])"
    return found


@pytest.fixture
def conf(trusted_dir):
    return write_rootwrap_conf(trusted_dir, FILTERS, "exec_dirs=/bin,/usr/bin\nrlimit_nofile=512\n")


@pytest.fixture
def cache_dir(trusted_dir):
    return str(trusted_dir / "cache")


def run(conf, *argv, tool="privsepd-rootwrap", env=None, options=()):
    return subprocess.run(
        [_script(tool), *options, conf, *argv], capture_output=True, env=env, timeout=60
    )


def status(out: bytes) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in out.decode().splitlines() if ":" in line)
    return {k: v.strip() for k, v in fields.items()}


def test_allowed_command_runs_and_passes_stdout_through(root, conf):
    result = run(conf, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert status(result.stdout)["Name"] == "cat"


def test_allowed_command_reads_stdin_of_the_shim(root, conf):
    result = subprocess.run(
        [_script("privsepd-rootwrap"), conf, "cat"], input=b"piped", capture_output=True
    )
    assert result.stdout == b"piped"


def test_ini_root_rule_runs_as_root_with_full_capabilities_like_oslo(root, conf):
    st = status(run(conf, "cat", "/proc/self/status").stdout)
    assert st["Uid"].split() == ["0"] * 4
    assert int(st["CapEff"], 16) == int(
        status(open("/proc/self/status", "rb").read())["CapBnd"], 16
    )


def test_run_as_rule_sets_uid_gid_and_the_users_groups_and_drops_every_capability(root, conf):
    result = run(conf, "tail", "-n", "60", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    st = status(result.stdout)
    groups = sorted(set(os.getgrouplist("nobody", 65534)))
    assert st["Uid"].split() == ["65534"] * 4
    assert st["Gid"].split() == ["65534"] * 4
    assert st["Groups"].split() == [str(g) for g in groups]  # never root's groups
    assert int(st["CapEff"], 16) == 0 and int(st["CapAmb"], 16) == 0


def test_denied_command_exits_99_with_oslos_message(root, conf):
    result = run(conf, "ls", "/root")
    assert result.returncode == 99
    assert result.stderr.decode().endswith(": Unauthorized command: ls /root (no filter matched)\n")
    assert result.stdout == b""


def test_missing_executable_exits_96_naming_the_filter(root, conf):
    result = run(conf, "privsepd-no-such-binary")
    assert result.returncode == 96
    assert (
        "Executable not found: /usr/bin/privsepd-no-such-binary (filter match = missing)"
        in result.stderr.decode()
    )


def test_no_command_exits_98(root, conf):
    result = subprocess.run([_script("privsepd-rootwrap"), conf], capture_output=True)
    assert result.returncode == 98
    assert result.stderr.decode().endswith(": No command specified\n")


def test_missing_config_exits_97_and_names_the_cause(root, trusted_dir):
    result = run(str(trusted_dir / "nope.conf"), "true")
    assert result.returncode == 97
    first, second = result.stderr.decode().splitlines()
    assert first.endswith(f": Incorrect configuration file: {trusted_dir / 'nope.conf'}")
    assert "No such file" in second


def test_bad_option_value_exits_97_with_oslos_incorrect_value_line(root, conf):
    with open(conf, "a") as f:
        f.write("use_syslog=maybe\n")
    result = run(conf, "true")
    assert result.returncode == 97
    assert f"Incorrect value in {conf}: Not a boolean: maybe" in result.stderr.decode()


def test_signalled_command_exits_128_plus_signal(root, conf):
    result = run(conf, "sh", "-c", "kill -15 $$")
    assert result.returncode == 128 + 15


def test_environment_is_sanitized_and_filter_additions_reach_the_command(root, conf):
    env = dict(os.environ, LD_PRELOAD="/nonexistent.so", PYTHONPATH="/evil", LANG="C.UTF-8")
    # EnvFilter: 'env GREETING=hi sh' runs /bin/sh with GREETING added
    result = subprocess.run(
        [_script("privsepd-rootwrap"), conf, "env", "GREETING=hi", "sh"],
        input=b"env",
        capture_output=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    got = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    assert got["GREETING"] == "hi"
    assert got["LANG"] == "C.UTF-8"
    assert "LD_PRELOAD" not in got and "PYTHONPATH" not in got
    assert got["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_rlimit_nofile_from_config_reaches_the_command(root, conf):
    st = run(conf, "cat", "/proc/self/limits").stdout.decode()
    line = next(x for x in st.splitlines() if x.startswith("Max open files"))
    assert line.split()[3] == "512"


@pytest.mark.parametrize(
    "argv",
    [["ls", "/proc/self/fd"], ["ls", "-1", "/proc/self/fd"]],
    ids=["as-root-posix-spawn", "as-nobody-fork"],
)
def test_command_sees_only_stdio_descriptors(root, conf, argv):
    r, w = os.pipe()
    os.dup2(r, 50, inheritable=True)
    try:
        result = subprocess.run(
            [_script("privsepd-rootwrap"), conf, *argv],
            capture_output=True,
            pass_fds=(50,),
        )
    finally:
        for fd in (r, w, 50):
            os.close(fd)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [b"0", b"1", b"2", b"3"]  # 3: ls's own opendir


def test_explain_prints_the_rule_and_runs_nothing(root, conf):
    result = run(conf, "true", options=("--explain",))
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "decision: allow" in text
    assert "test.filters:" in text and " true (CommandFilter)" in text


def test_explain_of_a_denied_command_exits_99_and_lists_candidates(root, conf):
    result = run(conf, "sh", "-c", "id", options=("--explain",))
    assert result.returncode == 99
    assert "candidate" in result.stdout.decode() and "decision: deny" in result.stdout.decode()


def test_cache_hit_gives_the_same_decisions_as_a_full_load(root, conf, cache_dir):
    opts = ("--cache-dir", cache_dir)
    for argv in (["true"], ["ls"], ["privsepd-no-such-binary"], ["sh", "-c", "kill -9 $$"]):
        first = run(conf, *argv, options=opts)  # builds the cache
        second = run(conf, *argv, options=opts)  # uses it
        full = run(conf, *argv, options=("--no-cache",))
        assert first.returncode == second.returncode == full.returncode
        assert second.stderr == full.stderr
    from privsepd.cli.rootwrap_policy import load_cached

    hit = load_cached(cache_dir, conf, "true")
    assert hit is not None and hit.source == "cache"


def test_cache_files_are_root_owned_and_private(root, conf, cache_dir):
    run(conf, "true", options=("--cache-dir", cache_dir))
    for name in os.listdir(cache_dir):
        st = os.stat(os.path.join(cache_dir, name))
        assert st.st_uid == 0 and st.st_mode & 0o077 == 0


def test_cache_is_invalidated_when_a_filters_file_changes(root, conf, cache_dir):
    opts = ("--cache-dir", cache_dir)
    assert run(conf, "true", options=opts).returncode == 0
    filters = os.path.join(os.path.dirname(conf), "filters.d", "test.filters")
    text = open(filters).read().replace("true: CommandFilter, /bin/true, root\n", "")
    from privsepd.cli.rootwrap_policy import load_cached

    assert load_cached(cache_dir, conf, "true") is not None
    with open(filters, "w") as f:
        f.write(text)
    assert load_cached(cache_dir, conf, "true") is None  # stale: not used
    assert run(conf, "true", options=opts).returncode == 99


def test_group_writable_filters_file_is_refused_with_exit_97(root, conf):
    filters = os.path.join(os.path.dirname(conf), "filters.d", "test.filters")
    os.chmod(filters, 0o664)
    result = run(conf, "true")
    assert result.returncode == 97
    assert "test.filters" in result.stderr.decode()


NATIVE = """
[[command]]
name = "status-netadmin"
exec = "/bin/cat"
args = ["/proc/self/status"]
run_as = "root"
capabilities = ["CAP_NET_ADMIN"]

[[command]]
name = "status-default-user"
exec = "/usr/bin/tail"
args = ["-n", "60", "/proc/self/status"]
capabilities = ["CAP_NET_ADMIN"]
"""


def test_native_rule_gets_exactly_its_capabilities_even_as_root(root, trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(NATIVE)
    path.chmod(0o644)
    result = run(str(path), "/bin/cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    st = status(result.stdout)
    assert st["Uid"].split() == ["0"] * 4
    assert int(st["CapEff"], 16) == 1 << 12  # CAP_NET_ADMIN
    assert int(st["CapAmb"], 16) == 1 << 12
    assert int(st["CapBnd"], 16) == 1 << 12
    assert st["NoNewPrivs"] == "1"


def test_native_rule_without_run_as_runs_as_the_unprivileged_default_account(root, trusted_dir):
    import pwd

    path = trusted_dir / "policy.toml"
    path.write_text(NATIVE)
    path.chmod(0o644)
    result = run(str(path), "tail", "-n", "60", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    st = status(result.stdout)
    try:
        account = pwd.getpwnam("privsepd")
    except KeyError:
        account = pwd.getpwnam("nobody")
    assert st["Uid"].split() == [str(account.pw_uid)] * 4
    assert st["Gid"].split() == [str(account.pw_gid)] * 4
    assert int(st["CapEff"], 16) == int(st["CapAmb"], 16) == 1 << 12  # still its capability


@pytest.mark.parametrize(
    "argv",
    [
        ["true"],
        ["ls", "/root"],
        ["privsepd-no-such-binary"],
        ["sh", "-c", "kill -9 $$"],
        ["cat", "/dev/null"],
        ["env", "GREETING=x", "sh", "-c", "true"],
    ],
    ids=lambda a: " ".join(a),
)
def test_exit_code_and_message_match_oslo_rootwrap(root, conf, argv):
    ours = run(conf, *argv)
    oslo = run(conf, *argv, tool="oslo-rootwrap")
    assert ours.returncode == oslo.returncode
    assert ours.stdout == oslo.stdout

    def message(stderr: bytes) -> str:
        return stderr.decode().partition(": ")[2]

    assert message(ours.stderr) == message(oslo.stderr)


def test_no_command_matches_oslo_rootwrap(root, conf):
    ours = subprocess.run([_script("privsepd-rootwrap"), conf], capture_output=True)
    oslo = subprocess.run([_script("oslo-rootwrap"), conf], capture_output=True)
    assert ours.returncode == oslo.returncode == 98
    assert ours.stderr.partition(b": ")[2] == oslo.stderr.partition(b": ")[2]


def test_cache_is_not_built_from_a_policy_edited_after_it_was_parsed(root, conf):
    from privsepd.cli.rootwrap_policy import build_cache, load_full

    loaded = load_full(conf)
    filters = os.path.join(os.path.dirname(conf), "filters.d", "test.filters")
    text = open(filters).read().replace("true: CommandFilter", "# true: CommandFilter")
    with open(filters, "w") as f:
        f.write(text)
    assert build_cache(loaded) is None


@pytest.mark.parametrize("name", ["LD_BIND_NOW", "LD_LIBRARY_PATH", "LD_AUDIT"])
def test_loader_variables_under_sudo_are_refused(root, conf, name):
    env = dict(os.environ, SUDO_UID="1000", **{name: "1"})
    result = run(conf, "true", env=env)
    assert result.returncode == 97
    assert f"refusing to run: {name} reached a root interpreter".encode() in result.stderr


def test_loader_variables_without_sudo_are_not_refused(root, conf):
    env = {k: v for k, v in os.environ.items() if k != "SUDO_UID"}
    assert run(conf, "true", env=dict(env, LD_BIND_NOW="1")).returncode == 0


def test_cache_is_invalidated_by_an_edit_that_keeps_size_mtime_and_inode(root, conf, cache_dir):
    opts = ("--cache-dir", cache_dir)
    assert run(conf, "true", options=opts).returncode == 0
    filters = os.path.join(os.path.dirname(conf), "filters.d", "test.filters")
    before = os.stat(filters)
    with open(filters, "r+") as f:  # same length, same inode
        text = f.read()
        edited = text.replace("true: CommandFilter, /bin/true,", "xrue: CommandFilter, /bin/xrue,")
        assert len(edited) == len(text) and edited != text
        f.seek(0)
        f.write(edited)
    os.utime(filters, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
    after = os.stat(filters)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert after.st_ctime_ns != before.st_ctime_ns  # only ctime tells
    from privsepd.cli.rootwrap_policy import load_cached

    assert load_cached(cache_dir, conf, "true") is None
    assert run(conf, "true", options=opts).returncode == 99


@pytest.mark.parametrize("which", ["manifest", "shard"])
@pytest.mark.parametrize("mode", [0o620, 0o602], ids=["group-writable", "world-writable"])
def test_cache_file_others_can_write_is_not_used(root, conf, cache_dir, which, mode):
    from privsepd.cli.rootwrap_policy import CACHE_SUFFIX, _cache_path, _shard, load_cached

    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0
    assert load_cached(cache_dir, conf, "true") is not None
    manifest = _cache_path(cache_dir, conf)
    if which == "manifest":
        target = manifest
    else:
        import marshal

        with open(manifest, "rb") as f:
            generation = marshal.load(f)["generation"]
        target = f"{manifest[: -len(CACHE_SUFFIX)]}.{generation}/{_shard('true')}"
    os.chmod(target, mode)
    assert load_cached(cache_dir, conf, "true") is None


def test_interpreter_steering_variables_under_sudo_are_refused(root, conf):
    env = dict(os.environ, SUDO_UID="1000", PYTHONPYCACHEPREFIX="/tmp/planted")
    result = run(conf, "true", env=env)
    assert result.returncode == 97
    assert b"refusing to run: PYTHONPYCACHEPREFIX reached a root interpreter" in result.stderr


def test_command_gets_default_signals_and_an_empty_mask_whatever_the_caller_set(root, conf):
    import signal

    def hostile_caller():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGALRM])

    result = subprocess.run(
        [_script("privsepd-rootwrap"), conf, "cat", "/proc/self/status"],
        capture_output=True,
        preexec_fn=hostile_caller,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    st = status(result.stdout)
    ignored, blocked = int(st["SigIgn"], 16), int(st["SigBlk"], 16)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        assert not ignored & (1 << (sig - 1)), sig
    assert blocked == 0


# --- exec_dirs trust at run time -------------------------------------------------------


@pytest.fixture
def planted_conf(trusted_dir):
    """exec_dirs = [tools, /usr/bin, /bin]; tools/id is a script that says who runs it."""
    tools = trusted_dir / "tools"
    tools.mkdir(mode=0o755)
    planted = tools / "id"
    planted.write_text("#!/bin/sh\necho planted code ran as $(/usr/bin/id -u)\n")
    planted.chmod(0o755)
    filters = trusted_dir / "filters.d"
    filters.mkdir(mode=0o755)
    (filters / "id.filters").write_text("[Filters]\nid: CommandFilter, id, root\n")
    conf = trusted_dir / "rootwrap.conf"
    conf.write_text(f"[DEFAULT]\nfilters_path={filters}\nexec_dirs={tools},/usr/bin,/bin\n")
    for p in (filters / "id.filters", conf):
        p.chmod(0o644)
    return str(conf), tools


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777], ids=["0777", "group-0775", "sticky-1777"])
def test_exec_dir_others_can_write_is_not_searched(root, planted_conf, mode):
    conf, tools = planted_conf
    tools.chmod(mode)
    for options in (("--no-cache",), ("--cache-dir", str(tools.parent / "cache"))):
        result = run(conf, "id", "-u", options=options)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"0\n", result.stdout  # the real id, not the planted script


def test_exec_dir_made_writable_after_the_cache_was_built_is_not_searched(root, planted_conf):
    conf, tools = planted_conf
    opts = ("--cache-dir", str(tools.parent / "cache"))
    assert run(conf, "id", options=opts).stdout == b"planted code ran as 0\n"  # trusted: used
    from privsepd.cli.rootwrap_policy import load_cached

    assert load_cached(str(tools.parent / "cache"), conf, "id") is not None
    tools.chmod(0o777)
    result = run(conf, "id", "-u", options=opts)
    assert result.stdout == b"0\n", result.stdout


def test_trusted_exec_dir_is_searched_first(root, planted_conf):
    conf, _ = planted_conf
    result = run(conf, "id", options=("--no-cache",))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"planted code ran as 0\n"
