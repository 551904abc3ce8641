"""Tests for privsepd.constraints: each constraint admits exactly what it says."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privsepd.constraints import (
    CIDR,
    MAC,
    Bool,
    Bytes,
    Choice,
    Constraint,
    DecimalInt,
    InterfaceName,
    IntRange,
    IPAddress,
    OneOf,
    PathUnder,
    Regex,
    Str,
    constraint_from_spec,
)
from privsepd.errors import ConstraintError, DeniedError, PolicyError


def passes(c: Constraint, value: object) -> bool:
    try:
        c.check("arg", value)
    except ConstraintError:
        return False
    return True


# --- error shape -------------------------------------------------------------


def test_failure_raises_constraint_error_naming_argument_and_rule():
    with pytest.raises(ConstraintError) as info:
        IntRange(68, 9000).check("mtu", 10)
    assert info.value.argument == "mtu"
    assert info.value.rule == "int_range [68, 9000]"
    assert "mtu" in str(info.value) and "below 68" in str(info.value)


def test_constraint_error_is_a_denial():
    with pytest.raises(DeniedError):
        Bool().check("x", 1)


def test_error_detail_truncates_huge_values():
    with pytest.raises(ConstraintError) as info:
        Choice("a").check("x", "z" * 10000)
    assert len(str(info.value)) < 200


def test_matches_is_the_boolean_form_of_check():
    assert MAC().matches("aa:bb:cc:dd:ee:ff")
    assert not MAC().matches("nope")


def test_equal_constraints_compare_and_hash_equal():
    assert Regex("a+") == Regex("a+")
    assert hash(Choice("a", 1)) == hash(Choice("a", 1))
    assert Choice(1) != Choice(True)
    assert IntRange(1, 2) != Regex("a")


# --- Regex -------------------------------------------------------------------


def test_regex_describe():
    assert Regex("[a-z0-9]{1,15}").describe() == "regex '[a-z0-9]{1,15}'"


def test_regex_requires_full_match():
    r = Regex("[a-z]+")
    assert passes(r, "abc")
    assert not passes(r, "abc1")
    assert not passes(r, "1abc")


def test_regex_dollar_does_not_admit_trailing_newline():
    assert not passes(Regex("[a-z]+$"), "abc\n")


@pytest.mark.parametrize("value", ["\u0661\u0662\u0663", "\uff11\uff12", "\u0967"])
def test_regex_digit_class_is_ascii_only(value):
    assert not passes(Regex(r"\d+"), value)
    assert passes(Regex(r"\d+"), "123")


def test_regex_word_class_and_ignorecase_are_ascii_only():
    assert not passes(Regex(r"\w+"), "caf\u00e9")
    assert not passes(Regex(r"(?i)k"), "\u212a")  # KELVIN SIGN folds to k in Unicode mode
    assert passes(Regex(r"(?i)k"), "K")


def test_regex_rejects_non_str():
    assert not passes(Regex(".*"), b"abc")
    assert not passes(Regex(".*"), 1)


def test_regex_rejects_value_over_max_len():
    assert not passes(Regex("a*", max_len=3), "aaaa")
    assert passes(Regex("a*", max_len=3), "aaa")


def test_regex_invalid_pattern_is_policy_error():
    with pytest.raises(PolicyError, match="invalid regex"):
        Regex("(")


@given(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.sampled_from(["\n", "\r\n", " ", "\0"]))
def test_regex_never_admits_appended_separator(word, tail):
    r = Regex("[a-z]{1,8}$")
    assert passes(r, word)
    assert not passes(r, word + tail)


# --- Choice ------------------------------------------------------------------


def test_choice_admits_members():
    assert passes(Choice("up", "down"), "down")


def test_choice_rejects_non_member():
    assert not passes(Choice("up", "down"), "sideways")


def test_choice_is_type_strict_between_bool_and_int():
    assert not passes(Choice(1), True)
    assert not passes(Choice(True), 1)
    assert not passes(Choice(0), False)


def test_choice_is_type_strict_between_str_and_int():
    assert not passes(Choice("1"), 1)
    assert not passes(Choice(1), "1")


def test_choice_is_type_strict_between_str_and_bytes():
    assert not passes(Choice("a"), b"a")


def test_choice_rejects_float_equal_to_int():
    assert not passes(Choice(1), 1.0)


def test_choice_needs_values():
    with pytest.raises(PolicyError):
        Choice()


def test_choice_values_must_be_scalars():
    with pytest.raises(PolicyError):
        Choice(["a"])


# --- IntRange ----------------------------------------------------------------


def test_int_range_admits_bounds_inclusive():
    r = IntRange(68, 9000)
    assert passes(r, 68) and passes(r, 9000)
    assert not passes(r, 67) and not passes(r, 9001)


def test_int_range_rejects_bool():
    assert not passes(IntRange(0, 1), True)


def test_int_range_rejects_numeric_str_and_float():
    assert not passes(IntRange(0, 10), "5")
    assert not passes(IntRange(0, 10), 5.0)


def test_int_range_open_bounds():
    assert passes(IntRange(min=0), 10**30)
    assert passes(IntRange(max=0), -(10**30))
    assert IntRange().describe() == "int_range [-inf, +inf]"


def test_int_range_min_above_max_is_policy_error():
    with pytest.raises(PolicyError):
        IntRange(5, 1)


@given(st.integers(), st.integers(-100, 100), st.integers(0, 100))
def test_int_range_admits_exactly_the_interval(value, lo, width):
    assert passes(IntRange(lo, lo + width), value) == (lo <= value <= lo + width)


def test_decimal_int_admits_canonical_decimal_in_range():
    c = DecimalInt(IntRange(68, 9000))
    assert passes(c, "1500") and passes(c, "68")
    assert not passes(c, "67")


def test_decimal_int_rejects_non_canonical_spellings():
    c = DecimalInt(IntRange())
    bad_values = ["01500", "+1500", " 1500", "1500 ", "1_500", "0x5dc", "1500\n", "", "-0", "١٥"]
    for bad in bad_values:
        assert not passes(c, bad), bad


def test_decimal_int_rejects_int_values():
    assert not passes(DecimalInt(IntRange()), 1500)


def test_decimal_int_admits_negative():
    assert passes(DecimalInt(IntRange(-5, 5)), "-5")


@given(st.integers(-(10**6), 10**6))
def test_decimal_int_agrees_with_int_range_on_str_of_int(value):
    r = IntRange(-1000, 1000)
    assert passes(DecimalInt(r), str(value)) == passes(r, value)


# --- PathUnder ---------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """base/ with a file, a dir, a link inside, a link outside; base2 beside it."""
    base = tmp_path / "data"
    (base / "sub").mkdir(parents=True)
    (base / "file").write_text("x")
    (tmp_path / "data2").mkdir()
    (tmp_path / "outside").write_text("secret")
    (base / "in_link").symlink_to(base / "sub")
    (base / "out_link").symlink_to(tmp_path / "outside")
    (base / "dir_out").symlink_to(tmp_path)
    return tmp_path


def test_path_under_admits_path_below_prefix(tree):
    assert passes(PathUnder(str(tree / "data")), str(tree / "data" / "sub" / "new"))


def test_path_under_admits_prefix_itself(tree):
    assert passes(PathUnder(str(tree / "data")), str(tree / "data"))


def test_path_under_rejects_sibling_sharing_string_prefix(tree):
    assert not passes(PathUnder(str(tree / "data")), str(tree / "data2" / "x"))


def test_path_under_rejects_dotdot_escape(tree):
    assert not passes(PathUnder(str(tree / "data")), str(tree / "data" / ".." / "outside"))


def test_path_under_rejects_dotdot_through_missing_dir(tree):
    value = str(tree / "data" / "missing" / ".." / ".." / "outside")
    assert not passes(PathUnder(str(tree / "data")), value)


def test_path_under_rejects_symlink_pointing_outside(tree):
    assert not passes(PathUnder(str(tree / "data")), str(tree / "data" / "out_link"))


def test_path_under_rejects_path_through_directory_symlink_outside(tree):
    value = str(tree / "data" / "dir_out" / "outside")
    assert not passes(PathUnder(str(tree / "data")), value)


def test_path_under_admits_symlink_staying_inside(tree):
    assert passes(PathUnder(str(tree / "data")), str(tree / "data" / "in_link"))


def test_path_under_resolves_symlinked_prefix(tree):
    (tree / "alias").symlink_to(tree / "data")
    assert passes(PathUnder(str(tree / "alias")), str(tree / "data" / "file"))


def test_path_under_trailing_slash_prefix_is_normalised(tree):
    c = PathUnder(str(tree / "data") + "/")
    assert passes(c, str(tree / "data" / "file"))
    assert not passes(c, str(tree / "data2"))


def test_path_under_rejects_relative_path(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert not passes(PathUnder(str(tree / "data")), "data/file")


def test_path_under_rejects_nul(tree):
    assert not passes(PathUnder(str(tree / "data")), str(tree / "data" / "file") + "\0x")


def test_path_under_rejects_bytes(tree):
    assert not passes(PathUnder(str(tree / "data")), os.fsencode(tree / "data" / "file"))


def test_path_under_must_exist_rejects_missing(tree):
    c = PathUnder(str(tree / "data"), must_exist=True)
    assert passes(c, str(tree / "data" / "file"))
    assert not passes(c, str(tree / "data" / "missing"))


def test_path_under_must_exist_rejects_dangling_symlink(tree):
    (tree / "data" / "dangling").symlink_to(tree / "data" / "nowhere")
    assert not passes(
        PathUnder(str(tree / "data"), must_exist=True), str(tree / "data" / "dangling")
    )


def test_path_under_rejects_path_through_symlink_loop(tree):
    (tree / "data" / "l1").symlink_to(tree / "data" / "l2")
    (tree / "data" / "l2").symlink_to(tree / "data" / "l1")
    assert not passes(PathUnder(str(tree / "data")), str(tree / "data" / "l1" / "x"))


def test_path_under_resolve_returns_real_path(tree):
    c = PathUnder(str(tree / "data"))
    assert c.resolve("p", str(tree / "data" / "in_link" / "x")) == str(tree / "data" / "sub" / "x")


def test_path_under_root_prefix_admits_any_absolute_path():
    assert passes(PathUnder("/"), "/etc/passwd")


def test_path_under_prefix_must_be_absolute():
    with pytest.raises(PolicyError):
        PathUnder("data")


_COMPONENTS = [
    "sub",
    "file",
    "..",
    ".",
    "in_link",
    "out_link",
    "dir_out",
    "loop",
    "data",
    "data2",
    "x",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_COMPONENTS), max_size=8), st.booleans())
def test_path_under_never_admits_a_path_resolving_outside(tmp_path_factory, parts, must_exist):
    root = _fuzz_tree(tmp_path_factory)
    base = os.path.join(root, "data")
    value = os.path.join(base, *parts)
    c = PathUnder(base, must_exist=must_exist)
    if passes(c, value):
        real = os.path.realpath(value)
        assert os.path.commonpath([real, base]) == base


_FUZZ_ROOT: list[str] = []


def _fuzz_tree(factory) -> str:
    if not _FUZZ_ROOT:
        root = factory.mktemp("fuzz")
        base = root / "data"
        (base / "sub").mkdir(parents=True)
        (base / "file").write_text("x")
        (root / "data2").mkdir()
        (base / "in_link").symlink_to(base / "sub")
        (base / "out_link").symlink_to(root / "data2")
        (base / "sub" / "dir_out").symlink_to(root)
        (base / "dir_out").symlink_to(root)
        (base / "loop").symlink_to(base / "sub" / "loop2")
        (base / "sub" / "loop2").symlink_to(base / "loop")
        _FUZZ_ROOT.append(str(root))
    return _FUZZ_ROOT[0]


# --- network -----------------------------------------------------------------


def test_ip_admits_v4_and_v6():
    assert passes(IPAddress(), "192.0.2.1")
    assert passes(IPAddress(), "2001:db8::1")


def test_ip_version_restricts():
    assert not passes(IPAddress(4), "2001:db8::1")
    assert not passes(IPAddress(6), "192.0.2.1")


def test_ip_rejects_int_form():
    assert not passes(IPAddress(), 3221225985)


def test_ip_rejects_zone_suffix():
    assert not passes(IPAddress(6), "fe80::1%eth0")


def test_ip_rejects_leading_zero_octets_and_whitespace():
    assert not passes(IPAddress(), "010.0.0.1")
    assert not passes(IPAddress(), " 10.0.0.1")
    assert not passes(IPAddress(), "10.0.0.1\n")


def test_cidr_admits_network():
    assert passes(CIDR(), "10.0.0.0/8")
    assert passes(CIDR(6), "2001:db8::/32")


def test_cidr_strict_rejects_host_bits():
    assert not passes(CIDR(), "10.0.0.1/8")
    assert passes(CIDR(strict=False), "10.0.0.1/8")


def test_cidr_requires_prefix_length():
    assert not passes(CIDR(), "10.0.0.0")


def test_cidr_rejects_netmask_form():
    assert not passes(CIDR(), "10.0.0.0/255.0.0.0")


def test_cidr_rejects_wrong_version():
    assert not passes(CIDR(4), "2001:db8::/32")


def test_cidr_rejects_prefix_too_long():
    assert not passes(CIDR(), "10.0.0.0/33")


def test_mac_admits_colon_form_either_case():
    assert passes(MAC(), "aa:bb:cc:dd:ee:ff")
    assert passes(MAC(), "AA:BB:CC:00:11:22")


def test_mac_rejects_other_forms():
    for bad in ["aa-bb-cc-dd-ee-ff", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff\n"]:
        assert not passes(MAC(), bad), bad


def test_mac_rejects_unicode_digits():
    assert not passes(MAC(), "\u0661\u0661:bb:cc:dd:ee:ff")


def test_ifname_admits_usual_names():
    for name in ["eth0", "br-int", "tap1234abcd-ef", "vlan.100", "a" * 15]:
        assert passes(InterfaceName(), name), name


def test_ifname_rejects_16_chars():
    assert not passes(InterfaceName(), "a" * 16)


def test_ifname_rejects_empty_dot_and_dotdot():
    for bad in ["", ".", ".."]:
        assert not passes(InterfaceName(), bad), bad


def test_ifname_rejects_slash_colon_and_whitespace():
    for bad in ["a/b", "eth0:1", "a b", "a\tb", "eth0\n"]:
        assert not passes(InterfaceName(), bad), bad


def test_ifname_rejects_leading_dash():
    assert not passes(InterfaceName(), "-all")


def test_ifname_rejects_non_ascii():
    assert not passes(InterfaceName(), "eth\u00e90")


# --- plain types ---------------------------------------------------------------


def test_str_admits_short_str():
    assert passes(Str(5), "hello")


def test_str_rejects_over_max_len_nul_and_bytes():
    assert not passes(Str(5), "hello!")
    assert not passes(Str(), "a\0b")
    assert not passes(Str(), b"a")


def test_bytes_admits_bytes_only():
    assert passes(Bytes(3), b"abc")
    assert not passes(Bytes(3), b"abcd")
    assert not passes(Bytes(3), "abc")
    assert not passes(Bytes(3), bytearray(b"abc"))


def test_bool_rejects_ints():
    assert passes(Bool(), False)
    assert not passes(Bool(), 0)


def test_one_of_admits_any_member():
    c = OneOf(Choice("auto"), IntRange(68, 9000))
    assert passes(c, "auto") and passes(c, 1500)
    assert not passes(c, "1500")


def test_one_of_describe_lists_members():
    assert OneOf(Bool(), MAC()).describe() == "one_of [bool, mac address]"


# --- constraint_from_spec ------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"regex": "[a-z]+"}, Regex("[a-z]+")),
        ({"regex": "[a-z]+", "max_len": 8}, Regex("[a-z]+", max_len=8)),
        ({"choice": ["a", 1]}, Choice("a", 1)),
        ({"int_range": [68, 9000]}, IntRange(68, 9000)),
        ({"int_range": {"min": 1}}, IntRange(1, None)),
        ({"path_under": "/x", "must_exist": True}, PathUnder("/x", must_exist=True)),
        ({"ip": 4}, IPAddress(4)),
        ({"ip": True}, IPAddress()),
        ({"cidr": 6}, CIDR(6)),
        ({"cidr": True, "strict": False}, CIDR(strict=False)),
        ({"mac": True}, MAC()),
        ({"ifname": True}, InterfaceName()),
        ({"str": True, "max_len": 10}, Str(10)),
        ({"bytes": True}, Bytes()),
        ({"bool": True}, Bool()),
        ({"one_of": [{"bool": True}, {"mac": True}]}, OneOf(Bool(), MAC())),
    ],
)
def test_spec_builds_constraint(spec, expected):
    assert constraint_from_spec(spec) == expected


def test_spec_unknown_key_is_policy_error():
    with pytest.raises(PolicyError, match="regexp"):
        constraint_from_spec({"regexp": "a"})


def test_spec_misspelt_modifier_is_policy_error():
    with pytest.raises(PolicyError, match="must_exits"):
        constraint_from_spec({"path_under": "/x", "must_exits": True})


def test_spec_modifier_of_other_kind_is_policy_error():
    with pytest.raises(PolicyError):
        constraint_from_spec({"regex": "a", "strict": True})


def test_spec_two_kinds_is_policy_error():
    with pytest.raises(PolicyError, match="several kinds"):
        constraint_from_spec({"regex": "a", "ifname": True})


def test_spec_empty_table_is_policy_error():
    with pytest.raises(PolicyError):
        constraint_from_spec({})


def test_spec_flag_false_is_policy_error():
    with pytest.raises(PolicyError):
        constraint_from_spec({"mac": False})


def test_spec_ip_version_must_be_4_or_6():
    with pytest.raises(PolicyError):
        constraint_from_spec({"ip": 5})


def test_spec_int_range_rejects_bool_bounds():
    with pytest.raises(PolicyError):
        constraint_from_spec({"int_range": [True, 10]})


def test_spec_int_range_rejects_wrong_arity():
    with pytest.raises(PolicyError):
        constraint_from_spec({"int_range": [1, 2, 3]})


def test_spec_non_table_is_policy_error():
    with pytest.raises(PolicyError):
        constraint_from_spec("regex")  # type: ignore[arg-type]


# --- exact types: a str subclass is not a str ------------------------------------------


class _SneakyStr(str):
    """What a caller could build in-process: it compares, hashes and prints like
    the value, but any method (startswith, encode, ...) can lie."""

    def startswith(self, *a, **kw):  # type: ignore[override]
        return True


SUBCLASS_CASES = [
    (Regex("[a-z0-9/.:]+"), "eth0"),
    (PathUnder("/"), "/etc"),
    (IPAddress(), "10.0.0.1"),
    (CIDR(strict=False), "10.0.0.0/8"),
    (MAC(), "aa:bb:cc:dd:ee:ff"),
    (InterfaceName(), "eth0"),
    (Str(), "eth0"),
    (Choice("eth0"), "eth0"),
    (DecimalInt(IntRange(0, 10)), "5"),
]


@pytest.mark.parametrize(("constraint", "text"), SUBCLASS_CASES, ids=lambda c: type(c).__name__)
def test_str_subclass_is_refused_where_the_plain_str_passes(constraint, text):
    assert passes(constraint, text)  # control: the value itself is fine
    assert not passes(constraint, _SneakyStr(text))


@pytest.mark.parametrize(
    "constraint",
    [
        Regex("[a-z0-9/.:]+"),
        PathUnder("/"),
        IPAddress(),
        CIDR(strict=False),
        MAC(),
        InterfaceName(),
        Str(),
        Choice("eth0"),
        DecimalInt(IntRange(0, 10)),
    ],
    ids=lambda c: type(c).__name__,
)
@pytest.mark.parametrize(
    "text", ["eth0", "/etc", "10.0.0.1", "10.0.0.0/8", "aa:bb:cc:dd:ee:ff", "5"]
)
def test_str_subclass_is_refused_whatever_its_text(constraint, text):
    assert not passes(constraint, _SneakyStr(text))
