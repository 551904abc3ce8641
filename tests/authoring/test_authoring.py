"""``privsepd filters``: check, explain, convert, learn.

The OpenStack filter sets in tests/data/openstack/ are representative
excerpts of what nova, neutron, cinder, manila and ironic ship; ``check``
must name the specific rule and the specific reason, and leave tight rules
alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privsepd.authoring.check import check_paths
from privsepd.authoring.cli import main
from privsepd.authoring.convert import convert_filters, fullmatch_is_oslo
from privsepd.authoring.learn import (
    Record,
    generalise,
    load_records,
    propose,
    record_command,
    render_filters,
    render_toml,
    verify,
)
from privsepd.policy.index import FilterIndex
from privsepd.policy.native import parse_policy
from privsepd.policy.rootwrap import parse_filters

DATA = Path(__file__).parent.parent / "data" / "openstack"


def lint(name: str):
    report = check_paths([str(DATA / name)], ownership=False)
    return [f for f in report.findings if f.code != "missing-executable"]


def codes_for(findings, rule: str) -> set[tuple[str, str]]:
    return {(f.code, f.severity) for f in findings if f.rule == rule}


# -- check: OpenStack filter sets ----------------------------------------------------------

FLAGGED = [
    ("nova-compute.filters", "tee", "unrestricted-program", "error"),
    ("nova-compute.filters", "dd", "unrestricted-program", "error"),
    ("nova-compute.filters", "ip", "unrestricted-program", "error"),
    ("nova-compute.filters", "chown", "unrestricted-program", "error"),
    ("nova-compute.filters", "mkdir", "unrestricted-program", "warning"),
    ("nova-compute.filters", "drv_cfg", "command-filter-args", "error"),
    ("nova-compute.filters", "read_passwd", "world-writable-path", "error"),
    ("nova-compute.filters", "privsep-rootwrap", "world-writable-path", "error"),
    ("nova-compute.filters", "privsep-rootwrap", "path-traversal", "error"),
    ("nova-compute.filters", "ln", "wildcard-path", "error"),
    ("nova-compute.filters", "ln", "path-traversal", "error"),
    ("nova-compute.filters", "dnsmasq", "env-unchecked", "error"),
    ("nova-compute.filters", "blockdev", "path-traversal", "warning"),
    ("neutron-l3.filters", "haproxy", "wildcard-path", "error"),
    ("neutron-l3.filters", "sysctl", "unrestricted-program", "error"),
    ("neutron-l3.filters", "keepalived", "unrestricted-program", "error"),
    ("neutron-l3.filters", "radvd", "unrestricted-program", "error"),
    ("neutron-l3.filters", "ip_exec", "chaining", "warning"),
    ("neutron-l3.filters", "ip", "ip-filter", "info"),
    ("neutron-l3.filters", "kill_metadata", "kill-shared-executable", "warning"),
    ("neutron-l3.filters", "iptables-restore", "unrestricted-program", "warning"),
    ("neutron-dhcp.filters", "dnsmasq", "unrestricted-program", "error"),
    ("neutron-dhcp.filters", "dnsmasq_env", "env-unchecked", "error"),
    ("neutron-linuxbridge-plugin.filters", "sysctl", "unrestricted-program", "error"),
    ("cinder-volume.filters", "pvs_lvmconf", "env-unchecked", "error"),
    ("cinder-volume.filters", "pvs", "env-unchecked", "warning"),
    ("cinder-volume.filters", "netapp_nfs_find", "loose-regex", "warning"),
    ("cinder-volume.filters", "ionice_1", "chaining", "warning"),
    ("cinder-volume.filters", "cgexec", "chaining", "warning"),
    ("cinder-volume.filters", "cat", "unrestricted-program", "error"),
    ("cinder-volume.filters", "qemu-img", "unrestricted-program", "error"),
    ("cinder-volume.filters", "find", "unrestricted-program", "error"),
    ("manila-share.filters", "sh", "unrestricted-program", "error"),
    ("manila-share.filters", "ganesha_conf", "shell-command", "error"),
    ("manila-share.filters", "ganesha_conf", "shadowed", "warning"),
    ("manila-share.filters", "find", "path-traversal", "warning"),
    ("manila-share.filters", "tee_exports", "command-filter-args", "error"),
    ("manila-share.filters", "rsync", "unrestricted-program", "error"),
    ("ironic-images.filters", "qemu-img", "unrestricted-program", "error"),
    ("ironic-utils.filters", "dd", "unrestricted-program", "error"),
    ("ironic-utils.filters", "mkfs", "unrestricted-program", "error"),
]


@pytest.mark.parametrize(("file", "rule", "code", "severity"), FLAGGED)
def test_check_flags_openstack_rule_with_specific_reason(file, rule, code, severity):
    assert (code, severity) in codes_for(lint(file), rule)


CLEAN = [
    ("nova-compute.filters", "read_initiator"),
    ("nova-compute.filters", "kill_radvd"),
    ("nova-compute.filters", "ploop"),
    ("nova-compute.filters", "blkid"),
    ("neutron-l3.filters", "find"),
    ("neutron-l3.filters", "kill_radvd_usr"),
    ("neutron-l3.filters", "l3_tc_show_qdisc"),
    ("neutron-linuxbridge-plugin.filters", "tc_replace_tbf"),
    ("cinder-volume.filters", "lvremove"),
]


@pytest.mark.parametrize(("file", "rule"), CLEAN)
def test_check_leaves_tight_openstack_rule_alone(file, rule):
    assert codes_for(lint(file), rule) == set()


def test_check_reports_nothing_on_tight_rules():
    assert lint("clean.filters") == []


def test_check_errors_say_what_an_attacker_can_do_and_how_to_fix():
    errors = [f for f in lint("nova-compute.filters") if f.severity == "error"]
    assert errors
    assert all(f.attack and f.fix and f.line for f in errors)


def test_check_unrestricted_attack_names_a_concrete_exploit():
    (dd,) = [f for f in lint("cinder-volume.filters") if f.rule == "dd"]
    assert "of=/etc/shadow" in dd.attack


def test_check_env_unchecked_says_written_values_are_not_enforced():
    (f,) = [f for f in lint("cinder-volume.filters") if f.rule == "pvs"]
    assert "LC_ALL=C" in f.problem and "not enforced" in f.problem


def test_check_chaining_lists_unrestricted_reachable_rules():
    (f,) = [f for f in lint("neutron-linuxbridge-plugin.filters") if f.code == "chaining"]
    assert "sysctl" in f.problem


def test_check_shell_rule_shows_an_injection_the_pattern_admits():
    (f,) = [f for f in lint("manila-share.filters") if f.code == "shell-command"]
    assert "$(id)" in f.problem or "`id`" in f.problem


def test_check_exit_code_is_0_when_clean(capsys):
    assert (
        main(
            [
                "check",
                "--no-ownership",
                "--ignore",
                "missing-executable",
                str(DATA / "clean.filters"),
            ]
        )
        == 0
    )


def test_check_exit_code_is_1_on_error_findings(capsys):
    assert main(["check", "--no-ownership", str(DATA / "nova-compute.filters")]) == 1


def test_check_exit_code_is_2_on_missing_path(capsys):
    assert main(["check", "--no-ownership", "/nonexistent/x.filters"]) == 2


def test_check_exit_code_is_2_on_unparsable_file(tmp_path, capsys):
    bad = tmp_path / "bad.filters"
    bad.write_text("[Filters]\nx: CommandFilter\n")
    assert main(["check", "--no-ownership", str(bad)]) == 2
    assert "parse-error" in capsys.readouterr().out


def test_check_text_output_names_file_line_and_rule(capsys):
    main(["check", "--no-ownership", str(DATA / "ironic-utils.filters")])
    out = capsys.readouterr().out
    assert "ironic-utils.filters:14: error: [unrestricted-program] rule 'dd':" in out


def test_check_json_output_has_findings_and_summary(capsys):
    main(["check", "--json", "--no-ownership", str(DATA / "ironic-images.filters")])
    doc = json.loads(capsys.readouterr().out)
    (f,) = [f for f in doc["findings"] if f["code"] == "unrestricted-program"]
    assert f["rule"] == "qemu-img" and f["line"] == 6 and f["severity"] == "error"
    assert doc["summary"]["error"] >= 1 and doc["exit_code"] == 1


def test_check_min_severity_hides_lower_findings(capsys):
    main(
        [
            "check",
            "--json",
            "--no-ownership",
            "--min-severity",
            "error",
            str(DATA / "neutron-l3.filters"),
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert {f["severity"] for f in doc["findings"]} == {"error"}


def test_check_unknown_ignore_code_is_unusable_input(capsys):
    assert main(["check", "--ignore", "no-such-rule", str(DATA / "clean.filters")]) == 2


def _filters(tmp_path: Path, body: str, name: str = "x.filters") -> Path:
    path = tmp_path / name
    path.write_text("[Filters]\n" + body)
    return path


def _codes(path: Path, **kw) -> set[tuple[str, str]]:
    report = check_paths([str(path)], ownership=kw.pop("ownership", False), **kw)
    return {(f.code, f.rule) for f in report.findings}


def test_check_reports_unsafe_ownership(tmp_path):
    path = _filters(tmp_path, "t: RegExpFilter, true, root, true\n")
    assert ("unsafe-ownership", "") in _codes(path, ownership=True)


def test_check_reports_duplicate_name_in_one_file(tmp_path):
    path = _filters(tmp_path, "a: CommandFilter, true, root\na: CommandFilter, false, root\n")
    report = check_paths([str(path)], ownership=False)
    (dup,) = [f for f in report.findings if f.code == "duplicate-name"]
    assert dup.line == 3 and dup.severity == "warning" and "'a'" in dup.problem


def test_check_reports_bare_chaining_filter_as_never_matching(tmp_path):
    path = _filters(tmp_path, "c: ChainingFilter, true, root\n")
    assert ("never-matches", "c") in _codes(path)


def test_check_reports_netns_exec_not_as_root_as_never_matching(tmp_path):
    path = _filters(tmp_path, "c: IpNetnsExecFilter, ip, nobody\n")
    assert ("never-matches", "c") in _codes(path)


def test_check_reports_regex_split_on_comma(tmp_path):
    path = _filters(tmp_path, "r: RegExpFilter, true, root, true, [0-9]{1,3}\n")
    assert ("load-warning", "r") in _codes(path)


def test_check_reports_kill_signal_without_dash(tmp_path):
    path = _filters(tmp_path, "k: KillFilter, root, /usr/sbin/dnsmasq, 9\n")
    assert ("kill-signal", "k") in _codes(path)


def test_check_reports_dangerous_env(tmp_path):
    path = _filters(tmp_path, "e: EnvFilter, env, root, LD_PRELOAD=, true\n")
    assert ("dangerous-env", "e") in _codes(path)


def test_check_reports_odd_suffix_in_directory(tmp_path):
    _filters(tmp_path, "t: RegExpFilter, true, root, true\n", name="x.filters~")
    report = check_paths([str(tmp_path)], ownership=False)
    assert any(f.code == "load-warning" and "odd-suffix" in f.problem for f in report.findings)


def test_check_reports_shadowed_rule(tmp_path):
    path = _filters(tmp_path, "a: CommandFilter, tee, root\nb: RegExpFilter, tee, nobody, tee, x\n")
    assert ("shadowed", "b") in _codes(path)


def test_check_reports_pathfilter_base_under_tmp(tmp_path):
    path = _filters(tmp_path, "p: PathFilter, /bin/chown, root, nova, /tmp/nova/\n")
    assert ("world-writable-path", "p") in _codes(path)


def test_check_reports_missing_executable(tmp_path):
    path = _filters(tmp_path, "t: RegExpFilter, no-such-tool, root, no-such-tool\n")
    assert ("missing-executable", "t") in _codes(path, exec_dirs=[str(tmp_path)])


def test_check_downgrades_unrestricted_rule_not_run_as_root(tmp_path):
    path = _filters(tmp_path, "t: CommandFilter, tee, nobody\n")
    report = check_paths([str(path)], ownership=False)
    (f,) = [f for f in report.findings if f.code == "unrestricted-program"]
    assert f.severity == "warning"


def test_check_native_rest_on_writer_is_unrestricted(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[[command]]\nname = "tee"\nexec = "/usr/bin/tee"\nargs = [{ rest = true }]\n')
    assert ("unrestricted-program", "tee") in _codes(path)


def test_check_native_path_under_tmp_is_world_writable(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(
        '[[command]]\nname = "ch"\nexec = "/bin/chown"\n'
        'args = ["nova", { path_under = "/tmp/nova" }]\n'
    )
    assert ("world-writable-path", "ch") in _codes(path)


def _native(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(body)
    return path


def test_check_warns_when_a_user_can_write_a_path_under_base(trusted_dir):
    base = trusted_dir / "svc"
    base.mkdir()
    os.chown(base, 4242, 4242)
    path = _native(
        trusted_dir,
        f'[[command]]\nname = "ch"\nexec = "/bin/chmod"\nargs = [{{ path_under = "{base}" }}]\n',
    )
    report = check_paths([str(path)], ownership=False)
    (f,) = [f for f in report.findings if f.code == "user-writable-path"]
    assert f.severity == "warning" and "uid 4242" in f.problem and f.rule == "ch"


def test_check_warns_when_a_user_can_write_a_directory_below_a_path_under_base(trusted_dir):
    base = trusted_dir / "svc"
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "b").chmod(0o777)
    path = _native(
        trusted_dir,
        '[[command]]\nname = "ch"\nexec = "/bin/chmod"\n'
        f'args = [{{ rest = {{ path_under = "{base}" }} }}]\n',
    )
    (f,) = [
        f
        for f in check_paths([str(path)], ownership=False).findings
        if f.code == "user-writable-path"
    ]
    assert f"(at {base}/a/b)" in f.problem and "world-writable" in f.problem


def test_check_leaves_a_root_only_path_under_base_alone(trusted_dir):
    base = trusted_dir / "svc"
    (base / "a").mkdir(parents=True)
    path = _native(
        trusted_dir,
        f'[[command]]\nname = "ch"\nexec = "/bin/chmod"\nargs = [{{ path_under = "{base}" }}]\n',
    )
    assert not [
        f
        for f in check_paths([str(path)], ownership=False).findings
        if f.code == "user-writable-path"
    ]


def test_check_warns_when_a_user_can_write_a_path_filter_base(trusted_dir):
    base = trusted_dir / "instances"
    base.mkdir()
    os.chown(base, 4242, 4242)
    path = _filters(trusted_dir, f"ch: PathFilter, /bin/chown, root, nova, {base}/\n")
    assert ("user-writable-path", "ch") in _codes(path)


def test_check_judges_a_rule_without_run_as_as_its_contexts_helper_user(tmp_path):
    body = '[[command]]\nname = "tee"\ncontext = "c"\nexec = "/usr/bin/tee"\n'
    body += "args = [{ rest = true }]\n"
    plain = _native(tmp_path, '[context.c]\nuser = "nobody"\n' + body)
    (f,) = [
        f
        for f in check_paths([str(plain)], ownership=False).findings
        if f.code == "unrestricted-program"
    ]
    assert "as nobody" in f.problem
    root = _native(tmp_path, "[context.c]\nstay_root = true\n" + body)
    (g,) = [
        f
        for f in check_paths([str(root)], ownership=False).findings
        if f.code == "unrestricted-program"
    ]
    assert "as root" in g.problem and g.severity == "error"  # root: not downgraded
    assert f.severity == "warning"


# -- explain --------------------------------------------------------------------------------


@pytest.fixture
def conf(tmp_path):
    exe = tmp_path / "bin"
    exe.mkdir()
    for name in ("tool", "ip", "dnsmasq"):
        shutil.copy("/bin/true", exe / name)
    d = tmp_path / "rootwrap.d"
    d.mkdir()
    (d / "a.filters").write_text(
        "[Filters]\n"
        "tool_ro: RegExpFilter, tool, root, tool, --read, [a-z]+\n"
        "tool_rw: RegExpFilter, tool, nobody, tool, --write, [a-z]+\n"
        "dnsmasq: EnvFilter, env, root, NETWORK_ID=, dnsmasq\n"
        "ip_exec: IpNetnsExecFilter, ip, root\n"
    )
    path = tmp_path / "rootwrap.conf"
    path.write_text(f"[DEFAULT]\nfilters_path={d}\nexec_dirs={exe}\n")
    return path


def explain_json(capsys, conf, *argv: str) -> tuple[int, dict]:
    rc = main(["explain", "--config", str(conf), "--untrusted", "--json", "--", *argv])
    return rc, json.loads(capsys.readouterr().out)


def test_explain_allow_names_rule_file_line_and_class(capsys, conf):
    rc, doc = explain_json(capsys, conf, "tool", "--write", "abc")
    assert rc == 0 and doc["decision"] == "allow"
    assert doc["rule"]["name"] == "tool_rw" and doc["rule"]["class"] == "RegExpFilter"
    assert doc["rule"]["line"] == 3 and doc["rule"]["file"].endswith("a.filters")
    assert doc["run_as"] == "nobody"


def test_explain_allow_lists_earlier_candidates_with_reason(capsys, conf):
    _, doc = explain_json(capsys, conf, "tool", "--write", "abc")
    first = doc["candidates"][0]
    assert first["name"] == "tool_ro" and first["matched"] is False
    assert first["code"] == "argument" and "--write" in first["reason"]


def test_explain_deny_has_null_rule_and_every_candidate_reason(capsys, conf):
    rc, doc = explain_json(capsys, conf, "tool", "--read", "ABC")
    assert rc == 1 and doc["decision"] == "deny" and doc["rule"] is None
    assert [c["name"] for c in doc["candidates"]] == ["tool_ro", "tool_rw"]
    assert all(c["reason"] for c in doc["candidates"])


def test_explain_reports_env_filter_environment(capsys, conf):
    _, doc = explain_json(capsys, conf, "env", "NETWORK_ID=42", "dnsmasq", "--x")
    assert doc["decision"] == "allow" and doc["env"] == {"NETWORK_ID": "42"}


def test_explain_nests_chained_decision(capsys, conf):
    _, doc = explain_json(capsys, conf, "ip", "netns", "exec", "ns1", "tool", "--read", "x")
    assert doc["rule"]["name"] == "ip_exec" and doc["chain"]["rule"]["name"] == "tool_ro"


def test_explain_refuses_untrusted_policy_without_flag(capsys, conf):
    assert main(["explain", "--config", str(conf), "--", "tool"]) == 2
    assert "untrusted" in capsys.readouterr().err


def test_explain_text_hints_at_rule_for_same_program_spelt_differently(capsys, conf, tmp_path):
    main(["explain", "--config", str(conf), "--untrusted", "--", str(tmp_path / "x" / "tool")])
    assert "hint:" in capsys.readouterr().out


def test_explain_reads_native_policy(capsys, tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text(
        '[[command]]\nname = "mtu"\nexec = "/bin/true"\n'
        'args = ["mtu", { int_range = [68, 9000] }]\n'
    )
    rc, doc = explain_json(capsys, pol, "true", "mtu", "1500")
    assert rc == 0 and doc["rule"]["class"] == "NativeCommand" and doc["rule"]["name"] == "mtu"


def test_explain_names_the_contexts_helper_user_for_a_rule_without_run_as(capsys, tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text(
        '[context.c]\nuser = "nobody"\n\n'
        '[[command]]\nname = "t"\ncontext = "c"\nexec = "/bin/true"\n'
    )
    rc = main(
        ["explain", "--config", str(pol), "--untrusted", "--context", "c", "--json", "--", "true"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert (
        rc == 0
        and doc["run_as"].startswith("nobody")
        and (doc["uid"], doc["gid"]) == (65534, 65534)
    )


def test_explain_names_root_for_a_rule_without_run_as_in_a_stay_root_context(capsys, tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text(
        "[context.c]\nstay_root = true\n\n"
        '[[command]]\nname = "t"\ncontext = "c"\nexec = "/bin/true"\n'
    )
    main(["explain", "--config", str(pol), "--untrusted", "--context", "c", "--", "true"])
    assert "as root (the helper's own user) (uid 0, gid 0)" in capsys.readouterr().out


def test_explain_names_the_default_account_for_a_shim_rule_without_run_as(capsys, tmp_path):
    import pwd

    pol = tmp_path / "p.toml"
    pol.write_text('[[command]]\nname = "t"\nexec = "/bin/true"\n')
    rc, doc = explain_json(capsys, pol, "true")
    try:
        account = pwd.getpwnam("privsepd")
    except KeyError:
        account = pwd.getpwnam("nobody")
    assert rc == 0 and doc["uid"] == account.pw_uid != 0


# -- convert --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "same"),
    [("[a-z]+", True), ("a|b", True), ("foo|bar", True), ("(a|b)c", True), ("x\\", False)],
)
def test_convert_knows_when_fullmatch_equals_oslo_matching(pattern, same):
    assert fullmatch_is_oslo(pattern) is same


@pytest.fixture
def world(tmp_path):
    exe = tmp_path / "bin"
    exe.mkdir()
    for name in ("tool", "lister", "ip", "nice", "chown", "dnsmasq"):
        shutil.copy("/bin/true", exe / name)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (tmp_path / "data2").mkdir()
    text = (
        "[Filters]\n"
        "tool: CommandFilter, tool, root\n"
        f"lister: RegExpFilter, {exe}/lister, root, lister, -[al]+, /[a-z]+\n"
        "lister_alt: RegExpFilter, lister, nobody, lister, (x|y)z, [0-9]{{0}}\n"
        "lister_or: RegExpFilter, lister, root, lister, foo|bar\n"
        f"chown: PathFilter, chown, root, nova, {data}\n"
        "chown_pass: PathFilter, chown, nobody, pass, pass\n"
        "cat: ReadFileFilter, /etc/hostname\n"
        "nice: ChainingRegExpFilter, nice, root, nice, -?[0-9]+\n"
        "ip: IpFilter, ip, root\n"
        "ip_exec: IpNetnsExecFilter, ip, root\n"
        "dnsmasq: EnvFilter, env, root, NETWORK_ID=, dnsmasq\n"
        "noop: ChainingFilter, nice, root\n"
        "anyname: RegExpFilter, tool, root, .*, anyname\n"
    )
    filters = parse_filters(text, str(tmp_path / "x.filters"))
    conv = convert_filters(filters, [str(exe)])
    native = list(parse_policy(conv.toml, "<t>").commands.values())
    residual = parse_filters(conv.residual_text, "<r>") if conv.residual_text else []
    return {
        "exe": exe,
        "data": data,
        "conv": conv,
        "orig": FilterIndex(filters, [str(exe)]),
        "new": FilterIndex([*native, *residual], [str(exe)]),
    }


def _summary(d):
    return (d.outcome, d.command, d.run_as, tuple(sorted(d.env.items())))


def _documented_difference(world, argv, old, new) -> bool:
    """Spelling argv[0] as the exec path, or a relative path_under argument."""
    if new.allowed and not old.allowed and os.path.isabs(argv[0]):
        again = world["orig"].match([os.path.basename(argv[0]), *argv[1:]])
        return _summary(again) == _summary(new)
    if old.allowed and not new.allowed and old.filter.kind == "PathFilter":
        return any(not a.startswith("/") for a in argv[1:])
    return False


def _words(world):
    exe, data = str(world["exe"]), str(world["data"])
    return st.sampled_from(
        [
            "tool",
            f"{exe}/tool",
            "lister",
            f"{exe}/lister",
            "chown",
            "nice",
            "ip",
            "env",
            "dnsmasq",
            "cat",
            "/bin/cat",
            "anyname",
            "-a",
            "-la",
            "/usr",
            "xz",
            "yz",
            "foo",
            "bar",
            "foo\n",
            "nova",
            data,
            f"{data}/sub",
            f"{data}/../data2",
            f"{data}2",
            "sub",
            "/etc/hostname",
            "netns",
            "exec",
            "ns1",
            "NETWORK_ID=1",
            "NETWORK_ID=",
            "-5",
            "5",
            "link",
            "..",
            "",
        ]
    )


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_convert_round_trip_gives_the_same_decisions(world, data):
    words = _words(world)
    argv = data.draw(st.lists(words, min_size=1, max_size=6))
    old, new = world["orig"].match(argv), world["new"].match(argv)
    if _summary(old) != _summary(new):
        assert _documented_difference(world, argv, old, new), (argv, old.reason, new.reason)


CURATED = [
    ["tool", "anything", "--at", "/all"],
    ["lister", "-la", "/usr"],
    ["lister", "foo"],
    ["lister", "bar"],
    ["chown", "nova", "{data}/sub"],
    ["chown", "nova", "{data}2"],
    ["nice", "-5", "tool", "x"],
    ["ip", "netns", "exec", "ns1", "tool"],
    ["ip", "link", "set", "up"],
    ["env", "NETWORK_ID=1", "dnsmasq"],
    ["cat", "/etc/hostname"],
]


@pytest.mark.parametrize("argv", CURATED)
def test_convert_keeps_decision_of_curated_command(world, argv):
    argv = [a.replace("{data}", str(world["data"])) for a in argv]
    assert _summary(world["orig"].match(argv)) == _summary(world["new"].match(argv))


def test_convert_keeps_rules_without_native_form_as_rootwrap(world):
    kept = {f.source.name for f in world["conv"].residual}
    assert {"ip", "dnsmasq", "anyname"} <= kept


def test_convert_keeps_later_rule_for_same_command_behind_a_kept_one(world):
    assert "ip_exec" in {f.source.name for f in world["conv"].residual}


def test_convert_drops_rule_that_never_matches(world):
    assert world["conv"].dropped == 1 and "noop" not in world["conv"].toml


def test_convert_writes_path_filter_as_path_under(world):
    assert f"path_under = '{world['data']}'" in world["conv"].toml


def test_convert_exits_1_when_rules_stay_rootwrap_without_residual_file(tmp_path, capsys):
    path = _filters(tmp_path, "k: KillFilter, root, /usr/sbin/dnsmasq, -9\n")
    assert main(["convert", str(path)]) == 1


def test_convert_writes_residual_file_and_exits_0(tmp_path, capsys):
    path = _filters(tmp_path, "k: KillFilter, root, /usr/sbin/dnsmasq, -9\n")
    out = tmp_path / "res.filters"
    assert main(["convert", str(path), "--residual", str(out)]) == 0
    assert "k: KillFilter, root, /usr/sbin/dnsmasq, -9" in out.read_text()


# -- learn ----------------------------------------------------------------------------------


def test_learn_record_logs_argv_and_returns_the_commands_exit_code(tmp_path):
    log = tmp_path / "log.jsonl"
    assert record_command(str(log), ["/bin/false", "x y"]) == 1
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["argv"] == ["/bin/false", "x y"]


def test_learn_record_refuses_to_run_as_root_under_sudo(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_UID", "1000")
    with pytest.raises(PermissionError):
        record_command(str(tmp_path / "log"), ["/bin/true"])
    assert not (tmp_path / "log").exists()


def test_learn_record_does_not_follow_a_symlinked_log(tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "log").symlink_to(target)
    with pytest.raises(OSError):
        record_command(str(tmp_path / "log"), ["/bin/true"], run=False)


def test_learn_reads_audit_records_and_marks_denied(tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_text(
        json.dumps({"decision": "deny", "argv": ["ip", "link"]})
        + "\n"
        + json.dumps({"decision": "allow", "op": "call", "name": "f"})
        + "\n"
    )
    (rec,) = load_records([str(log)])
    assert rec.argv == ("ip", "link") and rec.denied


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["12", "7"], {"regex": "[0-9]+"}),
        (["10.0.0.1", "10.0.0.2"], {"ip": 4}),
        (["10.0.0.1/24", "10.0.1.0/24"], {"cidr": 4, "strict": False}),
        (["aa:bb:cc:dd:ee:ff", "00:11:22:33:44:55"], {"mac": True}),
        (
            ["/var/lib/nova/instances/a/disk", "/var/lib/nova/instances/b/disk"],
            {"path_under": "/var/lib/nova/instances"},
        ),
        (["up", "down"], {"choice": ["down", "up"]}),
    ],
)
def test_learn_generalises_values_to_a_typed_shape(values, expected):
    assert generalise(values).toml == expected


def test_learn_never_generalises_paths_with_dotdot():
    shape = generalise(["/var/lib/x/a", "/var/lib/x/../../../etc/shadow"])
    assert shape.toml == {"choice": ["/var/lib/x/../../../etc/shadow", "/var/lib/x/a"]}


def test_learn_does_not_widen_paths_to_a_system_directory():
    assert generalise(["/etc/a.conf", "/etc/b.conf"]).toml == {
        "choice": ["/etc/a.conf", "/etc/b.conf"]
    }


def test_learn_keeps_subcommands_in_separate_rules():
    recs = [
        Record(("ip", "link", "set", "a", "up"), "x"),
        Record(("ip", "addr", "del", "a", "b"), "y"),
    ]
    assert len(propose(recs).rules) == 2


argv_strategy = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        max_size=12,
    ),
    min_size=1,
    max_size=5,
).filter(lambda a: a[0] != "" and "\n" not in a[0])


@settings(max_examples=150, deadline=None)
@given(st.lists(argv_strategy, min_size=1, max_size=8))
def test_learn_toml_proposal_allows_every_recorded_command_it_could_write(argvs):
    recs = [Record(tuple(a), str(i)) for i, a in enumerate(argvs)]
    proposal = propose(recs)
    text = render_toml(proposal, "root", ["/bin"])
    skipped = {r for rule in proposal.rules if rule.name in proposal.skipped for r in rule.records}
    assert [r for r in verify(text, "toml", recs) if r not in skipped] == []


@settings(max_examples=150, deadline=None)
@given(st.lists(argv_strategy, min_size=1, max_size=8))
def test_learn_filters_proposal_allows_every_recorded_command_it_could_write(argvs):
    recs = [Record(tuple(a), str(i)) for i, a in enumerate(argvs)]
    proposal = propose(recs)
    text = render_filters(proposal, "root")
    skipped = {r for rule in proposal.rules if rule.name in proposal.skipped for r in rule.records}
    assert [r for r in verify(text, "filters", recs) if r not in skipped] == []
    # A rule may only be skipped for what a .filters column cannot hold.
    for rule in proposal.rules:
        if rule.name in proposal.skipped:
            words = [w for rec in rule.records for w in rec.argv]
            unwritable = any(
                "," in w or w != w.strip() or not w or not w.isprintable() for w in words
            )
            assert unwritable or any(ch in rule.name for ch in ":=[];#"), rule.name


def test_learn_filters_proposal_writes_a_rule_for_plain_commands():
    recs = [Record(("ip", "link", "set", "eth0", "up"), "1"), Record(("ip", "link"), "2")]
    proposal = propose(recs)
    text = render_filters(proposal, "root")
    assert proposal.skipped == []
    assert text.count("RegExpFilter, ip, root") == 2
    assert verify(text, "filters", recs) == []


def test_learn_propose_cli_prints_toml_and_review_findings(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    for argv in (["tee", "/etc/a"], ["tee", "/etc/b"], ["kill", "-9", "12"], ["kill", "-9", "7"]):
        record_command(str(log), argv, run=False)
    assert main(["learn", "propose", str(log)]) == 0
    out, err = capsys.readouterr()
    assert "[[command]]" in out and "choice = ['/etc/a', '/etc/b']" in out
    assert "review: warning: [unrestricted-program] kill-1" in err
