"""Specification of the rootwrap policy engine: loading, filters, index, decisions.

Behaviour shared with oslo.rootwrap is checked against oslo itself in
test_rootwrap_differential.py; privsepd's refusals of oslo's holes are in
test_rootwrap_deviations.py. This file pins down the rest: file formats,
errors with file and line, warnings for the linter, trust, and the shape
of a Decision.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsepd.errors import PolicyError, UnsafePolicyError
from privsepd.policy import filters as F
from privsepd.policy.index import FilterIndex
from privsepd.policy.rootwrap import (
    ConfigValueError,
    _parse_ini,
    load_filters,
    load_policy,
    parse_config,
    parse_filters,
    signal_exit_code,
)

_BASES = ["/run", "/var/lib", "/root"]


@pytest.fixture(autouse=True)
def _system_path(monkeypatch):
    """A conf without exec_dirs searches $PATH: make it the same on every machine
    (a CI virtualenv under /tmp would add an untrusted-path-dir warning)."""
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


@pytest.fixture
def safe(trusted_dir) -> Path:
    return trusted_dir


@pytest.fixture
def bindir(tmp_path: Path) -> str:
    """An exec dir with a few real executables."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in ("echo", "cat", "nice", "ip", "dnsmasq", "chown"):
        os.symlink("/bin/true", d / name)
    return str(d)


def index(text: str, exec_dirs: list[str] | None = None) -> FilterIndex:
    return FilterIndex(parse_filters("[Filters]\n" + text, "t.filters"), exec_dirs or [])


# --- rootwrap.conf -----------------------------------------------------------------


def test_config_defaults_match_oslo():
    c = parse_config("[DEFAULT]\nfilters_path=/a,/b\nexec_dirs=/x\n", "r.conf")
    assert c.filters_path == ("/a", "/b")
    assert c.exec_dirs == ("/x",)
    assert c.use_syslog is False
    assert c.syslog_log_facility == logging.handlers.SysLogHandler.LOG_SYSLOG
    assert c.syslog_log_level == logging.ERROR
    assert c.daemon_timeout == 600
    assert c.rlimit_nofile == 1024


def test_config_without_exec_dirs_uses_the_trusted_part_of_the_callers_path(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/nonexistent-p1:/tmp:/bin")
    config = parse_config("[DEFAULT]\nfilters_path=/a\n", "r.conf")
    assert config.exec_dirs == ("/usr/bin", "/bin")
    monkeypatch.delenv("PATH")
    assert parse_config("[DEFAULT]\nfilters_path=/a\n", "r.conf").exec_dirs == ()


def test_untrusted_path_entries_are_reported(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/tmp")
    warnings = parse_config("[DEFAULT]\nfilters_path=/a\n", "r.conf").warnings
    assert [w.code for w in warnings] == ["untrusted-path-dir"]
    assert "'/tmp' ignored" in warnings[0].message


def test_config_reads_every_option():
    c = parse_config(
        "[DEFAULT]\nfilters_path=/a\nexec_dirs=/x\nuse_syslog=True\n"
        "syslog_log_facility=local0\nsyslog_log_level=info\ndaemon_timeout=5\n"
        "rlimit_nofile=64\n",
        "r.conf",
    )
    assert c.use_syslog is True
    assert c.syslog_log_facility == logging.handlers.SysLogHandler.LOG_LOCAL0
    assert c.syslog_log_level == logging.INFO
    assert (c.daemon_timeout, c.rlimit_nofile) == (5, 64)


def test_config_facility_accepts_handler_attribute_names():
    c = parse_config("[DEFAULT]\nfilters_path=/a\nsyslog_log_facility=LOG_AUTH\n", "r")
    assert c.syslog_log_facility == logging.handlers.SysLogHandler.LOG_AUTH


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("use_syslog=oui", "Not a boolean: oui"),
        ("syslog_log_facility=moo", "Unexpected syslog_log_facility: moo"),
        ("syslog_log_level=bar", "Unexpected syslog_log_level: 'bar'"),
        ("daemon_timeout=soon", "invalid literal for int() with base 10: 'soon'"),
        ("rlimit_nofile=x", "invalid literal for int() with base 10: 'x'"),
    ],
)
def test_config_bad_value_names_file_line_and_oslos_message(line, message):
    with pytest.raises(ConfigValueError) as info:
        parse_config(f"[DEFAULT]\nfilters_path=/a\n{line}\n", "r.conf")
    assert (info.value.path, info.value.line, info.value.reason) == ("r.conf", 3, message)


