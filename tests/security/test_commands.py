"""Red team, commands run by a helper (``ctx.execute``): shells, chains, environments.

The helper runs only the commands its context's ``[[command]]`` rules allow,
with a sanitized environment. The attacker tries to get a shell through a
chaining rule, to smuggle loader and interpreter variables in through every
way a command gets an environment (the ``env=`` argument, options beside
it, the service's own environment at fork), and to hand the spawner options
it never offers. Each test runs against fork, spawn and daemon helpers and
asserts the refusal, a good call afterwards, and the helper's command (or
call) record naming the attempt.
"""

from __future__ import annotations

import time

import pytest

from privsepd import CallTimeout, DeniedError

from .attack import EXEC_OR_COMMAND, argv_has, fn, refused
from .conftest import spawn_command

RULES = """
[[command]]
context = "t-sec"
name = "true"
exec = "/bin/true"
run_as = "nobody"

[[command]]
context = "t-sec"
name = "env-dump"
exec = "/usr/bin/env"
run_as = "nobody"

[[command]]
context = "t-sec"
name = "env-greeting"
exec = "/usr/bin/env"
args = [{ regex = "GREETING=[a-z]+" }, "/bin/sh", "-c", "echo $GREETING"]
run_as = "nobody"

[[command]]
context = "t-sec"
name = "nice"
exec = "/usr/bin/nice"
args = ["-n", { int_range = [0, 19] }, { chain = true }]
run_as = "nobody"

[[command]]
context = "t-sec"
name = "sleep"
exec = "/bin/sleep"
args = [{ regex = "[0-9]+" }]
run_as = "nobody"
timeout = 1
"""


@pytest.fixture(params=["fork", "spawn", "daemon"])
def runner(request, targets):
    return targets.open(request.param, extra_policy=RULES)


def env_of(out: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)


# -- environment ---------------------------------------------------------------------------

INJECTED = [
    ("LD_PRELOAD", "/tmp/evil.so"),
    ("LD_LIBRARY_PATH", "/tmp"),
    ("PYTHONPATH", "/tmp"),
    ("BASH_ENV", "/tmp/evil.sh"),
    ("PATH", "/tmp"),
    ("IFS", "/"),
    ("GCONV_PATH", "/tmp"),
    ("LOCPATH", "/tmp"),
    ("LANG", "/tmp/evil"),  # a locale name that is a path is no locale
    ("LC_ALL", "../../tmp/evil"),
    ("LANGUAGE", ".evil"),
]


def test_helper_loader_and_interpreter_variables_in_execute_env_are_refused(runner):
    for name, value in INJECTED:
        refused(lambda n=name, v=value: runner.execute(["env"], env={n: v}), DeniedError)
    rc, out, _ = runner.execute(["env"], env={"LANG": "C.UTF-8"})  # a real locale passes
    assert rc == 0 and env_of(out)["LANG"] == "C.UTF-8"
    assert not ({n for n, _ in INJECTED} - {"LANG", "PATH"}) & set(env_of(out))
    runner.good_call()
    for name, value in INJECTED:
        runner.audit.expect(event="command", decision="deny", error=f"{name}={value}")


def test_helper_variable_smuggled_beside_an_allowed_one_is_refused(runner):
    argv = ["/bin/sh", "-c", "echo $GREETING"]
    assert runner.execute(argv, env={"GREETING": "hi"})[1] == b"hi\n"
    for env in (
        {"GREETING": "hi", "BASH_ENV": "/tmp/evil.sh"},
        {"GREETING": "hi\nLD_PRELOAD=/tmp/evil.so"},
        {"GREETING": "hi", "ENV": "/tmp/evil.sh"},
    ):
        refused(lambda e=env: runner.execute(argv, env=e), DeniedError)
    runner.good_call()
    runner.audit.expect(event="command", decision="deny", error="'BASH_ENV=/tmp/evil.sh'")
    runner.audit.expect(event="command", decision="deny", error="'ENV=/tmp/evil.sh'")


def test_fork_helper_environment_never_reaches_a_command(targets, monkeypatch):
    for name, value in [("LD_PRELOAD", "/nonexistent-privsepd.so"), ("PYTHONPATH", "/tmp"),
                        ("BASH_ENV", "/tmp/evil.sh")]:  # fmt: skip
        monkeypatch.setenv(name, value)
    fork = targets.open("fork", extra_policy=RULES)
    fork.good_call()  # the helper forks with the hostile environment
    monkeypatch.undo()
    rc, out, _ = fork.execute(["env"])
    leaked = {"LD_PRELOAD", "PYTHONPATH", "BASH_ENV"} & set(env_of(out))
    assert rc == 0 and not leaked, f"ATTACK SUCCEEDED: {leaked} reached the command"
    fork.good_call()
    fork.audit.expect(event="command", decision="allow", argv=argv_has("env"))


