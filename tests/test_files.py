"""The ``Files`` declaration: its checks, its TOML form, and how a Context takes it.

What the helper then can and cannot do is tested on a real kernel in
tests/helper/test_grants.py.
"""

from __future__ import annotations

import pytest

import privsepd
from privsepd.context import Context
from privsepd.errors import PolicyError, ScopingError
from privsepd.files import Files, matches_component
from privsepd.policy.loader import load_policy
from privsepd.policy.native import parse_policy


def test_files_is_exported_lazily_from_the_package():
    assert privsepd.Files is Files
    assert "Files" in privsepd.__all__


def test_write_implies_read_and_duplicates_collapse():
    files = Files(read=["/a", "/b", "/a"], write=["/b", "/c"])
    assert files.read == ("/a",)
    assert files.write == ("/b", "/c")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("sys/class/net", "must be absolute"),
        ("/sys/class/../net", "no '.' or '..'"),
        ("/sys/./class", "no '.' or '..'"),
        ("/sys//class", "normalised"),
        ("/sys/class/", "normalised"),
        ("/sys/**/mtu", "'**' is not supported"),
        ("/sys/\0", "NUL"),
    ],
)
def test_bad_patterns_are_refused_naming_the_problem(pattern, problem):
    with pytest.raises(ScopingError, match="files write path") as info:
        Files(write=[pattern])
    assert problem in str(info.value)


def test_a_single_string_is_refused_rather_than_split_into_characters():
    with pytest.raises(ScopingError, match="list of paths, not one string"):
        Files(read="/etc/hosts")  # type: ignore[arg-type]


def test_without_landlock_takes_refuse_or_allow_only():
    assert Files(read=["/x"]).without_landlock == "refuse"
    with pytest.raises(ScopingError, match="'refuse', 'allow'"):
        Files(read=["/x"], without_landlock="yes")


def test_capability_follows_the_kind_of_access():
    assert Files(write=["/x"]).capabilities == {"CAP_DAC_OVERRIDE"}
    assert Files(read=["/x"]).capabilities == {"CAP_DAC_READ_SEARCH"}
    assert Files().capabilities == frozenset()


def test_star_does_not_match_a_leading_dot_as_in_a_shell():
    assert matches_component("eth0", "*")
    assert not matches_component(".hidden", "*")
    assert matches_component(".hidden", ".*")
    assert matches_component("eth0", "eth[0-9]")


def test_context_takes_files_and_refuses_anything_else():
    files = Files(write=["/sys/class/net/*/mtu"])
    assert Context("t-f", files=files).files is files
    assert Context("t-f", files=Files()).files is None
    with pytest.raises(TypeError, match="privsepd.Files"):
        Context("t-f", files={"write": ["/x"]})


# --- native TOML ------------------------------------------------------------------

POLICY = """
[context.neutron]
capabilities = ["CAP_NET_ADMIN"]
files = { write = ["/sys/class/net/*/mtu", "/proc/sys/net"], read = ["/etc/hosts"] }

[context.lax]
files = { read = ["/etc/hosts"], without_landlock = "allow" }
"""


def test_toml_files_key_is_read():
    frag = parse_policy(POLICY, "/etc/privsepd/p.toml")
    assert frag.contexts["neutron"].files == Files(
        read=["/etc/hosts"], write=["/sys/class/net/*/mtu", "/proc/sys/net"]
    )
    assert frag.contexts["lax"].files.without_landlock == "allow"


def error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "/etc/privsepd/p.toml")
    return info.value


def test_toml_unknown_files_key_names_the_allowed_ones_and_the_line():
    err = error('[context.c]\ncapabilities = []\nfiles = { writes = ["/x"] }\n')
    assert err.line == 3
    assert "unknown key 'writes'" in str(err) and "read, without_landlock, write" in str(err)


def test_toml_relative_files_path_is_an_error_with_its_line():
    err = error('[context.c]\n\nfiles = { read = ["etc/hosts"] }\n')
    assert err.line == 3 and "must be absolute" in str(err)


def test_toml_files_must_be_a_table_of_lists():
    assert "must be a table" in str(error('[context.c]\nfiles = ["/x"]\n'))
    assert "must be a list of strings" in str(error('[context.c]\nfiles = { read = "/x" }\n'))


def test_toml_without_landlock_value_is_checked():
    err = error('[context.c]\nfiles = { read = ["/x"], without_landlock = "sure" }\n')
    assert "without_landlock" in str(err) and "'sure'" in str(err)


def test_apply_policy_carries_files_over(trusted_dir):
    path = trusted_dir / "policy.toml"
    path.write_text(POLICY)
    path.chmod(0o644)
    ctx = Context("neutron")
    ctx.apply_policy(load_policy([str(path)]))
    assert ctx.files == Files(read=["/etc/hosts"], write=["/sys/class/net/*/mtu", "/proc/sys/net"])
    assert ctx.scope().capabilities == {"CAP_NET_ADMIN", "CAP_DAC_OVERRIDE"}
