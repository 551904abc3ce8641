"""Tests for privsepd.policy.trust with real files, owners and modes.

pytest's tmp_path lives under /tmp, which is world-writable (sticky): the
real check rightly refuses everything below it. So trees are built under a
fresh root-owned 0755 directory in /run (or another root-owned, non-writable
base), and the full chain up to / is checked with no shortcut.
"""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import pytest

from privsepd.errors import PolicyError, UnsafePolicyError
from privsepd.policy import trust as trust_module
from privsepd.policy.trust import ROOT_ONLY, Trust, check_trusted, read_trusted

OTHER_UID = 54321
OTHER_GID = 54321
_BASES = ["/run", "/var/lib", "/root"]


@pytest.fixture
def safe(trusted_dir) -> Path:
    return trusted_dir


def make_file(path: Path, text: str = "x = 1\n", mode: int = 0o644, uid: int = 0) -> Path:
    path.write_text(text)
    path.chmod(mode)
    os.chown(path, uid, 0)
    return path


def make_dir(path: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
    path.mkdir()
    path.chmod(mode)
    os.chown(path, uid, gid)
    return path


def refusal(path: Path, trust: Trust = ROOT_ONLY) -> UnsafePolicyError:
    with pytest.raises(UnsafePolicyError) as info:
        check_trusted(str(path), trust)
    return info.value


# --- Trust -------------------------------------------------------------------


def test_root_only_trusts_uid_zero_only():
    assert ROOT_ONLY.owners == frozenset({0})
    assert Trust() == ROOT_ONLY


def test_trust_is_frozen():
    with pytest.raises(AttributeError):
        ROOT_ONLY.owners = frozenset({1000})  # type: ignore[misc]


def test_trust_rejects_non_uid_owner():
    with pytest.raises(ValueError):
        Trust(frozenset({"root"}))  # type: ignore[arg-type]


def test_trust_module_reads_no_environment_or_argv():
    names = {
        node.attr if isinstance(node, ast.Attribute) else node.id
        for node in ast.walk(ast.parse(inspect.getsource(trust_module)))
        if isinstance(node, (ast.Attribute, ast.Name))
    }
    assert not names & {"environ", "environb", "getenv", "argv", "sys"}


# --- accepted ------------------------------------------------------------------


def test_root_owned_file_in_trusted_tree_is_trusted(safe):
    check_trusted(str(make_file(safe / "p.toml")))


def test_root_owned_directory_is_trusted(safe):
    check_trusted(str(make_dir(safe / "d")))


def test_read_trusted_returns_text(safe):
    assert read_trusted(str(make_file(safe / "p.toml", "a = 'é'\n"))) == "a = 'é'\n"


def test_symlink_to_trusted_file_is_followed(safe):
    target = make_file(safe / "real.toml")
    (safe / "link.toml").symlink_to(target)
    assert read_trusted(str(safe / "link.toml")) == "x = 1\n"


def test_relative_symlink_and_dotdot_resolve_like_the_kernel(safe):
    make_dir(safe / "a")
    make_dir(safe / "b")
    make_file(safe / "b" / "p.toml", "v = 2\n")
    (safe / "a" / "up").symlink_to("../b")
    assert read_trusted(str(safe / "a" / "up" / ".." / "b" / "p.toml")) == "v = 2\n"


def test_relative_path_is_resolved_from_trusted_cwd(safe, monkeypatch):
    make_file(safe / "p.toml")
    monkeypatch.chdir(safe)
    check_trusted("p.toml")


def test_other_owner_is_trusted_only_through_the_trust_argument(safe):
    f = make_file(safe / "p.toml", uid=OTHER_UID)
    check_trusted(str(f), Trust(frozenset({0, OTHER_UID})))


# --- refused: the file ------------------------------------------------------------


def test_file_owned_by_other_user_is_refused_naming_owner_and_mode(safe):
    f = make_file(safe / "p.toml", uid=OTHER_UID)
    err = refusal(f)
    assert err.offending == str(f)
    assert err.owner == OTHER_UID
    assert err.mode == 0o644
    assert str(f) in str(err) and f"uid {OTHER_UID}" in str(err) and "0644" in str(err)


def test_group_writable_file_is_refused(safe):
    err = refusal(make_file(safe / "p.toml", mode=0o664))
    assert "group-writable" in str(err) and "0664" in str(err)


def test_world_writable_file_is_refused(safe):
    err = refusal(make_file(safe / "p.toml", mode=0o646))
    assert "world-writable" in str(err)


def test_read_trusted_refuses_untrusted_file(safe):
    with pytest.raises(UnsafePolicyError):
        read_trusted(str(make_file(safe / "p.toml", mode=0o666)))


# --- refused: the chain --------------------------------------------------------------


def test_parent_directory_owned_by_other_user_is_refused(safe):
    d = make_dir(safe / "d", uid=OTHER_UID)
    f = make_file(d / "p.toml")
    err = refusal(f)
    assert err.offending == str(d)
    assert err.path == str(f)
    assert f"directory {d}" in str(err)


def test_group_writable_grandparent_is_refused_naming_it(safe):
    top = make_dir(safe / "top", mode=0o775, gid=OTHER_GID)
    mid = make_dir(top / "mid")
    err = refusal(make_file(mid / "p.toml"))
    assert err.offending == str(top)
    assert "group-writable" in str(err) and "0775" in str(err)


def test_sticky_world_writable_directory_is_refused(safe):
    d = make_dir(safe / "tmp", mode=0o1777)
    err = refusal(make_file(d / "p.toml"))
    assert err.offending == str(d)
    assert "sticky" in str(err) and "1777" in str(err)


def test_pytest_tmp_path_under_world_writable_tmp_is_refused(root, tmp_path):
    f = make_file(tmp_path / "p.toml")
    err = refusal(f)
    assert err.mode & 0o002


def test_symlink_to_untrusted_file_is_refused_naming_target(safe):
    target = make_file(safe / "real.toml", uid=OTHER_UID)
    (safe / "link.toml").symlink_to(target)
    err = refusal(safe / "link.toml")
    assert err.offending == str(target)


def test_symlinked_directory_into_untrusted_tree_is_refused(safe):
    bad = make_dir(safe / "bad", mode=0o777)
    make_file(bad / "p.toml")
    (safe / "conf").symlink_to(bad)
    err = refusal(safe / "conf" / "p.toml")
    assert err.offending == str(bad)


def test_symlink_owned_by_other_user_is_refused(safe):
    target = make_file(safe / "real.toml")
    link = safe / "link.toml"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_GID)
    assert refusal(link).offending == str(link)


