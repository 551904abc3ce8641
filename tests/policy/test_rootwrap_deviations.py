"""Where oslo.rootwrap's decision is a hole, privsepd refuses: one test each.

Every test runs the real oslo.rootwrap to show the hole (what oslo would
execute as root), then shows privsepd's refusal and its miss code. The
table in docs/deviations.md lists the same cases.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from oslo_rootwrap import filters as oslo_filters
from oslo_rootwrap import wrapper

from privsepd.errors import PolicyError
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import parse_config, parse_filters

OSLO_VERSION = tuple(int(x) for x in importlib.metadata.version("oslo_rootwrap").split(".")[:2])


@pytest.fixture
def bindir(tmp_path: Path) -> str:
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("echo", "cat", "ls", "nice", "ip", "dnsmasq", "chown", "bar", "env"):
        os.symlink("/bin/true", d / name)
    return str(d)


class Both:
    """The same filter text loaded by oslo.rootwrap and by privsepd."""

    def __init__(self, tmp_path: Path, text: str, exec_dirs: list[str]):
        d = tmp_path / "rootwrap.d"
        d.mkdir(exist_ok=True)
        (d / "t.filters").write_text("[Filters]\n" + text)
        self.oslo = wrapper.load_filters([str(d)])
        self.ours = FilterIndex(parse_filters("[Filters]\n" + text, "t.filters"), exec_dirs)
        self.exec_dirs = exec_dirs

    def oslo_runs(self, argv: list[str]) -> tuple[list[str], dict[str, str] | None]:
        """What oslo-rootwrap would execute (raises if it refuses)."""
        userargs = list(argv)
        f = wrapper.match_filter(self.oslo, userargs, self.exec_dirs)
        return f.get_command(userargs, self.exec_dirs), f.get_environment(userargs)

    def refusal(self, argv: list[str]) -> str:
        """privsepd's decision must be a refusal; return the deviation code."""
        d = self.ours.match(argv)
        assert not d.allowed, d
        assert d.deviations, d.trace
        return d.deviations[0].miss.code


# --- RegExpFilter / ChainingRegExpFilter --------------------------------------------


def test_regexp_trailing_newline_is_refused(tmp_path, bindir):
    b = Both(tmp_path, "ls: RegExpFilter, ls, root, ls, /[a-z]+\n", [bindir])
    assert b.oslo_runs(["ls", "/root\n"])[0] == [f"{bindir}/ls", "/root\n"]
    assert b.refusal(["ls", "/root\n"]) == "regex-anchor"


def test_regexp_top_level_alternation_does_not_escape_the_anchor(tmp_path, bindir):
    b = Both(tmp_path, "e: RegExpFilter, echo, root, echo, safe|ok\n", [bindir])
    assert b.oslo_runs(["echo", "safe; rm -rf /"])[0][1] == "safe; rm -rf /"
    assert b.refusal(["echo", "safe; rm -rf /"]) == "regex-anchor"


def test_regexp_inline_multiline_flag_does_not_end_the_match_at_a_newline(tmp_path, bindir):
    b = Both(tmp_path, "e: RegExpFilter, echo, root, echo, (?m)[a-z]+\n", [bindir])
    assert b.oslo_runs(["echo", "abc\n--evil"])
    assert b.refusal(["echo", "abc\n--evil"]) == "regex-anchor"


def test_regexp_trailing_backslash_does_not_turn_the_anchor_into_a_literal(tmp_path, bindir):
    b = Both(tmp_path, "e: RegExpFilter, echo, root, echo, x\\\n", [bindir])
    assert b.oslo_runs(["echo", "x$ --anything"])
    assert b.refusal(["echo", "x$ --anything"]) == "regex-anchor"


def test_chaining_regexp_prefix_gets_the_same_anchoring(tmp_path, bindir):
    b = Both(
        tmp_path,
        "n: ChainingRegExpFilter, nice, root, nice, -?\\d+\ne: CommandFilter, echo, root\n",
        [bindir],
    )
    assert b.oslo_runs(["nice", "5\n", "echo"])
    assert b.refusal(["nice", "5\n", "echo"]) == "regex-anchor"


