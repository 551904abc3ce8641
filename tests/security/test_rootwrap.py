"""Red team, ``privsepd-rootwrap``: the shim a service runs through sudo for every command.

The caller controls argv, its own environment (sudo passes what sudoers lets
through), and anything it can write: a directory on ``$PATH``, a cache
directory it pre-creates. Each attack runs the installed console script as
sudo would (root, a clean environment unless the attack is about it), in a
private mount namespace whose /dev/log is a socket of the test: the shim's
own audit records (JSON, authpriv) and oslo's syslog lines land there. Each
test asserts the refusal (oslo's exit codes: 99 unauthorized, 96 not found,
97 bad config), a good command run afterwards, and the record that names
the attempt. Where the shim refuses before deciding (interpreter variables
under sudo), no record is written; the stderr line is asserted instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .attack import argv_has
from .conftest import NOBODY, SAFE_PATH, status_of, write_root_file

FILTERS = r"""
ip: IpFilter, ip, root
ipns: IpNetnsExecFilter, ip, root
nice: ChainingRegExpFilter, nice, root, nice, -n, [0-9]+
ls_hostname: RegExpFilter, /bin/ls, root, ls, /etc/hostname
env_ld: EnvFilter, env, root, LD_PRELOAD=, /bin/true
env_bash: EnvFilter, env, root, BASH_ENV=, /bin/sh
env_greet: EnvFilter, env, root, GREETING=, /bin/sh
bash_ok: RegExpFilter, /bin/bash, root, bash, -c, echo ok
sh_ok: RegExpFilter, /bin/sh, root, sh, -c, echo ok
"""


@pytest.fixture
def shim(targets):
    return targets.rootwrap(FILTERS)


def refuse(shim, argv: list[str], rc: int = 99, **kwargs) -> None:
    result = shim.run(*argv, **kwargs)
    assert result.returncode == rc, (
        f"{'ATTACK SUCCEEDED' if result.returncode == 0 else 'unexpected exit'}: {argv!r} "
        f"exited {result.returncode}: {result.stdout[:200]!r} {result.stderr[:300]!r}"
    )


# -- ip -------------------------------------------------------------------------------------------

IP_BATCH = [
    ["ip", "-b", "/tmp/cmds"],
    ["ip", "--batch", "/tmp/cmds"],
    ["ip", "-ba", "/tmp/cmds"],
    ["ip", "-force", "-batch", "/tmp/cmds"],
]


def test_rootwrap_ip_batch_is_refused(shim):
    for argv in IP_BATCH:
        refuse(shim, argv)
    shim.good_call()
    for argv in IP_BATCH:
        shim.audit.expect(decision="deny", argv=argv_has(*argv), rc=99)


IP_NETNS_EXEC = [
    ["ip", "netns", "exec", "ns", "sh"],
    ["ip", "NETNS", "EXEC", "ns", "sh"],
    ["ip", "-all", "netns", "exec", "sh"],
    ["ip", "net", "e", "ns", "sh"],
    ["ip", "netns", "exec", "ns", "/bin/sh", "-c", "id"],
    ["ip", "netns", "exec", "ns", "env", "BASH_ENV=/tmp/x", "sh"],
]


def test_rootwrap_netns_exec_into_a_shell_is_refused(shim):
    for argv in IP_NETNS_EXEC:
        refuse(shim, argv)
    shim.good_call()
    for argv in IP_NETNS_EXEC:
        shim.audit.expect(decision="deny", argv=argv_has(*argv))


NICE_SHELLS = [
    ["nice", "-n", "5", "sh"],
    ["nice", "-n", "5", "/bin/sh", "-c", "id"],
    ["nice", "-n", "5", "env", "sh"],
    ["nice", "-n", "5", "nice", "-n", "5", "bash"],
]


def test_rootwrap_chaining_filter_into_a_shell_is_refused(shim):
    assert shim.run("nice", "-n", "5", "sh", "-c", "echo ok").stdout == b"ok\n"  # chain works
    for argv in NICE_SHELLS:
        refuse(shim, argv)
    shim.good_call()
    for argv in NICE_SHELLS:
        shim.audit.expect(decision="deny", argv=argv_has(*argv))


# -- environment ----------------------------------------------------------------------------------

ENV_ATTACKS = [
    ["env", "LD_PRELOAD=/tmp/evil.so", "true"],  # a filter that names a loader variable
    ["env", "BASH_ENV=/tmp/evil.sh", "sh"],
    ["env", "GREETING=", "sh"],  # empty: oslo leaks the parent's value
    ["env", "GREETING=x", "BASH_ENV=/tmp/evil.sh", "sh"],
    ["env", "GREETING=x", "LD_PRELOAD=/tmp/evil.so", "sh"],
    ["GREETING=x", "LD_PRELOAD=/tmp/evil.so", "sh"],
]


def test_rootwrap_env_filter_variable_injection_is_refused(shim):
    greeting = shim.run("env", "GREETING=hi", "sh", input=b"echo $GREETING")
    assert greeting.stdout == b"hi\n", greeting
    for argv in ENV_ATTACKS:
        refuse(shim, argv)
    shim.good_call()
    for argv in ENV_ATTACKS:
        shim.audit.expect(decision="deny", argv=argv_has(*argv))


@pytest.mark.parametrize(
    "name, value",
    [("LD_PRELOAD", "/nonexistent-privsepd.so"), ("PYTHONPATH", "/tmp"), ("LD_AUDIT", "/x.so")],
)
def test_rootwrap_interpreter_variable_reaching_it_through_sudo_is_refused(shim, name, value):
    env = {"PATH": SAFE_PATH, "SUDO_UID": "1000", "SUDO_USER": "svc", name: value}
    result = shim.run("true", env=env)
    assert result.returncode == 97, result
    assert f"refusing to run: {name} reached a root interpreter".encode() in result.stderr
    shim.good_call()


def test_rootwrap_bash_env_in_the_callers_environment_never_reaches_the_command(shim):
    planted = shim.dir / "evil.sh"
    marker = shim.dir / "bash-env-ran"
    planted.write_text(f"touch {marker}\n")
    env = {"PATH": SAFE_PATH, "SUDO_UID": "1000", "BASH_ENV": str(planted), "ENV": str(planted)}
    for argv in (["bash", "-c", "echo ok"], ["sh", "-c", "echo ok"]):
        result = shim.run(*argv, env=env)
        assert result.returncode == 0 and result.stdout == b"ok\n", result
    assert not marker.exists(), "ATTACK SUCCEEDED: BASH_ENV/ENV ran as root"
    shim.good_call()
    shim.audit.expect(decision="allow", argv=argv_has("bash", "-c", "echo ok"))


# -- where the executable comes from --------------------------------------------------------------


def planted_dir(base: Path, mode: int) -> tuple[Path, Path]:
    """A directory others can write holding 'planted' (prints its uid, leaves a marker)."""
    directory = base / f"planted-{mode:o}"
    directory.mkdir()
    directory.chmod(mode)
    marker = base / f"planted-{mode:o}-ran"
    script = directory / "planted"
    script.write_text(f"#!/bin/sh\nid -u > {marker}\n")
    script.chmod(0o755)
    return directory, marker


def test_rootwrap_binary_planted_in_a_writable_path_dir_is_not_run(targets):
    shim = targets.rootwrap("planted: CommandFilter, planted, root\n")
    directory, marker = planted_dir(shim.dir, 0o1777)
    conf = write_root_file(  # no exec_dirs: oslo searches the caller's $PATH
        shim.dir / "path.conf", f"[DEFAULT]\nfilters_path={shim.filters_dir}\n"
    )
    refuse(shim, ["planted"], rc=96, conf=conf, env={"PATH": f"{directory}:{SAFE_PATH}"})
    assert not marker.exists(), f"ATTACK SUCCEEDED: planted ran as uid {marker.read_text()}"
    shim.good_call()
    shim.audit.expect(decision="deny", argv=argv_has("planted"))


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777], ids=["0777", "0775", "1777"])
def test_rootwrap_binary_planted_in_a_writable_exec_dir_is_not_run(targets, mode):
    shim = targets.rootwrap("planted: CommandFilter, planted, root\n")
    directory, marker = planted_dir(shim.dir, mode)
    conf = write_root_file(
        shim.dir / "execdirs.conf",
        f"[DEFAULT]\nfilters_path={shim.filters_dir}\nexec_dirs={directory},/bin,/usr/bin\n",
    )
    result = shim.run("planted", conf=conf)
    assert not marker.exists(), f"ATTACK SUCCEEDED: planted ran as uid {marker.read_text()}"
    assert result.returncode in (96, 97), result
    shim.good_call()
    shim.audit.expect(argv=argv_has("planted"))


def test_rootwrap_cache_directory_owned_by_the_caller_is_neither_trusted_nor_written(targets):
    shim = targets.rootwrap("")
    os.makedirs(shim.cache, mode=0o755)
    os.chown(shim.cache, NOBODY, NOBODY)
    for _ in range(2):  # the first run would build the cache, the second use it
        assert shim.run("true").returncode == 0
    assert os.listdir(shim.cache) == [], "root wrote into a directory the caller owns"
    refuse(shim, ["id"])  # and nothing it might hold widens the policy
    shim.good_call()
    shim.audit.expect(decision="deny", argv=argv_has("id"))


# -- regular expressions --------------------------------------------------------------------------


def test_rootwrap_regexp_filter_admits_no_trailing_newline(shim):
    refuse(shim, ["ls", "/etc/hostname\n"])
    assert shim.run("ls", "/etc/hostname").returncode == 0
    shim.good_call()
    shim.audit.expect(decision="deny", argv=argv_has("ls", "/etc/hostname\n"))


@pytest.mark.parametrize("digits", ["١٢٣", "１２"], ids=["arabic-indic", "fullwidth"])
def test_rootwrap_regexp_digit_class_admits_only_ascii_digits(targets, digits):
    shim = targets.rootwrap(r"echo_num: RegExpFilter, /bin/echo, root, echo, \d+" + "\n")
    assert shim.run("echo", "123").returncode == 0
    refuse(shim, ["echo", digits])
    shim.good_call()
    shim.audit.expect(decision="deny", argv=argv_has("echo", digits))


# -- syslog ---------------------------------------------------------------------------------------


def test_rootwrap_denied_argv_cannot_forge_a_syslog_line(targets):
    shim = targets.rootwrap("", conf_extra="use_syslog=True\nsyslog_log_level=INFO\n")
    forged = "x\n<14>privsepd-rootwrap: Executing ['rm', '-rf', '/'] (filter match = rm)"
    refuse(shim, ["ls", forged])
    shim.good_call()
    lines = shim.audit.lines()
    assert any(b"Unauthorized command" in line for line in lines), lines
    for line in lines:
        body = line.rstrip(b"\0")
        assert not any(c < 0x20 for c in body), f"ATTACK SUCCEEDED: control character in {body!r}"
    shim.audit.expect(decision="deny", argv=argv_has("ls"))


# -- privileged binaries from a native rule -------------------------------------------------------


def native_conf(shim, rules: str) -> str:
    return write_root_file(shim.dir / "native.toml", rules)


def test_rootwrap_setuid_binary_from_a_native_rule_gains_nothing(targets, binaries):
    shim = targets.rootwrap("")
    suid = binaries["suid"]
    conf = native_conf(
        shim,
        f'[[command]]\nname = "suid"\nexec = "{suid}"\nargs = [{{ rest = true }}]\n'
        'run_as = "nobody"\n',
    )
    st = status_of(shim.run(suid, "/proc/self/status", conf=conf).stdout)
    assert st["Uid"].split()[1] == str(NOBODY) and int(st["CapEff"], 16) == 0, st
    result = shim.run(suid, "/etc/shadow", conf=conf)
    assert result.returncode != 0 and b"root:" not in result.stdout, "ATTACK SUCCEEDED"
    shim.good_call()
    shim.audit.expect(decision="allow", argv=argv_has(suid, "/etc/shadow"))


def test_rootwrap_native_rule_command_cannot_raise_a_capability_it_was_not_granted(
    targets, capraise
):
    shim = targets.rootwrap("")
    conf = native_conf(
        shim,
        f'[[command]]\nname = "capraise"\nexec = "{capraise}"\nargs = [{{ rest = true }}]\n'
        'capabilities = ["CAP_NET_ADMIN"]\n',
    )
    for cap in ("1", "2", "21"):  # dac_override, dac_read_search, sys_admin
        result = shim.run(capraise, cap, "/bin/cat", "/proc/self/status", conf=conf)
        assert f"ambient raise {cap}: Operation not permitted".encode() in result.stderr, result
        st = status_of(result.stdout)
        assert int(st["CapEff"], 16) == int(st["CapAmb"], 16) == 1 << 12, st
    shim.good_call()
    shim.audit.expect(decision="allow", argv=argv_has(capraise, "21"))


# -- policy regexes re cannot compile -------------------------------------------------------------

BROKEN_REGEX_RULES = {
    # rule: (filter line, argv that reaches it, cause privsepd must name)
    "big": ("RegExpFilter, /bin/echo, root, echo, a{4294967296}", ["echo", "a"], "repeat count"),
    "deep": (
        "RegExpFilter, /bin/ls, root, ls, " + "(" * 1200 + "a" + ")" * 1200,
        ["ls", "a"],
        "nested 1200 deep",
    ),
    "uni": ("RegExpFilter, /bin/cat, root, cat, (?u)[a-z]+", ["cat", "abc"], "(?u)"),
}


def test_rootwrap_argument_reaching_a_rule_whose_regex_does_not_compile_is_denied_naming_it(
    targets,
):
    """Before: OverflowError/RecursionError tracebacks, exit 1 (oslo.rootwrap crashes the same
    way); now oslo's decision for a badly-formed filter (deny, 99), with the rule and cause."""
    rules = "".join(f"{name}: {line}\n" for name, (line, _, _) in BROKEN_REGEX_RULES.items())
    shim = targets.rootwrap(rules)
    for name, (_, argv, cause) in BROKEN_REGEX_RULES.items():
        result = shim.run(*argv)
        err = result.stderr.decode()
        assert result.returncode == 99, f"{argv!r} exited {result.returncode}: {err[-500:]}"
        assert "Traceback" not in err, err[-500:]
        first = err.splitlines()[0]
        assert f"Unauthorized command: {' '.join(argv)} (no filter matched; " in first, first
        assert "redteam.filters:" in first and f" {name} argument 1: invalid regex " in first
        assert cause in first, first
    shim.good_call()
    for _line, argv, cause in BROKEN_REGEX_RULES.values():
        shim.audit.expect(decision="deny", argv=argv_has(*argv), rc=99, reason=cause)
