"""Red team, policy: whoever can edit policy owns root, so only root may.

Each attack lays out policy the way a local user could arrange it (a file
they own, a directory they can write, a symlink into /tmp, a drop-in that
redefines a rule) and hands it to every loader: the fork-mode library
(``load_policy``), ``privsepd helper`` (spawn), ``privsepd serve`` and
``privsepd-rootwrap``. Each must refuse it, with a message naming the
offending path; the same loader then serves a good policy.

A refused policy has no audit sink yet (the sink is declared by the very
policy being refused), so the record of these attempts is the refusal
message itself: the spawned helper's HandshakeError, the daemon's and the
shim's stderr. Each test asserts it names the culprit.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context
from privsepd.policy.loader import load_policy

from . import entrypoints
from .attack import fn, outcome, wait_for
from .conftest import (
    SAFE_PATH,
    daemon_listening,
    rootwrap_script,
    spawn_command,
    start_daemon,
    write_policy,
    write_root_file,
)

NOBODY = 65534
#: A context-less command, so that privsepd-rootwrap has something to run.
SHIM_RULE = '\n[[command]]\nname = "cmd-true"\nexec = "/bin/true"\n'


class Loader:
    """One way policy gets loaded; ``refusal`` returns the refusal message."""

    def __init__(self, kind: str, base: Path) -> None:
        self.kind = kind
        self.base = base
        self.runs = 0

    def _scratch(self) -> Path:
        self.runs += 1
        d = self.base / f"{self.kind}-run{self.runs}"
        d.mkdir(mode=0o755)
        return d

    def load(self, path: str) -> str:
        """'ok ...' if the policy at ``path`` was accepted and served, else the refusal."""
        if self.kind == "fork":

            def fork_call() -> object:
                ctx = entrypoints.fresh_context()
                ctx.apply_policy(load_policy([path]))
                try:
                    return ctx._call(OP_CALL, fn("echo"), ["served"], {})
                finally:
                    ctx.stop()

            return outcome(fork_call)
        if self.kind == "spawn":
            ctx = Context("t-sec", timeout=10, helper_command=spawn_command(path))
            try:
                return outcome(lambda: ctx._call(OP_CALL, fn("echo"), ["served"], {}))
            finally:
                ctx.stop()
        if self.kind == "daemon":
            scratch = self._scratch()
            sock = scratch / "sock"
            log = str(scratch / "daemon.log")
            proc = start_daemon(path, str(sock), log)
            try:
                listening = str(sock / "t-sec.sock")
                wait_for(
                    lambda: proc.poll() is not None or daemon_listening(listening), 15, "daemon"
                )
                if proc.poll() is not None:
                    return f"exit {proc.returncode}: {open(log).read()}"
                ctx = Context("t-sec", timeout=10, socket_path=str(sock / "t-sec.sock"))
                try:
                    return outcome(lambda: ctx._call(OP_CALL, fn("echo"), ["served"], {}))
                finally:
                    ctx.stop()
            finally:
                proc.kill()
                proc.wait()
        scratch = self._scratch()
        result = subprocess.run(
            [rootwrap_script(), "--cache-dir", str(scratch / "cache"), path, "true"],
            capture_output=True,
            env={"PATH": SAFE_PATH},
            timeout=60,
        )
        if result.returncode == 0:
            return "ok rootwrap ran true"
        return f"exit {result.returncode}: {result.stderr.decode()}"

    def refusal(self, path: str) -> str:
        out = self.load(path)
        if out.startswith("ok"):
            raise AssertionError(f"ATTACK SUCCEEDED: {self.kind} accepted {path}: {out}")
        return out

    def serves(self, path: str) -> None:
        out = self.load(path)
        assert out.startswith("ok"), f"{self.kind} did not serve a good policy: {out}"


@pytest.fixture(params=["fork", "spawn", "daemon", "rootwrap"])
def loader(request, trusted_dir) -> Loader:
    return Loader(request.param, trusted_dir)


def good_policy(base: Path, name: str = "good.toml") -> str:
    return write_policy(base / name, str(base / "audit.jsonl"), SHIM_RULE)


def attempt(loader: Loader, base: Path, arrange: Callable[[Path], tuple[str, str]]) -> None:
    """The three outcomes of one policy attack, for one loader."""
    path, culprit = arrange(base)
    message = loader.refusal(path)
    assert culprit in message, f"refusal does not name {culprit}: {message}"
    loader.serves(good_policy(base))


# -- untrusted files and directories ---------------------------------------------------


def owned_by_a_user(base: Path) -> tuple[str, str]:
    path = good_policy(base, "mine.toml")
    os.chown(path, NOBODY, NOBODY)
    return path, path


def group_writable(base: Path) -> tuple[str, str]:
    path = good_policy(base, "shared.toml")
    os.chmod(path, 0o664)
    return path, path


def in_a_world_writable_directory(base: Path) -> tuple[str, str]:
    directory = base / "open"
    directory.mkdir()
    directory.chmod(0o1777)  # the sticky bit does not make it safe
    return good_policy(directory, "policy.toml"), str(directory)


def dropin_directory_group_writable(base: Path) -> tuple[str, str]:
    directory = base / "policy.d"
    directory.mkdir()
    good_policy(directory, "10-main.toml")
    directory.chmod(0o775)
    return str(directory), str(directory)


def dropin_owned_by_a_user(base: Path) -> tuple[str, str]:
    directory = base / "policy.d"
    directory.mkdir(mode=0o755)
    good_policy(directory, "10-main.toml")
    planted = write_root_file(directory / "90-mine.toml", SHIM_RULE.replace("cmd-true", "x"))
    os.chown(planted, NOBODY, NOBODY)
    return str(directory), planted


@pytest.mark.parametrize(
    "arrange",
    [
        owned_by_a_user,
        group_writable,
        in_a_world_writable_directory,
        dropin_directory_group_writable,
        dropin_owned_by_a_user,
    ],
    ids=lambda f: f.__name__,
)
def test_policy_that_others_can_write_is_refused(loader, trusted_dir, arrange):
    attempt(loader, trusted_dir, arrange)


# -- symlinks -----------------------------------------------------------------------------


_OUTSIDE: list[str] = []


@pytest.fixture(autouse=True)
def _remove_dirs_outside():
    yield
    while _OUTSIDE:
        shutil.rmtree(_OUTSIDE.pop(), ignore_errors=True)


def symlink_into_tmp(base: Path) -> tuple[str, str]:
    outside = Path(tempfile.mkdtemp(prefix="privsepd-redteam-", dir="/tmp"))
    _OUTSIDE.append(str(outside))
    os.chmod(outside, 0o755)
    target = good_policy(outside, "policy.toml")
    link = base / "linked.toml"
    link.symlink_to(target)
    return str(link), "/tmp"


def symlink_owned_by_a_user(base: Path) -> tuple[str, str]:
    target = good_policy(base, "real.toml")
    link = base / "by-user.toml"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    return str(link), str(link)


def symlinked_directory_of_a_user(base: Path) -> tuple[str, str]:
    mine = base / "mine"
    mine.mkdir(mode=0o755)
    good_policy(mine, "10-main.toml")
    os.chown(mine, NOBODY, NOBODY)
    link = base / "policy.d"
    link.symlink_to(mine)
    return str(link), str(mine)


@pytest.mark.parametrize(
    "arrange",
    [symlink_into_tmp, symlink_owned_by_a_user, symlinked_directory_of_a_user],
    ids=lambda f: f.__name__,
)
def test_symlinked_policy_is_refused(loader, trusted_dir, arrange):
    attempt(loader, trusted_dir, arrange)


# -- drop-ins may add, never widen -----------------------------------------------------------


def dropin_widens_a_context(base: Path) -> tuple[str, str]:
    directory = base / "policy.d"
    directory.mkdir(mode=0o755)
    good_policy(directory, "10-main.toml")
    widen = write_root_file(
        directory / "50-widen.toml",
        '[context.t-sec]\ncapabilities = ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]\nstay_root = true\n',
    )
    return str(directory), widen


def dropin_replaces_a_command(base: Path) -> tuple[str, str]:
    directory = base / "policy.d"
    directory.mkdir(mode=0o755)
    good_policy(directory, "10-main.toml")
    widen = write_root_file(
        directory / "50-shell.toml",
        '[[command]]\nname = "cmd-true"\nexec = "/bin/sh"\nargs = [{ rest = true }]\n',
    )
    return str(directory), widen


def dropin_loosens_a_function(base: Path) -> tuple[str, str]:
    directory = base / "policy.d"
    directory.mkdir(mode=0o755)
    good_policy(directory, "10-main.toml")
    widen = write_root_file(
        directory / "50-loose.toml",
        '[[function]]\ncontext = "t-sec"\nname = "security.entrypoints:echo"\nstrict = false\n',
    )
    return str(directory), widen


@pytest.mark.parametrize(
    "arrange",
    [dropin_widens_a_context, dropin_replaces_a_command, dropin_loosens_a_function],
    ids=lambda f: f.__name__,
)
def test_dropin_that_redefines_a_rule_is_refused(loader, trusted_dir, arrange):
    attempt(loader, trusted_dir, arrange)


# -- uid 0 needs the explicit opt-in (issue 9 item 5) -------------------------------------------


def identity_or_refusal(ctx: Context) -> str:
    try:
        return outcome(lambda: ctx._call(OP_CALL, fn("whoami"), [], {}))
    finally:
        ctx.stop()


def assert_no_uid0(out: str, what: str) -> None:
    if out.startswith("ok"):
        ident = ast.literal_eval(out[3:])
        uid, gid = ident["Uid"].split()[0], ident["Gid"].split()[0]
        assert uid != "0" and gid != "0", f"ATTACK SUCCEEDED: {what} gave uid {uid} gid {gid}"
        return
    assert re.search(r"stay_root|uid 0|gid 0|root", out), out  # refused, naming why


@pytest.mark.parametrize("user", ["root", "0"])
def test_fork_context_naming_uid_0_without_stay_root_is_refused(trusted_dir, fork, user):
    assert_no_uid0(identity_or_refusal(entrypoints.fresh_context(user=user)), f"user={user!r}")
    fork.good_call()


def test_policy_group_root_without_stay_root_is_refused(targets):
    spawn = targets.open("spawn", extra_policy="")
    text = Path(spawn.policy).read_text()
    text = text.replace('user = "nobody"\n', 'user = "nobody"\ngroup = "root"\n', 1)
    write_root_file(Path(spawn.policy), text)
    assert_no_uid0(identity_or_refusal(spawn.new_client()), 'group = "root"')
    write_root_file(Path(spawn.policy), text.replace('group = "root"\n', ""))
    spawn.good_call()


def test_policy_uid_0_alias_without_stay_root_is_refused(targets, trusted_dir):
    """``useradd -o -u 0 toor``, seen by the spawned helper only (private /etc/passwd)."""
    spawn = targets.open("spawn")
    passwd = trusted_dir / "passwd"
    passwd.write_text(open("/etc/passwd").read() + "toor:x:0:0:alias:/root:/bin/sh\n")
    text = Path(spawn.policy).read_text().replace('user = "nobody"', 'user = "toor"', 1)
    write_root_file(Path(spawn.policy), text)
    private = [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f'mount --bind {passwd} /etc/passwd && exec "$@"', "sh",
    ]  # fmt: skip
    ctx = Context("t-sec", timeout=10, helper_command=private + spawn_command(spawn.policy))
    assert_no_uid0(identity_or_refusal(ctx), 'user = "toor" (uid 0)')
    write_root_file(Path(spawn.policy), text.replace('user = "toor"', 'user = "nobody"'))
    spawn.good_call()