def test_config_without_filters_path_is_an_error():
    with pytest.raises(PolicyError, match="filters_path"):
        parse_config("[DEFAULT]\nexec_dirs=/x\n", "r.conf")


def test_config_duplicate_option_is_an_error_like_strict_configparser():
    with pytest.raises(PolicyError) as info:
        parse_config("[DEFAULT]\nfilters_path=/a\nfilters_path=/b\n", "r.conf")
    assert info.value.line == 3


def test_config_relative_entries_are_dropped_and_reported():
    c = parse_config("[DEFAULT]\nfilters_path=/a, /b,c\nexec_dirs=/x,,y\n", "r.conf")
    assert c.filters_path == ("/a",)
    assert c.exec_dirs == ("/x",)
    codes = [(w.code, w.line) for w in c.warnings]
    assert ("untrimmed-entry", 2) in codes
    assert codes.count(("relative-entry", 2)) == 2
    assert codes.count(("relative-entry", 3)) == 2


def test_config_untrimmed_absolute_entry_is_kept_verbatim():
    c = parse_config("[DEFAULT]\nfilters_path=/a ,/b\n", "r.conf")
    assert c.filters_path == ("/a ", "/b")
    assert [w.code for w in c.warnings] == ["untrimmed-entry"]


# --- INI reader ---------------------------------------------------------------------

_INI_LINES = [
    "[Filters]",
    "[DEFAULT]",
    "[Other]",
    "[Filters] trailing",
    "a: CommandFilter, x, root",
    "A = RegExpFilter, y, root, y",
    "b:c=d",
    "  continued, more",
    "\tcontinued",
    "",
    "   ",
    "# comment",
    "  ; indented comment",
    "x",
    "=v",
    "name :",
    "dup: one",
    "dup: two",
    "[]",
    "[]=x",
    "[Filters]]",
    "  [Filters]",
    "a = b : c",
    "a: b = c",
    "k\t=\tv",
    "\x0bvt: x",
    "\u2003em: space",
    " : novalue",
]


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(_INI_LINES), max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_ini_reader_agrees_with_configparser(lines, newline):
    text = newline.join(lines) + newline
    parser = configparser.RawConfigParser(strict=False)
    if sys.version_info < (3, 10):
        # 3.9's section regex stops at the first ']' ('[Filters]]' is section
        # 'Filters'); privsepd reads the same on every Python, as 3.10+ does.
        parser.SECTCRE = re.compile(r"\[(?P<header>.+)\]")
    try:
        parser.read_string(text)
        expected = parser.items("Filters") if parser.has_section("Filters") else None
    except configparser.Error:
        expected = "error"
    try:
        ini = _parse_ini(text, "t", strict=False)
        got = [(k, o.value) for k, o in ini.items("Filters")] if "Filters" in ini.sections else None
    except PolicyError:
        got = "error"
    assert got == expected


def test_ini_reader_keeps_the_line_of_the_last_definition():
    ini = _parse_ini("[Filters]\na: 1\nb: 2\na: 3\n", "t", strict=False)
    assert [(k, o.value, o.line) for k, o in ini.items("Filters")] == [
        ("a", "3", 4),
        ("b", "2", 3),
    ]