def test_dotdot_out_of_a_trusted_dir_checks_where_it_lands(safe):
    bad = make_dir(safe / "bad", uid=OTHER_UID)
    make_file(bad / "p.toml")
    make_dir(safe / "good")
    assert refusal(safe / "good" / ".." / "bad" / "p.toml").offending == str(bad)


# --- refused: not a policy file -------------------------------------------------------


def test_missing_file_is_policy_error_naming_path(safe):
    with pytest.raises(PolicyError, match="No such file") as info:
        check_trusted(str(safe / "missing.toml"))
    assert not isinstance(info.value, UnsafePolicyError)
    assert str(safe / "missing.toml") in str(info.value)


def test_symlink_loop_is_policy_error(safe):
    (safe / "a").symlink_to(safe / "b")
    (safe / "b").symlink_to(safe / "a")
    with pytest.raises(PolicyError, match="too many symlinks|loop"):
        check_trusted(str(safe / "a"))


def test_file_used_as_directory_is_policy_error(safe):
    f = make_file(safe / "p.toml")
    with pytest.raises(PolicyError, match="not a directory"):
        check_trusted(str(f / "x"))


def test_read_trusted_refuses_directory(safe):
    with pytest.raises(PolicyError, match="not a regular file"):
        read_trusted(str(make_dir(safe / "d")))


def test_read_trusted_refuses_fifo_without_blocking(safe):
    os.mkfifo(safe / "fifo", 0o644)
    with pytest.raises(PolicyError, match="not a regular file"):
        read_trusted(str(safe / "fifo"))


def test_read_trusted_refuses_invalid_utf8(safe):
    f = safe / "p.toml"
    f.write_bytes(b"a = '\xff'\n")
    with pytest.raises(PolicyError, match="UTF-8"):
        read_trusted(str(f))


def test_nul_in_path_is_policy_error():
    with pytest.raises(PolicyError):
        check_trusted("/etc/\0x")


# --- what each check guards ----------------------------------------------------------


def test_the_root_directory_itself_is_checked(safe):
    # Nobody but uid 54321 is trusted here, and / (owned by root) is the
    # first element of every chain: the refusal must name /, not /run.
    err = refusal(make_file(safe / "p.toml"), Trust(frozenset({OTHER_UID})))
    assert err.offending == "/"
    assert err.owner == 0


def test_read_trusted_refuses_a_file_replaced_between_the_check_and_the_open(safe, monkeypatch):
    judged = make_file(safe / "policy.toml", "judged = true\n")
    other = make_file(safe / "other.toml", "replaced = true\n")  # root-owned: trusted too
    walk = trust_module._Walk.run

    def walk_then_replace(self):
        walk(self)
        os.rename(other, judged)  # between the walk's fstat and read_trusted's open

    monkeypatch.setattr(trust_module._Walk, "run", walk_then_replace)
    with pytest.raises(PolicyError, match="changed while it was being checked"):
        read_trusted(str(judged))