@pytest.mark.parametrize(
    "digits",
    ["\u0661\u0662\u0663", "\uff11\uff12", "1\u0662"],
    ids=["arabic", "fullwidth", "mixed"],
)
def test_regexp_digit_class_admits_ascii_digits_only(tmp_path, bindir, digits):
    b = Both(tmp_path, "e: RegExpFilter, echo, root, echo, \\d+\n", [bindir])
    assert b.oslo_runs(["echo", digits])[0][1] == digits  # oslo: Unicode \d
    assert b.refusal(["echo", digits]) == "regex-unicode"
    assert b.ours.match(["echo", "123"]).allowed


def test_regexp_word_and_case_folding_are_ascii_too(tmp_path, bindir):
    b = Both(tmp_path, "e: RegExpFilter, echo, root, echo, (?i)[a-z]\\w*\n", [bindir])
    for word in ("\u212a", "a\u00e9"):  # KELVIN SIGN folds to 'k'; \w admits 'é'
        assert b.oslo_runs(["echo", word])
        assert b.refusal(["echo", word]) == "regex-unicode"
    assert b.ours.match(["echo", "Ok_1"]).allowed


# --- PathFilter ----------------------------------------------------------------------


def test_path_filter_base_is_a_directory_not_a_string_prefix(tmp_path, bindir):
    base = tmp_path / "data"
    b = Both(tmp_path, f"c: PathFilter, chown, root, nova, {base}\n", [bindir])
    assert b.oslo_runs(["chown", "nova", f"{base}2/secret"])[0][2] == f"{base}2/secret"
    assert b.refusal(["chown", "nova", f"{base}2/secret"]) == "path-prefix"


def test_path_filter_refuses_a_path_realpath_could_not_resolve(tmp_path, bindir):
    base = tmp_path / "data"
    base.mkdir()
    os.symlink(base / "loop", base / "loop")
    b = Both(tmp_path, f"c: PathFilter, chown, root, nova, {base}\n", [bindir])
    # oslo hands the kernel a path with a symlink still in it: swap the loop
    # for a link to /etc after the check and chown acts on /etc/x
    assert b.oslo_runs(["chown", "nova", f"{base}/loop/x"])[0][2] == f"{base}/loop/x"
    assert b.refusal(["chown", "nova", f"{base}/loop/x"]) == "path-unresolved"


def test_path_filter_dotdot_and_symlinks_out_of_base_are_refused_by_both(tmp_path, bindir):
    base = tmp_path / "data"
    base.mkdir()
    os.symlink("/etc", base / "out")
    b = Both(tmp_path, f"c: PathFilter, chown, root, nova, {base}\n", [bindir])
    for value in (f"{base}/../x", f"{base}/out/passwd"):
        with pytest.raises(wrapper.NoFilterMatched):
            b.oslo_runs(["chown", "nova", value])
        assert b.ours.match(["chown", "nova", value]).outcome == "no-match"


# --- chaining --------------------------------------------------------------------------


def test_chained_command_given_as_path_is_not_judged_by_its_basename(tmp_path, bindir):
    b = Both(
        tmp_path,
        "n: ChainingRegExpFilter, nice, root, nice, -?\\d+\ne: CommandFilter, echo, root\n",
        [bindir],
    )
    assert b.oslo_runs(["nice", "5", "/tmp/evil/echo"])[0] == [
        f"{bindir}/nice",
        "5",
        "/tmp/evil/echo",
    ]
    assert b.refusal(["nice", "5", "/tmp/evil/echo"]) == "chain-path"


def test_ip_netns_exec_of_a_path_is_not_judged_by_its_basename(tmp_path, bindir):
    b = Both(tmp_path, "x: IpNetnsExecFilter, ip, root\ne: CommandFilter, echo, root\n", [bindir])
    assert b.oslo_runs(["ip", "netns", "exec", "ns", "/tmp/evil/echo"])
    assert b.refusal(["ip", "netns", "exec", "ns", "/tmp/evil/echo"]) == "chain-path"