def test_ini_parse_error_names_the_first_bad_line():
    with pytest.raises(PolicyError) as info:
        _parse_ini("[Filters]\nok: 1\nnot an option\nx\n", "t.filters", strict=False)
    assert (info.value.path, info.value.line) == ("t.filters", 3)


# --- .filters ------------------------------------------------------------------------


def test_filters_are_built_with_source_file_line_and_lowercased_name():
    fs = parse_filters("[Filters]\n\nMyEcho: CommandFilter, /bin/echo, root\n", "a.filters")
    assert fs[0].source == F.Source("a.filters", 3, "myecho")
    assert (fs[0].kind, fs[0].exec_path, fs[0].run_as) == ("CommandFilter", "/bin/echo", "root")


def test_filters_columns_are_stripped_and_may_span_lines():
    fs = parse_filters("[Filters]\nx :  CommandFilter ,  /bin/echo ,\n   root , a\n", "a")
    assert (fs[0].exec_path, fs[0].run_as, fs[0].args) == ("/bin/echo", "root", ("a",))


def test_filters_file_without_filters_section_is_an_error():
    with pytest.raises(PolicyError, match=r"no \[Filters\]"):
        parse_filters("[Other]\nx: CommandFilter, /bin/echo, root\n", "a.filters")


@pytest.mark.parametrize(
    "value", ["CommandFilter", "CommandFilter, /bin/ls", "KillFilter, root", "ReadFileFilter"]
)
def test_filter_with_too_few_columns_is_an_error_naming_the_line(value):
    with pytest.raises(PolicyError) as info:
        parse_filters(f"[Filters]\n# x\nbad: {value}\n", "a.filters")
    assert (info.value.path, info.value.line) == ("a.filters", 3)


def test_unknown_filter_class_is_skipped_with_a_warning():
    warnings: list = []
    fs = parse_filters("[Filters]\nx: NoSuchFilter, a, root\n", "a.filters", warnings)
    assert fs == []
    assert [(w.code, w.line) for w in warnings] == [("unknown-class", 2)]


def test_duplicate_name_keeps_the_last_definition_and_warns():
    warnings: list = []
    fs = parse_filters(
        "[Filters]\nx: CommandFilter, a, root\nx: CommandFilter, b, root\n", "f", warnings
    )
    assert [f.exec_path for f in fs] == ["b"]
    assert ("duplicate-name", 3) in [(w.code, w.line) for w in warnings]


def test_default_section_options_become_filters_first():
    warnings: list = []
    fs = parse_filters(
        "[Filters]\nb: CommandFilter, b, root\n[DEFAULT]\na: CommandFilter, a, root\n",
        "f",
        warnings,
    )
    assert [f.name for f in fs] == ["a", "b"]
    assert "default-section" in [w.code for w in warnings]


def test_regex_split_on_commas_is_reported():
    warnings: list = []
    parse_filters("[Filters]\nx: RegExpFilter, ls, root, ls, \\d{1,3}\n", "f", warnings, lint=True)
    assert [w.code for w in warnings] == ["regex-comma-split", "regex-comma-split"]


def test_dangerous_env_name_in_envfilter_is_reported():
    warnings: list = []
    parse_filters("[Filters]\nx: EnvFilter, env, root, LD_PRELOAD=, ls\n", "f", warnings, lint=True)
    assert "dangerous-env" in [w.code for w in warnings]


def test_bare_chaining_filter_is_reported_as_never_matching():
    warnings: list = []
    parse_filters("[Filters]\nx: ChainingFilter, nice, root\n", "f", warnings, lint=True)
    assert "never-matches" in [w.code for w in warnings]


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_filters_dir_is_read_in_sorted_order_with_any_suffix(safe):
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    _write(d / "b.filters", "[Filters]\nb: CommandFilter, b, root\n")
    _write(d / "a.conf", "[Filters]\na: CommandFilter, a, root\n")
    _write(d / ".hidden", "[Filters]\nh: CommandFilter, h, root\n")
    (d / "sub.filters").mkdir(mode=0o755)
    warnings: list = []
    fs = load_filters([str(d)], warnings=warnings)
    assert [f.name for f in fs] == ["a", "b", "privsep-helper"]
    assert "hidden" not in [f.name for f in fs]
    assert ("odd-suffix", str(d / "a.conf")) in [(w.code, w.path) for w in warnings]


