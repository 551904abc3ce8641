"""``privsepd serve`` and ``privsepd helper`` load only trusted module files.

The attack as found: a module owned by an ordinary user, in a directory on
the root process's PYTHONPATH, named by policy. It must be refused with its
path named, before any of its code runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from privsepd import HandshakeError, PolicyError
from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context

NOBODY = 65534

MODULE = """
import privsepd

ctx = privsepd.Context("t-mod")
open({marker!r}, "a").close()


@ctx.entrypoint
def hello() -> str:
    return "hello from " + __name__
"""


def policy_for(directory: Path, module: str) -> str:
    path = directory / "policy.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [context.t-mod]
            user = "nobody"
            audit = "{directory}/audit.jsonl"

            [[function]]
            context = "t-mod"
            name = "{module}:hello"
            """
        )
    )
    path.chmod(0o644)
    return str(path)


def library(directory: Path, name: str, module: str, owner: int) -> Path:
    lib = directory / name
    lib.mkdir()
    os.chown(lib, owner, owner)
    lib.chmod(0o755)
    path = lib / f"{module}.py"
    path.write_text(textwrap.dedent(MODULE.format(marker=str(directory / "executed"))))
    os.chown(path, owner, owner)
    path.chmod(0o644)
    return lib


def serve(directory: Path, policy: str, pythonpath: Path | str) -> subprocess.Popen:
    env = {"PATH": os.defpath, "PYTHONPATH": str(pythonpath)}
    return subprocess.Popen(
        [sys.executable, "-m", "privsepd.cli.main", "serve", "--policy", policy,
         "--socket-dir", str(directory / "sock")],
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
    )  # fmt: skip


def wait_for_daemon(proc: subprocess.Popen, path: Path) -> None:
    """Until the daemon listens (the socket file exists a moment before listen())."""
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "daemon did not start"
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                return
            except ConnectionRefusedError:
                pass
            finally:
                probe.close()
        time.sleep(0.02)


def test_daemon_refuses_a_user_owned_module_on_its_pythonpath(trusted_dir):
    lib = library(trusted_dir, "userlib", "psd_evil", NOBODY)
    proc = serve(trusted_dir, policy_for(trusted_dir, "psd_evil"), lib)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2
    message = err.decode()
    assert f"{lib}/psd_evil.py" in message and "owned by an untrusted user" in message
    assert "function psd_evil:hello" in message
    assert not (trusted_dir / "executed").exists()
    assert not (trusted_dir / "sock" / "t-mod.sock").exists()


def test_daemon_loads_a_root_owned_module_and_serves_it(trusted_dir):
    lib = library(trusted_dir, "rootlib", "psd_good", 0)
    proc = serve(trusted_dir, policy_for(trusted_dir, "psd_good"), lib)
    socket_path = trusted_dir / "sock" / "t-mod.sock"
    try:
        wait_for_daemon(proc, socket_path)
        ctx = Context("t-mod", socket_path=str(socket_path))
        try:
            assert ctx._call(OP_CALL, "psd_good:hello", [], {}) == "hello from psd_good"
        finally:
            ctx.stop()
    finally:
        proc.kill()
        proc.wait()
    assert (trusted_dir / "executed").exists()


def helper_command(policy: str, pythonpath: Path) -> list[str]:
    return [
        "/usr/bin/env",
        f"PYTHONPATH={pythonpath}",
        sys.executable,
        "-m",
        "privsepd.cli.main",
        "helper",
        "--policy",
        policy,
    ]


def test_spawned_helper_refuses_a_user_owned_module_on_its_pythonpath(trusted_dir):
    lib = library(trusted_dir, "userlib", "psd_evil2", NOBODY)
    ctx = Context("t-mod", helper_command=helper_command(policy_for(trusted_dir, "psd_evil2"), lib))
    with pytest.raises(HandshakeError) as info:
        ctx.start()
    assert f"{lib}/psd_evil2.py" in str(info.value)
    assert "owned by an untrusted user" in str(info.value)
    assert not (trusted_dir / "executed").exists()


def test_spawned_helper_serves_a_root_owned_module(trusted_dir):
    lib = library(trusted_dir, "rootlib", "psd_good2", 0)
    ctx = Context("t-mod", helper_command=helper_command(policy_for(trusted_dir, "psd_good2"), lib))
    try:
        assert ctx._call(OP_CALL, "psd_good2:hello", [], {}) == "hello from psd_good2"
    finally:
        ctx.stop()


LAZY = """
import privsepd

ctx = privsepd.Context("t-mod")


@ctx.entrypoint
def hello() -> str:
    import psd_lazy_dep  # imported at call time, inside the scoped helper

    return psd_lazy_dep.VALUE
"""


@pytest.mark.parametrize("mode", ["spawn", "daemon"])
def test_a_module_an_entrypoint_imports_at_call_time_is_checked_too(trusted_dir, mode):
    open_dir = trusted_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    marker = open_dir / "executed"
    root_lib = trusted_dir / "rootlib"
    root_lib.mkdir(mode=0o755)
    (root_lib / "psd_lazy_front.py").write_text(textwrap.dedent(LAZY))
    (root_lib / "psd_lazy_front.py").chmod(0o644)
    user_lib = library(trusted_dir, "userlib", "psd_unused", NOBODY)
    dep = user_lib / "psd_lazy_dep.py"
    dep.write_text(f"open({str(marker)!r}, 'a').close()\nVALUE = 'dep'\n")
    os.chown(dep, NOBODY, NOBODY)
    policy = policy_for(trusted_dir, "psd_lazy_front")
    pythonpath = f"{root_lib}:{user_lib}"
    proc = None
    if mode == "spawn":
        command = helper_command(policy, root_lib)
        command[1] = f"PYTHONPATH={pythonpath}"
        ctx = Context("t-mod", helper_command=command)
    else:
        proc = serve(trusted_dir, policy, pythonpath)
        socket_path = trusted_dir / "sock" / "t-mod.sock"
        wait_for_daemon(proc, socket_path)
        ctx = Context("t-mod", socket_path=str(socket_path))
    try:
        with pytest.raises(PolicyError, match=f"{dep}.*owned by an untrusted user"):
            ctx._call(OP_CALL, "psd_lazy_front:hello", [], {})
    finally:
        ctx.stop()
        if proc is not None:
            proc.kill()
            proc.wait()
    assert not marker.exists()