def test_fork_helper_environment_never_reaches_an_entrypoint_subprocess(targets, monkeypatch):
    for name, value in [("LD_PRELOAD", "/nonexistent-privsepd.so"), ("PYTHONPATH", "/tmp"),
                        ("BASH_ENV", "/tmp/evil.sh")]:  # fmt: skip
        monkeypatch.setenv(name, value)
    fork = targets.open("fork")
    fork.good_call()
    monkeypatch.undo()
    leaked = {"LD_PRELOAD", "PYTHONPATH", "BASH_ENV"} & set(env_of(fork.call("child_env").encode()))
    assert not leaked, f"ATTACK SUCCEEDED: {sorted(leaked)} reached an entrypoint's subprocess"
    fork.good_call()
    fork.audit.expect(decision="allow", name=":child_env")


def test_spawn_helper_with_interpreter_variables_under_sudo_refuses_to_run(spawn, capfd):
    from privsepd import Context

    sudo_like = ["env", "SUDO_UID=1000", "SUDO_USER=svc", "PYTHONPATH=/tmp", "LD_PRELOAD=/x.so"]
    command = sudo_like + spawn_command(spawn.policy, isolated=False)
    ctx = Context("t-sec", timeout=10, helper_command=command)
    exc = refused(lambda: ctx.start(), Exception, match="handshake|helper")
    said = str(exc) + capfd.readouterr().err  # the helper's own words, wherever they went
    assert "refusing to run: LD_PRELOAD, PYTHONPATH reached a root interpreter" in said, said
    spawn.good_call()


# -- chaining into shells ------------------------------------------------------------------------

SHELLS = [
    ["nice", "-n", "5", "sh", "-c", "id"],
    ["nice", "-n", "5", "/bin/sh", "-c", "id"],
    ["nice", "-n", "5", "env", "sh", "-c", "id"],
    ["nice", "-n", "5", "nice", "-n", "5", "sh"],
    ["nice", "-n", "5", "env", "GREETING=x", "/bin/sh", "-c", "id"],
    ["nice", "-n", "5"],
]


def test_helper_chaining_rule_into_a_shell_is_refused(runner):
    assert runner.execute(["nice", "-n", "5", "true"])[0] == 0  # the chain itself works
    for argv in SHELLS:
        refused(lambda a=argv: runner.execute(a), DeniedError)
    runner.good_call()
    for argv in SHELLS:
        runner.audit.expect(event="command", decision="deny", argv=argv_has(*argv))


# -- what the spawner is handed -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"shell": True}, {"cwd": "/root"}, {"executable": "/bin/sh"}, {"preexec_fn": "os:setuid"}],
    ids=lambda o: next(iter(o)),
)
def test_helper_exec_option_it_does_not_offer_is_refused(runner, options):
    peer = runner.raw()
    peer.request(1, "exec", "true", ["true"], options)
    peer.expect_error(1, "ValueError", "unknown execute option")
    assert peer.call(fn("echo"), "after", rid=2) == ["after"]
    runner.good_call()
    runner.audit.expect(decision="error", op=EXEC_OR_COMMAND, error="unknown execute option")


@pytest.mark.parametrize(
    "argv",
    [["true\0"], ["env", "X=\0"], ["true", 1], [b"true"], []],
    ids=["nul", "nul-in-env", "int", "bytes", "empty"],
)
def test_helper_malformed_argv_is_refused(runner, argv):
    peer = runner.raw()
    peer.request(1, "exec", "x", argv)
    peer.expect_error(1, "DeniedError")
    runner.good_call()
    runner.audit.expect(decision="deny", op=EXEC_OR_COMMAND)


# -- holes listed in issue 9 ---------------------------------------------------------------


def test_helper_rule_without_run_as_does_not_run_as_root(targets):
    rule = '\n[[command]]\ncontext = "t-sec"\nname = "id"\nexec = "/usr/bin/id"\nargs = ["-u"]\n'
    fork = targets.open("fork", extra_policy=rule, caps=("CAP_SETUID", "CAP_SETGID"))
    result = refused_or_result(lambda: fork.execute(["id", "-u"]))
    if not isinstance(result, DeniedError):
        assert result[1] != b"0\n", "ATTACK SUCCEEDED: the command got uid 0 back"
    fork.good_call()
    fork.audit.expect(event="command", argv=argv_has("id", "-u"))


def refused_or_result(action):
    try:
        return action()
    except DeniedError as exc:
        return exc


def test_helper_chained_command_keeps_its_own_rule_timeout(targets):
    fork = targets.open("fork", extra_policy=RULES)
    start = time.monotonic()
    result = refused_or_timeout(lambda: fork.execute(["nice", "-n", "5", "sleep", "3"]))
    took = time.monotonic() - start
    assert isinstance(result, CallTimeout), f"ATTACK SUCCEEDED: ran {took:.1f}s under a 1 s rule"
    assert took < 2.5
    fork.good_call()
    fork.audit.expect(event="command", argv=argv_has("sleep", "3"), error="timed out")


def refused_or_timeout(action):
    try:
        return action()
    except CallTimeout as exc:
        return exc


def test_helper_timeout_of_a_direct_command_holds(runner):
    """The rule timeout that the chained case above loses, on its own."""
    runner.good_call()  # the helper is up: only the command's own time is measured
    start = time.monotonic()
    refused(lambda: runner.execute(["sleep", "5"]), CallTimeout)
    assert time.monotonic() - start < 3
    runner.good_call()
    runner.audit.expect(event="command", decision="error", error="timed out")