def test_privsep_helper_is_always_allowed_last_as_root():
    fs = load_filters([])
    assert (fs[-1].name, fs[-1].exec_path, fs[-1].run_as) == (
        "privsep-helper",
        "privsep-helper",
        "root",
    )


def test_rules_for_one_command_in_several_files_are_reported_with_lint(safe):
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    _write(d / "a.filters", "[Filters]\na: CommandFilter, echo, root\n")
    _write(d / "b.filters", "[Filters]\nb: CommandFilter, echo, nobody\n")
    warnings: list = []
    load_filters([str(d)], warnings=warnings, lint=True)
    assert "order-dependent" in [w.code for w in warnings]


def test_missing_filters_dir_is_skipped_with_a_warning():
    warnings: list = []
    load_filters(["/nonexistent/privsepd"], warnings=warnings)
    assert "missing-dir" in [w.code for w in warnings]


def test_group_writable_filters_file_is_refused(safe):
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    _write(d / "a.filters", "[Filters]\na: CommandFilter, a, root\n", mode=0o664)
    with pytest.raises(UnsafePolicyError, match="group-writable"):
        load_filters([str(d)])


def test_filters_file_owned_by_another_user_is_refused(safe):
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    f = _write(d / "a.filters", "[Filters]\na: CommandFilter, a, root\n")
    os.chown(f, 54321, 0)
    with pytest.raises(UnsafePolicyError, match="untrusted user"):
        load_filters([str(d)])


def test_world_writable_filters_dir_is_refused(safe):
    d = safe / "rootwrap.d"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(UnsafePolicyError, match="world-writable"):
        load_filters([str(d)])


def test_load_policy_reads_conf_and_filters(safe):
    bindir = safe / "bin"
    bindir.mkdir(mode=0o755)
    os.symlink("/bin/true", bindir / "echo")
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    _write(d / "a.filters", "[Filters]\necho: CommandFilter, echo, root\n")
    conf = _write(safe / "rootwrap.conf", f"[DEFAULT]\nfilters_path={d}\nexec_dirs={bindir}\n")
    policy = load_policy(str(conf))
    assert policy.match(["echo", "hi"]).command == (f"{bindir}/echo", "hi")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757], ids=["world", "group", "other"])
def test_load_policy_does_not_search_an_exec_dir_others_can_write(safe, mode):
    planted = safe / "planted"
    planted.mkdir()
    planted.chmod(mode)
    fake = planted / "id"
    fake.write_text("#!/bin/sh\necho attacker code\n")
    fake.chmod(0o755)
    d = safe / "rootwrap.d"
    d.mkdir(mode=0o755)
    _write(d / "a.filters", "[Filters]\nid: CommandFilter, id, root\n")
    conf = _write(
        safe / "rootwrap.conf", f"[DEFAULT]\nfilters_path={d}\nexec_dirs={planted},/usr/bin,/bin\n"
    )
    policy = load_policy(str(conf))
    assert str(planted) not in policy.config.exec_dirs
    assert policy.match(["id"]).executable in ("/usr/bin/id", "/bin/id")
    (warning,) = [w for w in policy.warnings if w.code == "untrusted-exec-dir"]
    assert str(planted) in warning.message and "writable" in warning.message


