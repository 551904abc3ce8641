"""uid 0 and gid 0 only through the explicit ``stay_root`` opt-in.

The check is on what names resolve to: root's own names, numeric ids, and
real aliases created with ``useradd -o -u 0`` for these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from sysaccounts import system_group, system_user, unique

from privsepd import ScopingError
from privsepd.context import Context
from privsepd.policy.loader import load_policy


@pytest.mark.parametrize("user", ["root", "0"])
def test_root_by_name_or_number_is_refused_without_stay_root(user):
    with pytest.raises(ScopingError, match=rf"user '{user}' resolves to uid 0.*stay_root"):
        Context("t-root-id", user=user).scope()


@pytest.mark.parametrize("group", ["root", "0"])
def test_group_root_by_name_or_number_is_refused_without_stay_root(group):
    with pytest.raises(ScopingError, match=rf"group '{group}' resolves to gid 0.*stay_root"):
        Context("t-root-id", user="nobody", group=group).scope()


def test_stay_root_keeps_root_as_an_explicit_opt_in():
    scope = Context("t-root-id", stay_root=True).scope()
    assert (scope.uid, scope.gid) == (None, None)


def test_an_ordinary_user_resolves_to_its_own_ids():
    scope = Context("t-root-id", user="nobody").scope()
    assert (scope.uid, scope.gid) == (65534, 65534)


def test_a_uid_0_alias_is_refused(root):
    name = unique("psdtoor")
    with system_user(name, "-o", "-u", "0", "-N"):
        with pytest.raises(ScopingError, match=rf"user '{name}' resolves to uid 0"):
            Context("t-root-id", user=name).scope()


def test_a_user_whose_primary_group_is_root_is_refused(root):
    name = unique("psdgid0")
    with system_user(name, "-g", "0", "-N") as pw:
        assert pw.pw_uid != 0 and pw.pw_gid == 0
        with pytest.raises(ScopingError, match=rf"primary group of '{name}' resolves to gid 0"):
            Context("t-root-id", user=name).scope()


def test_a_user_with_supplementary_group_root_is_refused(root):
    name = unique("psdsup0")
    with system_user(name, "-G", "root") as pw:
        assert pw.pw_uid != 0 and pw.pw_gid != 0
        with pytest.raises(ScopingError, match="supplementary group 0"):
            Context("t-root-id", user=name).scope()


def _policy(trusted_dir, body: str) -> str:
    path = trusted_dir / "policy.toml"
    path.write_text(textwrap.dedent(body))
    path.chmod(0o644)
    return str(path)


def test_a_uid_0_alias_in_toml_policy_is_refused_when_the_helper_starts(trusted_dir):
    name = unique("psdtoor")
    with system_user(name, "-o", "-u", "0", "-N"):
        policy = _policy(trusted_dir, f'[context.t-alias]\nuser = "{name}"\n')
        ctx = Context("t-alias")
        ctx.apply_policy(load_policy([policy]))
        with pytest.raises(ScopingError, match=rf"'{name}' resolves to uid 0"):
            ctx.start()
        assert ctx.helper_pid is None


def test_group_root_in_toml_policy_stops_the_daemon_from_starting(trusted_dir):
    policy = _policy(trusted_dir, '[context.t-grp]\nuser = "nobody"\ngroup = "root"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "privsepd.cli.main",
            "serve",
            "--policy",
            policy,
            "--socket-dir",
            os.path.join(trusted_dir, "sock"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "group 'root' resolves to gid 0" in proc.stderr and "stay_root" in proc.stderr
    assert not os.path.exists(os.path.join(trusted_dir, "sock", "t-grp.sock"))


def test_an_alias_group_with_gid_0_is_refused(root):
    name = unique("psdgrp0")
    with system_group(name, "-o", "-g", "0"):
        with pytest.raises(ScopingError, match=rf"group '{name}' resolves to gid 0"):
            Context("t-root-id", user="nobody", group=name).scope()