def test_chaining_into_a_command_that_is_not_allowed_is_refused_by_both(tmp_path, bindir):
    b = Both(tmp_path, "x: IpNetnsExecFilter, ip, root\ne: CommandFilter, echo, root\n", [bindir])
    with pytest.raises(wrapper.NoFilterMatched):
        b.oslo_runs(["ip", "netns", "exec", "ns", "sh", "-c", "id"])
    assert b.ours.match(["ip", "netns", "exec", "ns", "sh", "-c", "id"]).outcome == "no-match"


# --- IpFilter --------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["-b", "-batch", "--batch", "-ba"])
def test_ip_batch_file_is_refused(tmp_path, bindir, option):
    b = Both(tmp_path, "ip: IpFilter, ip, root\n", [bindir])
    assert b.oslo_runs(["ip", option, "/tmp/commands"])  # may hold 'netns exec ns sh'
    assert b.refusal(["ip", option, "/tmp/commands"]) == "ip-batch"


def test_ip_brief_option_is_not_batch(tmp_path, bindir):
    b = Both(tmp_path, "ip: IpFilter, ip, root\n", [bindir])
    assert b.ours.match(["ip", "-br", "link"]).allowed


@pytest.mark.parametrize(
    "argv",
    [
        ["ip", "NETNS", "EXEC", "ns", "sh"],
        ["ip", "-n", "netns", "netns", "exec", "sh"],
        ["ip", "link", "netns", "x", "netns", "exec", "ns", "sh"],
    ],
)
def test_ip_netns_exec_hidden_from_oslos_first_pair_check_is_refused(tmp_path, bindir, argv):
    b = Both(tmp_path, "ip: IpFilter, ip, root\n", [bindir])
    assert b.oslo_runs(argv)
    assert b.refusal(argv) == "ip-netns-exec"


# --- EnvFilter --------------------------------------------------------------------------


def test_env_empty_value_does_not_leak_the_parent_value(tmp_path, bindir, monkeypatch):
    monkeypatch.setenv("CONFIG_FILE", "/root/inherited.conf")
    b = Both(tmp_path, "d: EnvFilter, env, root, CONFIG_FILE=, dnsmasq\n", [bindir])
    _, env = b.oslo_runs(["env", "CONFIG_FILE=", "dnsmasq"])
    assert env["CONFIG_FILE"] == "/root/inherited.conf"
    assert b.refusal(["env", "CONFIG_FILE=", "dnsmasq"]) == "env-empty-value"


def test_env_ld_preload_never_reaches_a_root_process(tmp_path, bindir):
    b = Both(tmp_path, "p: EnvFilter, env, root, LD_PRELOAD=, echo\n", [bindir])
    assert b.oslo_runs(["env", "LD_PRELOAD=/tmp/evil.so", "echo"])[1]["LD_PRELOAD"]
    assert b.refusal(["env", "LD_PRELOAD=/tmp/evil.so", "echo"]) == "env-dangerous"


def test_env_filter_does_not_rewrite_the_argv_later_filters_see(tmp_path, bindir):
    b = Both(
        tmp_path,
        "d: EnvFilter, env, root, A=, dnsmasq\nbar: CommandFilter, bar, root\n",
        [bindir],
    )
    # oslo's EnvFilter popped 'env'; the 'bar' rule then judged and ran 'bar x'
    assert b.oslo_runs(["env", "bar", "x"])[0] == [f"{bindir}/bar", "x"]
    assert b.refusal(["env", "bar", "x"]) == "env-argv-mutation"


def test_env_mutation_never_lets_privsepd_allow_what_oslo_refuses(tmp_path, bindir):
    b = Both(
        tmp_path,
        "d: EnvFilter, env, root, A=, dnsmasq\nenv: CommandFilter, env, root\n",
        [bindir],
    )
    with pytest.raises(wrapper.NoFilterMatched):
        b.oslo_runs(["env", "bar"])  # the 'env' rule saw ['bar'] in oslo
    assert b.ours.match(["env", "bar"]).outcome == "no-match"


# --- KillFilter --------------------------------------------------------------------------