def test_shipped_sample_policy_loads_without_errors_and_uses_every_class():
    root = Path(__file__).resolve().parents[2] / "filters"
    config = parse_config((root / "rootwrap.conf").read_text(), "rootwrap.conf")
    assert config.filters_path
    kinds = set()
    for path in sorted((root / "rootwrap.d").glob("*.filters")):
        kinds |= {f.kind for f in parse_filters(path.read_text(), str(path))}
    # EnvFilter never checks the arguments after the program and a bare
    # ChainingFilter never matches: those two are shown only as labelled holes.
    assert kinds == set(F.FILTER_CLASSES) - {"EnvFilter", "ChainingFilter"}
    holes = root / "examples-of-bad-rules" / "rules" / "holes.filters"
    bad = {f.kind for f in parse_filters(holes.read_text(), str(holes))}
    assert kinds | bad == set(F.FILTER_CLASSES)


# --- filters and decisions ----------------------------------------------------------


def test_command_filter_accepts_basename_or_exact_path_and_any_arguments(bindir):
    idx = index("e: CommandFilter, /usr/bin/echo, root\n")
    assert idx.filters[0].check(["echo", "-n", "x"]) is None
    assert idx.filters[0].check(["/usr/bin/echo"]) is None
    assert idx.filters[0].check(["/tmp/echo"]).code == "command"


def test_bare_executable_is_resolved_in_exec_dirs_order(tmp_path, bindir):
    other = tmp_path / "other"
    other.mkdir()
    os.symlink("/bin/true", other / "echo")
    d = index("e: CommandFilter, echo, root\n", [str(other), bindir]).match(["echo", "x"])
    assert d.executable == str(other / "echo")
    assert d.command == (str(other / "echo"), "x")


def test_allowed_decision_carries_filter_user_and_final_command(bindir):
    d = index("e: CommandFilter, echo, nobody\n", [bindir]).match(["echo", "hi"])
    assert d.allowed and d.outcome == "allow" and d.rc is None
    assert (d.filter.name, d.filter.kind, d.filter.source.line) == ("e", "CommandFilter", 2)
    assert (d.run_as, d.uid, d.gid) == ("nobody", 65534, 65534)
    assert d.command == (f"{bindir}/echo", "hi")
    assert d.env == {}


def test_no_filter_matched_is_rc_99_with_oslos_message(bindir):
    d = index("e: CommandFilter, echo, root\n", [bindir]).match(["cat", "/etc/shadow"])
    assert (d.outcome, d.rc, d.filter) == ("no-match", 99, None)
    assert d.message == "Unauthorized command: cat /etc/shadow (no filter matched)"


def test_matched_but_missing_executable_is_rc_96_with_oslos_message(bindir):
    d = index("m: CommandFilter, missing_tool, root\n", [bindir]).match(["missing_tool"])
    assert (d.outcome, d.rc, d.filter.name) == ("not-executable", 96, "m")
    assert d.message == "Executable not found: missing_tool (filter match = m)"


def test_a_later_executable_match_wins_over_an_earlier_missing_one(bindir):
    idx = index(
        "m: CommandFilter, /nonexistent/echo, root\ne: CommandFilter, echo, root\n", [bindir]
    )
    d = idx.match(["echo"])
    assert d.filter.name == "e"
    assert [(c.filter.name, c.miss and c.miss.code) for c in d.trace] == [
        ("m", "not-executable"),
        ("e", None),
    ]


def test_unknown_run_as_user_is_refused(bindir):
    d = index("e: CommandFilter, echo, no-such-user-xyz\n", [bindir]).match(["echo"])
    assert (d.outcome, d.allowed, d.rc) == ("bad-user", False, 99)
    assert "no-such-user-xyz" in d.reason


@pytest.mark.parametrize("word", ["a\0b", "\ud800"])
def test_argv_that_no_execve_could_carry_is_invalid(bindir, word):
    d = index("e: CommandFilter, echo, root\n", [bindir]).match(["echo", word])
    assert (d.outcome, d.allowed, d.rc) == ("invalid", False, 99)


