"""Native TOML policy: schema, strictness, line numbers, command rules, loader."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsepd.constraints import (
    Choice,
    DecimalInt,
    InterfaceName,
    IntRange,
    OneOf,
    PathUnder,
    Regex,
    Str,
)
from privsepd.errors import PolicyError, UnsafePolicyError
from privsepd.policy.filters import Filter
from privsepd.policy.index import FilterIndex
from privsepd.policy.loader import load_policy
from privsepd.policy.native import CHAIN, RUN_AS_HELPER, NativeCommand, _Reader, parse_policy
from privsepd.policy.trust import Trust

DEMO = """\
[context.demo]
capabilities = ["CAP_NET_ADMIN"]
user = "nobody"
group = "nogroup"
umask = "0027"
timeout = 10
allow_uids = [1000]
allow_groups = ["neutron"]
audit = "syslog"

[context.demo.sandbox]
landlock_read = ["/usr", "/etc"]
landlock_write = ["/run/demo"]
seccomp_deny = ["mount", "ptrace"]

[[function]]
context = "demo"
name = "privsepd.cli.demo:set_mtu"
timeout = 5
args.dev = { ifname = true }
args.mtu = { int_range = [68, 9000] }

[[command]]
context = "demo"
name = "ip-link-mtu"
exec = "/usr/sbin/ip"
args = ["link", "set", {ifname = true}, "mtu", {int_range = [68, 9000]}]
capabilities = ["CAP_NET_ADMIN"]
env = { LANG = "C" }
"""


def parse(text: str, path: str = "/etc/privsepd/p.toml"):
    return parse_policy(textwrap.dedent(text), path)


def error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


# --- contexts -------------------------------------------------------------------


def test_context_fields_are_read():
    ctx = parse(DEMO).contexts["demo"]
    assert ctx.capabilities == {"CAP_NET_ADMIN"}
    assert (ctx.user, ctx.group, ctx.stay_root) == ("nobody", "nogroup", False)
    assert ctx.umask == 0o027
    assert ctx.timeout == 10.0
    assert ctx.allow_uids == {1000}
    assert ctx.allow_groups == ("neutron",)
    assert ctx.audit == "syslog"
    assert ctx.sandbox.landlock_write == ("/run/demo",)
    assert ctx.sandbox.seccomp_deny == ("mount", "ptrace")


def test_context_defaults_are_unprivileged():
    ctx = parse("[context.c]\n").contexts["c"]
    assert ctx.capabilities == frozenset()
    assert ctx.user is None and not ctx.stay_root
    assert ctx.umask == 0o077 and ctx.timeout == 30.0
    assert ctx.allow_uids == frozenset() and ctx.sandbox.empty


def test_context_source_line_is_its_header():
    assert parse("\n\n[context.c]\n").contexts["c"].source.line == 3


def test_lowercase_capability_is_canonicalised():
    ctx = parse('[context.c]\ncapabilities = ["net_admin"]\n').contexts["c"]
    assert ctx.capabilities == {"CAP_NET_ADMIN"}


def test_unknown_capability_is_error_with_line():
    err = error('[context.c]\nuser = "x"\ncapabilities = ["CAP_NET_ADMN"]\n')
    assert err.line == 3 and "CAP_NET_ADMN" in str(err)


def test_misspelt_context_key_is_error_naming_key_and_line():
    err = error('[context.c]\nuser = "x"\ncapabilites = ["CAP_NET_ADMIN"]\n')
    assert err.path == "/etc/privsepd/p.toml"
    assert err.line == 3
    assert "'capabilites'" in str(err)


def test_unknown_sandbox_key_is_error():
    err = error('[context.c]\n[context.c.sandbox]\nlandlock_rw = ["/x"]\n')
    assert err.line == 3 and "landlock_rw" in str(err)


def test_unknown_top_level_key_is_error():
    err = error("version = 1\n[context.c]\n")
    assert err.line == 1 and "version" in str(err)


def test_stay_root_with_user_is_error():
    assert "stay_root" in str(error('[context.c]\nstay_root = true\nuser = "nobody"\n'))


def test_user_root_needs_stay_root():
    err = error('[context.c]\nuser = "root"\n')
    assert err.line == 2 and "stay_root" in str(err)


def test_stay_root_alone_is_allowed():
    assert parse("[context.c]\nstay_root = true\n").contexts["c"].stay_root


def test_umask_accepts_toml_octal_integer():
    assert parse("[context.c]\numask = 0o022\n").contexts["c"].umask == 0o022


def test_umask_rejects_non_octal_string():
    assert error('[context.c]\numask = "0099"\n').line == 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", '"30"'])
def test_timeout_must_be_positive_finite_number(value):
    assert error(f"[context.c]\ntimeout = {value}\n").line == 2


def test_allow_uids_must_be_numeric():
    assert error('[context.c]\nallow_uids = ["nova"]\n').line == 2


def test_seccomp_deny_unknown_syscall_is_error():
    err = error('[context.c.sandbox]\nseccomp_deny = ["mounnt"]\n')
    assert "mounnt" in str(err) and err.line == 2


def test_landlock_path_must_be_absolute():
    assert error('[context.c.sandbox]\nlandlock_read = ["usr"]\n').line == 2


def test_audit_target_must_be_known_or_absolute():
    assert error('[context.c]\naudit = "journal"\n').line == 2


def test_context_name_with_slash_is_error():
    assert error('[context."a/b"]\n').line == 1


def test_invalid_toml_error_carries_line():
    err = error('[context.c]\nuser = "x"\ntimeout = \n')
    assert err.line == 3 and "invalid TOML" in str(err)


# --- functions ------------------------------------------------------------------


def test_function_constraints_are_built():
    fn = parse(DEMO).functions["privsepd.cli.demo:set_mtu"]
    assert fn.context == "demo" and fn.timeout == 5.0 and fn.strict
    assert fn.constraints == {"dev": InterfaceName(), "mtu": IntRange(68, 9000)}


def test_function_constraints_are_read_only():
    fn = parse(DEMO).functions["privsepd.cli.demo:set_mtu"]
    with pytest.raises(TypeError):
        fn.constraints["dev"] = Str()  # type: ignore[index]


def test_function_strict_can_be_turned_off_explicitly():
    text = '[[function]]\ncontext = "c"\nname = "m:f"\nstrict = false\n'
    assert not parse(text).functions["m:f"].strict


def test_function_misspelt_constraint_modifier_is_error_at_its_line():
    text = """\
    [[function]]
    context = "c"
    name = "m:f"
    args.p = { path_under = "/srv", must_exits = true }
    """
    err = error(text)
    assert err.line == 4 and "must_exits" in str(err)


def test_function_name_must_be_module_colon_qualname():
    err = error('[[function]]\ncontext = "c"\nname = "m.f"\n')
    assert err.line == 3


def test_function_without_context_is_error():
    assert "'context'" in str(error('[[function]]\nname = "m:f"\n'))


def test_function_defined_twice_in_one_file_is_error_naming_both():
    text = (
        '[[function]]\ncontext = "c"\nname = "m:f"\n\n[[function]]\ncontext = "c"\nname = "m:f"\n'
    )
    err = error(text)
    assert err.line == 5 and ":1" in str(err)


def test_second_array_table_is_located_by_index():
    text = (
        '[[function]]\ncontext = "c"\nname = "m:f"\n\n[[function]]\ncontext = "c"\nname = "bad"\n'
    )
    assert error(text).line == 7


# --- command parsing ------------------------------------------------------------


def test_command_patterns_are_built_for_argv():
    cmd = parse(DEMO).commands["ip-link-mtu"]
    assert isinstance(cmd, Filter)
    assert cmd.exec_path == "/usr/sbin/ip" and cmd.run_as == RUN_AS_HELPER  # no run_as given
    assert cmd.patterns == ("link", "set", InterfaceName(), "mtu", DecimalInt(IntRange(68, 9000)))
    assert cmd.rest is None and cmd.context == "demo"
    assert cmd.capabilities == {"CAP_NET_ADMIN"}
    assert dict(cmd.env) == {"LANG": "C"}
    assert cmd.source.line == 23 and cmd.source.name == "ip-link-mtu"


def test_command_without_context_belongs_to_the_shim():
    cmd = parse('[[command]]\nname = "x"\nexec = "/bin/true"\n').commands["x"]
    assert cmd.context is None


def test_command_exec_must_be_absolute():
    assert error('[[command]]\nname = "x"\nexec = "true"\n').line == 3


def test_command_exec_must_be_normalised():
    assert error('[[command]]\nname = "x"\nexec = "/bin/../tmp/x"\n').line == 3


def test_command_rest_true_admits_any_strings():
    cmd = parse('[[command]]\nname = "x"\nexec = "/bin/echo"\nargs = [{rest = true}]\n')
    assert cmd.commands["x"].rest == Str()


def test_command_rest_with_constraint():
    text = '[[command]]\nname = "x"\nexec = "/bin/rm"\nargs = [{rest = {regex = "[a-z]+"}}]\n'
    assert parse(text).commands["x"].rest == Regex("[a-z]+")


def test_command_chain_marker():
    text = '[[command]]\nname = "x"\nexec = "/usr/bin/nice"\nargs = [{chain = true}]\n'
    assert parse(text).commands["x"].rest is CHAIN


def test_command_rest_must_be_last():
    text = '[[command]]\nname = "x"\nexec = "/bin/echo"\nargs = [{rest = true}, "a"]\n'
    assert error(text).line == 4


def test_command_choice_must_be_strings():
    text = '[[command]]\nname = "x"\nexec = "/bin/echo"\nargs = [{choice = [1, 2]}]\n'
    assert "strings" in str(error(text))


def test_command_bool_constraint_is_error():
    text = '[[command]]\nname = "x"\nexec = "/bin/echo"\nargs = [{bool = true}]\n'
    assert error(text).line == 4


def test_command_unknown_key_is_error():
    err = error('[[command]]\nname = "x"\nexec = "/bin/true"\nrun-as = "root"\n')
    assert err.line == 4 and "run-as" in str(err)


def test_command_env_value_must_be_string():
    text = '[[command]]\nname = "x"\nexec = "/bin/true"\nenv = { A = 1 }\n'
    assert error(text).line == 4


# --- command matching -----------------------------------------------------------


def command(patterns=(), rest=None, **kw) -> NativeCommand:
    return NativeCommand("t", kw.pop("exec_path", "/usr/sbin/ip"), patterns, rest, **kw)


MTU = command(["link", "set", InterfaceName(), "mtu", DecimalInt(IntRange(68, 9000))])


def test_native_command_admits_matching_argv():
    assert MTU.check(["ip", "link", "set", "eth0", "mtu", "1500"]) is None


def test_native_command_admits_exact_exec_path_as_argv0():
    assert MTU.check(["/usr/sbin/ip", "link", "set", "eth0", "mtu", "1500"]) is None


def test_native_command_rejects_other_path_with_same_basename():
    assert MTU.check(["/tmp/ip", "link", "set", "eth0", "mtu", "1500"]).code == "command"


def test_native_command_rejects_extra_argument():
    assert MTU.check(["ip", "link", "set", "eth0", "mtu", "1500", "x"]).code == "arity"


def test_native_command_rejects_non_canonical_number():
    assert MTU.check(["ip", "link", "set", "eth0", "mtu", "01500"]).code == "argument"


def test_native_command_rejects_trailing_newline():
    cmd = command([Regex("[a-z]+$")])
    assert cmd.check(["ip", "abc\n"]) is not None


def test_native_command_rejects_nul_in_argv():
    assert command(rest=Str()).check(["ip", "a\0b"]) is not None


def test_native_command_without_args_admits_no_arguments():
    assert command().check(["ip"]) is None
    assert command().check(["ip", "x"]).code == "arity"


def test_native_command_rest_checks_every_further_argument():
    cmd = command(["addr"], Choice("show", "list"))
    assert cmd.check(["ip", "addr", "show", "list"]) is None
    assert cmd.check(["ip", "addr", "show", "flush"]) is not None


def test_native_command_substitutes_resolved_path(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    cmd = command([PathUnder(str(tmp_path))], exec_path="/bin/ls")
    argv = ["ls", str(tmp_path / "link")]
    assert cmd.check(argv) is None
    assert cmd.command(argv, "/bin/ls") == ["/bin/ls", str(tmp_path / "real")]


def test_native_command_rest_paths_are_resolved_and_reported_for_pinning(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    cmd = command(["-v"], PathUnder(str(tmp_path)), exec_path="/bin/ls")
    argv = ["ls", "-v", str(tmp_path / "link"), str(tmp_path / "real")]
    assert cmd.check(argv) is None
    real = str(tmp_path / "real")
    assert cmd.command(argv, "/bin/ls") == ["/bin/ls", "-v", real, real]
    assert cmd.path_arguments(argv) == {2: (str(tmp_path), False), 3: (str(tmp_path), False)}


def test_native_command_one_of_reports_the_path_member_that_admitted_the_argument(tmp_path):
    cmd = command([OneOf(Choice("-"), PathUnder(str(tmp_path), must_exist=True))])
    assert cmd.path_arguments(["ip", "-"]) == {}
    assert cmd.path_arguments(["ip", str(tmp_path)]) == {1: (str(tmp_path), True)}


def test_native_command_without_run_as_runs_as_the_helper_that_decides_it():
    cmd = command(context="demo")
    assert cmd.run_as == RUN_AS_HELPER
    assert cmd.user() == (os.geteuid(), os.getegid())


def test_contextless_command_without_run_as_runs_as_the_unprivileged_default_account():
    import pwd

    cmd = parse('[[command]]\nname = "x"\nexec = "/bin/true"\n').commands["x"]
    try:
        expected = pwd.getpwnam("privsepd")
    except KeyError:
        expected = pwd.getpwnam("nobody")
    assert cmd.user() == (expected.pw_uid, expected.pw_gid) and expected.pw_uid != 0


def test_command_runs_as_root_only_when_the_rule_says_so():
    text = '[[command]]\nname = "x"\nexec = "/bin/true"\nrun_as = "root"\n'
    assert parse(text).commands["x"].user() == (0, 0)


def test_native_command_adds_its_env():
    assert command(env={"LANG": "C"}).environment(["ip"]) == {"LANG": "C"}


def _chain_index(*extra: NativeCommand) -> FilterIndex:
    netns = command(["netns", "exec", Regex("[a-z0-9]+")], CHAIN)
    return FilterIndex([netns, *extra])


def test_chain_admits_command_allowed_by_another_rule():
    d = _chain_index(MTU).match(
        ["ip", "netns", "exec", "ns1", "ip", "link", "set", "eth0", "mtu", "1500"]
    )
    assert d.allowed and d.chain is not None and d.chain.filter is MTU


def test_chain_refuses_command_no_rule_allows():
    d = _chain_index(MTU).match(["ip", "netns", "exec", "ns1", "ip", "link", "delete", "eth0"])
    assert not d.allowed


def test_chain_refuses_chained_path_outside_the_rule():
    argv = ["ip", "netns", "exec", "ns1", "/tmp/ip", "link", "set", "eth0", "mtu", "1500"]
    assert not _chain_index(MTU).match(argv).allowed


def test_chain_refuses_leaf_with_other_run_as():
    leaf = command(["link", "set", InterfaceName(), "mtu", DecimalInt(IntRange())], run_as="nobody")
    argv = ["ip", "netns", "exec", "ns1", "ip", "link", "set", "eth0", "mtu", "1500"]
    assert not _chain_index(leaf).match(argv).allowed


def test_chain_with_nothing_to_chain_is_refused():
    assert not _chain_index(MTU).match(["ip", "netns", "exec", "ns1"]).allowed


# --- loader (real root-owned files) -------------------------------------------------


@pytest.fixture
def etc(trusted_dir) -> Path:
    return trusted_dir


def write(path: Path, text: str, mode: int = 0o644) -> str:
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return str(path)


def dropins(etc: Path) -> Path:
    d = etc / "policy.d"
    d.mkdir(mode=0o755)
    return d


def test_load_main_file(etc):
    policy = load_policy([write(etc / "policy.toml", DEMO)])
    assert set(policy.contexts) == {"demo"}
    assert list(policy.functions_for("demo")) == ["privsepd.cli.demo:set_mtu"]
    assert policy.files == [str(etc / "policy.toml")]


def test_dropins_are_read_in_sorted_order(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    for name in ("20-b.toml", "10-a.toml"):
        rule = name.split(".")[0]
        write(d / name, f'[[command]]\ncontext = "demo"\nname = "{rule}"\nexec = "/bin/true"\n')
    policy = load_policy([main, str(d)])
    assert [f.name for f in policy.filters_for("demo")] == ["ip-link-mtu", "10-a", "20-b"]


def test_dropin_may_add_function_to_existing_context(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    write(d / "x.toml", '[[function]]\ncontext = "demo"\nname = "m:g"\n')
    assert load_policy([main, str(d)]).functions["m:g"].context == "demo"


def test_dropin_redefining_context_is_error_naming_both_files(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    other = write(d / "x.toml", '\n[context.demo]\ncapabilities = ["CAP_SYS_ADMIN"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy([main, str(d)])
    assert info.value.path == other and info.value.line == 2
    assert f"{main}:1" in str(info.value)


def test_dropin_redefining_function_is_error(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    write(d / "x.toml", '[[function]]\ncontext = "demo"\nname = "privsepd.cli.demo:set_mtu"\n')
    with pytest.raises(PolicyError, match="already defined"):
        load_policy([main, str(d)])


def test_dropin_redefining_command_is_error(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    write(d / "x.toml", '[[command]]\nname = "ip-link-mtu"\nexec = "/bin/true"\n')
    with pytest.raises(PolicyError, match="already defined"):
        load_policy([main, str(d)])


def test_unknown_context_reference_is_error_with_line(etc):
    main = write(etc / "policy.toml", '\n[[function]]\ncontext = "nope"\nname = "m:f"\n')
    with pytest.raises(PolicyError, match="unknown context 'nope'") as info:
        load_policy([main])
    assert info.value.path == main and info.value.line == 2


def test_dropin_dir_skips_hidden_backup_and_other_files(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    for name in (".hidden.toml", "x.toml~", "README", "x.toml.dpkg-old"):
        write(d / name, "this is not toml")
    policy = load_policy([main, str(d)])
    assert sorted(os.path.basename(p) for p in policy.ignored) == sorted(
        [".hidden.toml", "x.toml~", "README", "x.toml.dpkg-old"]
    )


def test_missing_main_file_is_error(etc):
    with pytest.raises(PolicyError, match="no such file"):
        load_policy([str(etc / "nope.toml")])


def test_missing_dropin_dir_is_skipped(etc):
    main = write(etc / "policy.toml", DEMO)
    assert load_policy([main, str(etc / "policy.d")]).contexts


def test_group_writable_dropin_file_is_refused(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    write(d / "x.toml", "", mode=0o664)
    with pytest.raises(UnsafePolicyError, match="group-writable"):
        load_policy([main, str(d)])


def test_dropin_dir_owned_by_other_user_is_refused(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    os.chown(d, 54321, 54321)
    with pytest.raises(UnsafePolicyError) as info:
        load_policy([main, str(d)])
    assert info.value.offending == str(d)


def test_policy_owned_by_other_user_loads_only_with_test_trust(etc):
    main = write(etc / "policy.toml", DEMO)
    os.chown(main, 54321, 54321)
    with pytest.raises(UnsafePolicyError):
        load_policy([main])
    assert load_policy([main], Trust(frozenset({0, 54321}))).contexts


def test_policy_file_with_other_suffix_is_error(etc):
    with pytest.raises(PolicyError, match="must end in"):
        load_policy([write(etc / "policy.conf", DEMO)])


def test_shim_index_sees_only_contextless_commands(etc):
    text = DEMO + '\n[[command]]\nname = "shim-true"\nexec = "/bin/true"\n'
    policy = load_policy([write(etc / "policy.toml", text)])
    shim = policy.index(None)
    assert shim.match(["true"]).allowed
    assert not shim.match(["ip", "link", "set", "eth0", "mtu", "1500"]).allowed


def test_context_index_sees_only_its_commands(etc):
    text = DEMO + '\n[[command]]\nname = "shim-true"\nexec = "/bin/true"\n'
    policy = load_policy([write(etc / "policy.toml", text)])
    demo = policy.index("demo")
    assert not demo.match(["true"]).allowed
    assert demo.match(["ip", "link", "set", "eth0", "mtu", "1500"]).allowed


def test_filters_dropin_is_loaded_through_rootwrap_rules(etc):
    main = write(etc / "policy.toml", DEMO)
    d = dropins(etc)
    write(d / "50-old.filters", "[Filters]\ntrue: CommandFilter, /bin/true, root\n")
    policy = load_policy([main, str(d)])
    decision = policy.index(None).match(["true"])
    assert decision.allowed and decision.filter.kind == "CommandFilter"
    assert decision.filter.source.path == str(d / "50-old.filters")


def test_filters_rules_and_native_commands_keep_load_order(etc):
    d = dropins(etc)
    write(d / "10-a.toml", '[[command]]\nname = "a"\nexec = "/bin/true"\n')
    write(d / "20-b.filters", "[Filters]\nb: CommandFilter, /bin/true, root\n")
    policy = load_policy([str(d)])
    assert [f.name for f in policy.filters_for(None)] == ["a", "b"]
    assert policy.index(None).match(["true"]).filter.name == "a"


def test_filters_dropin_error_names_file(etc):
    d = dropins(etc)
    bad = write(d / "x.filters", "[Other]\n")
    with pytest.raises(PolicyError) as info:
        load_policy([str(d)])
    assert info.value.path == bad


# --- shipped examples -------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_shipped_examples_load_together(etc):
    shutil.copy(REPO / "filters" / "demo.toml", etc / "policy.toml")
    shutil.copytree(REPO / "filters" / "privsepd.d", etc / "policy.d")
    for path in [etc / "policy.toml", etc / "policy.d", *(etc / "policy.d").iterdir()]:
        os.chown(path, 0, 0)
        path.chmod(0o755 if path.is_dir() else 0o644)
    policy = load_policy([str(etc / "policy.toml"), str(etc / "policy.d")])
    assert set(policy.contexts) == {"demo", "storage"}
    demo = policy.index("demo")
    argv = ["ip", "netns", "exec", "ns1", "ip", "link", "set", "eth0", "mtu", "9000"]
    assert demo.match(argv).allowed
    shim = policy.index(None).match(["conntrack", "-D", "-d", "192.0.2.1"])
    assert shim.filter is not None and shim.filter.name == "conntrack-delete"


# --- fuzzing ------------------------------------------------------------------------

_FUZZ_KEYS = st.sampled_from(
    [
        "context",
        "function",
        "command",
        "name",
        "exec",
        "args",
        "regex",
        "rest",
        "chain",
        "capabilities",
        "user",
        "stay_root",
        "umask",
        "timeout",
        "sandbox",
        "int_range",
        "x",
    ]
)
_FUZZ_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_FUZZ_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_FUZZ_KEYS, _FUZZ_VALUES, max_size=4))
def test_reader_raises_only_policy_errors_on_any_document(doc):
    try:
        _Reader("/p.toml", "").read(doc)
    except PolicyError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_policy_raises_only_policy_errors_on_any_text(text):
    try:
        parse_policy(text, "/p.toml")
    except PolicyError:
        pass