@pytest.fixture
def sleeper(tmp_path):
    exe = tmp_path / "sleepy"
    shutil.copy(os.path.realpath(shutil.which("sleep")), exe)
    proc = subprocess.Popen([str(exe), "60"])
    time.sleep(0.05)
    yield exe, proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("form", ["+{}", " {}", "{}\n"])
def test_kill_pid_must_be_plain_decimal(tmp_path, sleeper, form):
    exe, proc = sleeper
    b = Both(tmp_path, f"k: KillFilter, root, {exe}\n", ["/bin", "/usr/bin"])
    pid = form.format(proc.pid)
    assert b.oslo_runs(["kill", pid])
    assert b.refusal(["kill", pid]) == "kill-pid-syntax"


def test_kill_pid_with_leading_zeros_is_plain_decimal_for_both(tmp_path, sleeper):
    exe, proc = sleeper
    b = Both(tmp_path, f"k: KillFilter, root, {exe}\n", ["/bin", "/usr/bin"])
    assert b.oslo_runs(["kill", f"0{proc.pid}"])
    assert b.ours.match(["kill", f"0{proc.pid}"]).allowed


@pytest.mark.skipif(
    OSLO_VERSION < (7, 9),
    reason="oslo.rootwrap < 7.9 (the newest on Python 3.9) crashes with TypeError here "
    "(os.path.isfile(None)) instead of allowing the kill: there is no hole to show",
)
def test_kill_of_a_process_whose_executable_was_deleted_is_refused(tmp_path, sleeper):
    exe, proc = sleeper
    exe.unlink()
    b = Both(tmp_path, f"k: KillFilter, root, {exe}\n", ["/bin", "/usr/bin"])
    assert b.oslo_runs(["kill", str(proc.pid)])
    assert b.refusal(["kill", str(proc.pid)]) == "kill-deleted-exe"


def test_kill_of_a_process_whose_executable_was_replaced_is_refused(tmp_path, sleeper):
    exe, proc = sleeper
    exe.unlink()
    shutil.copy("/bin/true", exe)
    b = Both(tmp_path, f"k: KillFilter, root, {exe}\n", ["/bin", "/usr/bin"])
    assert b.oslo_runs(["kill", str(proc.pid)])
    assert b.refusal(["kill", str(proc.pid)]) == "kill-deleted-exe"


def test_kill_of_a_process_running_an_unlisted_executable_is_refused_by_both(tmp_path, sleeper):
    exe, proc = sleeper
    b = Both(tmp_path, "k: KillFilter, root, /usr/sbin/dnsmasq\n", ["/bin", "/usr/bin"])
    with pytest.raises(wrapper.NoFilterMatched):
        b.oslo_runs(["kill", str(proc.pid)])
    assert b.ours.match(["kill", str(proc.pid)]).outcome == "no-match"


# --- run_as ------------------------------------------------------------------------------


def test_unknown_run_as_user_is_refused_before_anything_runs(tmp_path, bindir):
    b = Both(tmp_path, "e: CommandFilter, echo, no-such-user-xyz\n", [bindir])
    f = wrapper.match_filter(b.oslo, ["echo"], [bindir])
    with pytest.raises(KeyError):
        f.preexec()  # oslo only notices in the child, after fork
    d = b.ours.match(["echo"])
    assert (d.outcome, d.allowed) == ("bad-user", False)


def test_decision_carries_the_run_as_group_too(tmp_path, bindir):
    b = Both(tmp_path, "e: CommandFilter, echo, nobody\n", [bindir])
    d = b.ours.match(["echo"])
    assert (d.uid, d.gid) == (65534, 65534)  # oslo: setuid only, gid 0 and groups kept


# --- configuration ------------------------------------------------------------------------