def test_every_refused_candidate_says_why(bindir):
    idx = index(
        "a: RegExpFilter, echo, root, echo, [0-9]+\nb: RegExpFilter, echo, root, echo\n", [bindir]
    )
    d = idx.match(["echo", "x"])
    assert [(c.filter.name, c.miss.code) for c in d.trace] == [("a", "argument"), ("b", "arity")]
    assert "'x' does not match '[0-9]+'" in str(d.trace[0].miss)


def test_regexp_filter_anchors_every_argument_at_both_ends(bindir):
    f = index("a: RegExpFilter, echo, root, echo, [0-9]+\n").filters[0]
    assert f.check(["echo", "12"]) is None
    assert f.check(["echo", "12x"]).code == "argument"
    assert f.check(["echo", "x12"]).code == "argument"


def test_path_filter_passes_the_resolved_path_to_the_command(tmp_path, bindir):
    base = tmp_path / "data"
    (base / "a").mkdir(parents=True)
    d = index(f"c: PathFilter, chown, root, nova, {base}\n", [bindir]).match(
        ["chown", "nova", f"{base}/a/../x"]
    )
    assert d.command == (f"{bindir}/chown", "nova", f"{base}/x")


def test_env_filter_sets_only_the_listed_variables_and_strips_them_from_argv(bindir):
    idx = index("d: EnvFilter, env, root, CONFIG_FILE=, NETWORK_ID=, dnsmasq\n", [bindir])
    d = idx.match(["env", "CONFIG_FILE=/c", "NETWORK_ID=7", "dnsmasq", "--x"])
    assert d.command == (f"{bindir}/dnsmasq", "--x")
    assert d.env == {"CONFIG_FILE": "/c", "NETWORK_ID": "7"}
    assert idx.match(["env", "CONFIG_FILE=/c", "dnsmasq"]).outcome == "no-match"


def test_chained_command_must_be_allowed_with_the_same_run_as(bindir):
    idx = index(
        "n: ChainingRegExpFilter, nice, root, nice, -?\\d+\n"
        "e: CommandFilter, echo, nobody\nc: CommandFilter, cat, root\n",
        [bindir],
    )
    assert idx.match(["nice", "5", "echo"]).outcome == "no-match"
    d = idx.match(["nice", "5", "cat", "/x"])
    assert d.command == (f"{bindir}/nice", "5", "cat", "/x")
    assert d.chain is not None and d.chain.filter.name == "c"


def test_ip_netns_exec_runs_the_whole_command_through_ip(bindir):
    idx = index("x: IpNetnsExecFilter, ip, root\ne: CommandFilter, echo, root\n", [bindir])
    d = idx.match(["ip", "netns", "exec", "ns", "echo", "hi"])
    assert d.command == (f"{bindir}/ip", "netns", "exec", "ns", "echo", "hi")


def test_kill_filter_accepts_listed_signal_for_listed_executable(tmp_path):
    exe = tmp_path / "sleepy"
    shutil.copy(os.path.realpath(shutil.which("sleep")), exe)
    proc = subprocess.Popen([str(exe), "60"])
    try:
        idx = index(f"k: KillFilter, root, {exe}, -9\n", ["/bin", "/usr/bin"])
        assert idx.match(["kill", "-9", str(proc.pid)]).allowed
        assert idx.match(["kill", "-HUP", str(proc.pid)]).trace[0].miss.code == "signal"
        assert idx.match(["kill", "-9", str(os.getpid())]).trace[0].miss.code == "process"
    finally:
        proc.kill()
        proc.wait()


def test_read_file_filter_allows_exactly_cat_of_the_file():
    idx = index("r: ReadFileFilter, /etc/hostname\n", ["/bin", "/usr/bin"])
    assert idx.match(["cat", "/etc/hostname"]).allowed
    assert not idx.match(["cat", "/etc/hostname", "/etc/shadow"]).allowed


def test_signal_exit_code_is_128_plus_signal():
    assert (signal_exit_code(-9), signal_exit_code(3)) == (137, 3)


# --- index ---------------------------------------------------------------------------


