"""A spawned helper resets what the caller passed through sudo before anything else.

The attack as found: the caller runs the helper with ``RLIMIT_FSIZE=1024``
and ``SIGXFSZ`` ignored; an entrypoint ran, the audit write failed, and no
record was written. Here a wrapper does exactly that (plus a blocked and
ignored SIGTERM, umask 0 and a hostile environment) and execs the real
``privsepd helper``.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import proc_status

import privsepd
from privsepd import HandshakeError
from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context
from privsepd.helper.execute import SAFE_PATH

WRAPPER = textwrap.dedent(
    """
    import os, resource, signal, sys
    sys.dont_write_bytecode = True  # the caller's process; root's cache is not its to write
    policy, lib, which = sys.argv[1:4]
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if which == "hard":
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        from privsepd.helper import kernel
        kernel.bounding_drop(kernel.CAPABILITIES["CAP_SYS_RESOURCE"])
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    os.umask(0)
    env = dict(os.environ, PYTHONPATH=lib, LD_PRELOAD="libc.so.6", BASH_ENV="/x", PSD_CALLER="1")
    argv = [sys.executable, "-m", "privsepd.cli.main", "helper", "--policy", policy]
    os.execve(sys.executable, argv + sys.argv[4:], env)
    """
)

MODULE = textwrap.dedent(
    """
    import os
    import resource

    import privsepd

    ctx = privsepd.Context("t-reset")
    IMPORT_ENV = dict(os.environ)  # what the policy module saw when it was loaded


    @ctx.entrypoint
    def state() -> dict:
        return {
            "env": dict(os.environ),
            "import_env": IMPORT_ENV,
            "fsize": list(resource.getrlimit(resource.RLIMIT_FSIZE)),
            "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
            "pid": os.getpid(),
        }
    """
)

FUNCTION = "psd_reset_fns:state"


@pytest.fixture(scope="module", autouse=True)
def compiled_install():
    """privsepd compiled, as pip installs it: the one .pyc a helper cannot protect
    from the caller's limits is privsepd/__init__'s own (see the test below)."""
    compileall.compile_dir(os.path.dirname(privsepd.__file__), quiet=1)


@pytest.fixture
def setup(trusted_dir):
    lib = trusted_dir / "lib"
    lib.mkdir(mode=0o755)
    (lib / "psd_reset_fns.py").write_text(MODULE)
    (lib / "psd_reset_fns.py").chmod(0o644)
    audit = trusted_dir / "audit.jsonl"
    audit.write_bytes(b"x" * 2048 + b"\n")  # every append lies past 1024 bytes
    audit.chmod(0o600)
    policy = trusted_dir / "policy.toml"
    policy.write_text(
        textwrap.dedent(
            f"""
            [context.t-reset]
            user = "nobody"
            audit = "{audit}"

            [[function]]
            context = "t-reset"
            name = "{FUNCTION}"
            """
        )
    )
    policy.chmod(0o644)
    return str(policy), str(lib), audit


def command(setup, which: str) -> list[str]:
    policy, lib, _ = setup
    return [sys.executable, "-c", WRAPPER, policy, lib, which]


def test_helper_started_with_a_tiny_file_size_limit_still_records_every_call(setup):
    _, _, audit = setup
    ctx = Context("t-reset", helper_command=command(setup, "soft"))
    try:
        got = ctx._call(OP_CALL, FUNCTION, [], {})
        status = proc_status(ctx.helper_pid)
    finally:
        ctx.stop()
    records = [json.loads(line) for line in audit.read_text().splitlines()[1:]]
    assert [r["decision"] for r in records if r.get("name") == FUNCTION] == ["allow"]
    infinity = resource.RLIM_INFINITY
    assert got["fsize"] == [infinity, infinity]
    assert got["core"] == [0, 0]
    # Signals: nothing blocked; ignored only what the helper itself ignores.
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) == (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGPIPE - 1))
    for name in ("LD_PRELOAD", "BASH_ENV", "PSD_CALLER", "PYTHONPATH"):
        assert name not in got["env"], name
        assert name not in got["import_env"], name
    assert got["env"]["PATH"] == SAFE_PATH


def test_helper_refuses_to_serve_when_a_limit_cannot_be_raised_back(setup, trusted_dir):
    _, _, audit = setup
    before = audit.read_bytes()
    ctx = Context("t-reset", helper_command=command(setup, "hard"))
    with pytest.raises(HandshakeError) as info:
        ctx._call(OP_CALL, FUNCTION, [], {})
    message = str(info.value)
    assert "RLIMIT_FSIZE is 1024/1024" in message and "CAP_SYS_RESOURCE" in message
    assert audit.read_bytes() == before  # nothing ran, so nothing to record


def test_umask_of_the_caller_does_not_reach_the_helper(setup):
    ctx = Context("t-reset", helper_command=command(setup, "soft"))
    try:
        ctx._call(OP_CALL, FUNCTION, [], {})
        assert proc_status(ctx.helper_pid)["Umask"] == "0077"
    finally:
        ctx.stop()


def test_a_hard_limit_within_the_minimum_is_kept(setup):
    """A hard limit that cannot go up (no CAP_SYS_RESOURCE) but is high enough is served with."""
    policy, lib, _ = setup
    wrapper = WRAPPER.replace(
        'if which == "hard":',
        'if which == "nofile":\n'
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
        "    from privsepd.helper import kernel\n"
        '    kernel.bounding_drop(kernel.CAPABILITIES["CAP_SYS_RESOURCE"])\n'
        'elif which == "hard":',
    )
    ctx = Context("t-reset", helper_command=[sys.executable, "-c", wrapper, policy, lib, "nofile"])
    try:
        ctx._call(OP_CALL, FUNCTION, [], {})
        limits = open(f"/proc/{ctx.helper_pid}/limits").read()
    finally:
        ctx.stop()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["1024", "4096"]


@pytest.mark.parametrize(("umask", "fsize"), [(0, "unlimited"), (0o022, "1")])
def test_root_under_a_callers_umask_or_file_limit_writes_no_bytecode(trusted_dir, umask, fsize):
    copy = trusted_dir / "site"
    shutil.copytree(
        os.path.dirname(privsepd.__file__),
        copy / "privsepd",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    subprocess.run(  # a compiled install: privsepd/__init__'s own .pyc exists
        [sys.executable, "-m", "py_compile", str(copy / "privsepd" / "__init__.py")], check=True
    )
    env = {"PATH": os.defpath, "PYTHONPATH": str(copy)}
    script = (
        f"import os; os.umask({umask}); import privsepd.cli.serve, privsepd.cli.rootwrap;"
        f"assert privsepd.__file__ == {str(copy / 'privsepd' / '__init__.py')!r}"
    )
    subprocess.run(
        ["/bin/sh", "-c", f'ulimit -f {fsize}; exec "$0" -c "$1"', sys.executable, script],
        env=env,
        cwd="/",
        check=True,
    )
    caches = sorted(str(p.relative_to(copy)) for p in copy.rglob("__pycache__"))
    assert caches == ["privsepd/__pycache__"]
    assert os.stat(copy / "privsepd" / "__pycache__").st_mode & 0o022 == 0