def test_relative_exec_dirs_entry_is_not_searched_in_the_current_directory(
    tmp_path, bindir, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.symlink("/bin/true", cwd / "mytool")
    monkeypatch.chdir(cwd)
    f = oslo_filters.CommandFilter("mytool", "root")
    assert f.get_exec(["", bindir]) == "mytool"  # exec_dirs=",/bin": cwd-relative
    config = parse_config(f"[DEFAULT]\nfilters_path=/x\nexec_dirs=,{bindir}\n", "r.conf")
    assert config.exec_dirs == (bindir,)
    idx = FilterIndex(
        parse_filters("[Filters]\nm: CommandFilter, mytool, root\n", "t"), config.exec_dirs
    )
    assert idx.match(["mytool"]).outcome == "not-executable"


def test_filters_file_oslo_crashes_on_is_a_policy_error(tmp_path):
    d = tmp_path / "rootwrap.d"
    d.mkdir()
    (d / "t.filters").write_text("[Filter]\nx: CommandFilter, echo, root\n")
    with pytest.raises(configparser.NoSectionError):  # a traceback from oslo-rootwrap
        wrapper.load_filters([str(d)])
    with pytest.raises(PolicyError, match=r"t.filters: no \[Filters\]"):
        parse_filters((d / "t.filters").read_text(), str(d / "t.filters"))


def test_nul_in_argv_is_refused_instead_of_crashing(tmp_path, bindir):
    b = Both(tmp_path, f"c: PathFilter, chown, root, nova, {tmp_path}\n", [bindir])
    with pytest.raises(ValueError):
        # oslo's match raises on Python >= 3.10 (os.path.realpath); on 3.9 it
        # matches and the exec raises, before any fork.
        command, _ = b.oslo_runs(["chown", "nova", f"{tmp_path}/x\0y"])
        subprocess.Popen(command).wait()
    assert b.ours.match(["chown", "nova", f"{tmp_path}/x\0y"]).outcome == "invalid"


# --- exec_dirs from $PATH ---------------------------------------------------------


def test_exec_dirs_from_path_skip_directories_the_caller_can_write(trusted_dir, monkeypatch):
    planted = trusted_dir / "planted"
    planted.mkdir()
    planted.chmod(0o777)  # a directory the service can write, first in its PATH
    fake = planted / "id"
    fake.write_text("#!/bin/sh\necho attacker code\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}:/usr/bin:/bin")
    conf = "[DEFAULT]\nfilters_path=/nonexistent\n"
    oslo_conf = configparser.RawConfigParser()
    oslo_conf.read_string(conf)
    oslo_dirs = wrapper.RootwrapConfig(oslo_conf).exec_dirs
    oslo_filter = oslo_filters.CommandFilter("id", "root")
    assert oslo_filter.get_exec(oslo_dirs) == str(fake)  # oslo runs the planted binary
    ours = parse_config(conf, "rootwrap.conf")
    assert str(planted) not in ours.exec_dirs
    decision = FilterIndex(
        parse_filters("[Filters]\nid: CommandFilter, id, root\n", "t"), ours.exec_dirs
    ).match(["id"])
    assert decision.allowed and decision.executable in ("/usr/bin/id", "/bin/id")
    assert any(w.code == "untrusted-path-dir" for w in ours.warnings)


def test_kill_by_bare_name_through_a_caller_writable_path_dir_is_refused(
    tmp_path, sleeper, monkeypatch
):
    exe, proc = sleeper
    exe.parent.chmod(0o777)  # a directory the caller could write
    monkeypatch.setenv("PATH", f"{exe.parent}:/usr/bin:/bin")
    b = Both(tmp_path, "k: KillFilter, root, sleepy\n", ["/bin", "/usr/bin"])
    assert b.oslo_runs(["kill", str(proc.pid)])  # oslo trusts whatever $PATH says
    assert b.refusal(["kill", str(proc.pid)]) == "kill-untrusted-dir"


def test_kill_by_bare_name_of_a_binary_in_a_protected_dir_is_allowed(tmp_path, monkeypatch):
    proc = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        time.sleep(0.05)
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
        b = Both(tmp_path, "k: KillFilter, root, sleep\n", ["/bin", "/usr/bin"])
        assert b.oslo_runs(["kill", str(proc.pid)])
        assert b.ours.match(["kill", str(proc.pid)]).allowed
    finally:
        proc.kill()
        proc.wait()