def test_index_only_examines_filters_that_can_match_argv0():
    lines = "".join(f"c{i}: CommandFilter, /bin/tool{i}, root\n" for i in range(500))
    idx = index(lines + "e: CommandFilter, echo, root\n")
    assert [f.name for f in idx.candidates(["echo", "x"])] == ["e"]


def test_unkeyable_filters_are_merged_into_every_lookup_in_policy_order():
    idx = index(
        "a: CommandFilter, echo, root\n"
        "b: RegExpFilter, x, root, (echo|cat), .*\n"
        "c: CommandFilter, /bin/echo, root\n"
    )
    assert [f.name for f in idx.fallback] == ["b"]
    assert [f.name for f in idx.candidates(["echo"])] == ["a", "b", "c"]
    assert [f.name for f in idx.candidates(["cat"])] == ["b"]


def test_env_filters_are_keyed_by_the_command_after_the_assignments():
    idx = index("d: EnvFilter, env, root, A=, dnsmasq\nh: EnvFilter, env, root, A=, haproxy\n")
    assert [f.name for f in idx.candidates(["env", "A=1", "haproxy"])] == ["h"]
    assert [f.name for f in idx.candidates(["A=1", "dnsmasq"])] == ["d"]


def test_first_match_in_policy_order_wins(bindir):
    idx = index("a: CommandFilter, echo, nobody\nb: CommandFilter, echo, root\n", [bindir])
    assert idx.match(["echo"]).filter.name == "a"


def test_path_filter_command_uses_the_path_it_judged_not_a_second_resolution(tmp_path):
    base = tmp_path / "base"
    (base / "real").mkdir(parents=True)
    link = base / "link"
    link.symlink_to(base / "real")
    (f,) = parse_filters(f"[Filters]\nc: PathFilter, /bin/chown, root, pass, {base}\n", "t")
    argv = ["chown", "nobody", str(link)]
    assert f.check(argv) is None
    link.unlink()
    link.symlink_to("/etc")  # swapped after the check
    assert f.command(argv, "/bin/chown") == ["/bin/chown", "nobody", str(base / "real")]


# --- dangerous environment names (what EnvFilter refuses in strict mode) ---------------

# Written out here, not read from the module: the list is the specification.
EXACT_DANGEROUS = [
    "PATH", "BASH_ENV", "ENV", "IFS", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES",
    "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "NIS_PATH", "NLSPATH", "NODE_OPTIONS",
    "PERL5LIB", "PERL5OPT", "PERLLIB", "PS4", "RESOLV_HOST_CONF", "RES_OPTIONS",
    "RUBYLIB", "RUBYOPT", "SHELLOPTS", "BASHOPTS", "TMPDIR", "TZDIR",
]  # fmt: skip


@pytest.mark.parametrize("name", EXACT_DANGEROUS)
def test_exactly_named_dangerous_variables_are_dangerous_in_any_case(name):
    assert F.dangerous_env_name(name)
    assert F.dangerous_env_name(name.lower())


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "LD_AUDIT", "MALLOC_CHECK_", "PYTHONPATH", "BASH_FUNC_f%%"]
)
def test_prefix_dangerous_variables_are_dangerous(name):
    assert F.dangerous_env_name(name)


@pytest.mark.parametrize(
    "name", ["PATHX", "MYPATH", "IFSX", "LANG", "TZ", "NETWORK_ID", "CONFIG_FILE"]
)
def test_ordinary_variables_are_not_dangerous(name):
    assert not F.dangerous_env_name(name)


@pytest.mark.parametrize("name", ["PATH", "BASH_ENV", "IFS", "GCONV_PATH"])
def test_env_filter_refuses_a_dangerous_exact_name_at_match_time(name):
    idx = index(f"e: EnvFilter, env, root, {name}=, echo\n", ["/bin"])
    decision = idx.match(["env", f"{name}=/tmp/evil", "echo"])
    assert not decision.allowed
    assert decision.deviations[0].miss.code == "env-dangerous"
