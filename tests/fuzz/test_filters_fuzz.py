"""Fuzz target: the rootwrap ``.filters`` loader (privsepd/policy/rootwrap.py ``parse_filters``).

Invariant: for any text, ``parse_filters(text, path)`` -- and the linter's
``parse_filters(..., lint=True)`` -- returns a list of filters (warnings
collected on the side) or raises ``PolicyError`` naming the file; never
another exception, never a hang. Every filter it returns then answers
``check``, ``index_keys``, ``resolve``, ``user``, ``command``,
``environment`` and ``chained`` for any argv without raising: a filter
that loads can always be asked.

Seeds: ``corpus/filters/*.filters`` (INI structure and per-class edge
cases), the shipped ``filters/rootwrap.d`` and the real OpenStack filter
sets in ``tests/data/openstack``.
"""

from __future__ import annotations

import pytest
from fuzzing import REPO, bounded, budget, seeds
from hypothesis import example, given
from hypothesis import strategies as st

from privsepd.errors import PolicyError
from privsepd.policy.filters import FILTER_CLASSES, Filter, Miss
from privsepd.policy.rootwrap import PolicyWarning, parse_filters

PATH = "/etc/privsepd/fuzz.filters"
ARGVS = [
    [],
    ["ip", "-b", "x"],
    ["ip", "netns", "exec", "ns", "sh"],
    ["env", "A=1", "LD_PRELOAD=/x", "true"],
    ["kill", "-9", "1"],
    ["cat", "/etc/hostname\n"],
    ["nice", "-n", "5", "sh", "-c", "id"],
    ["chown", "nova", "/var/lib/nova/../../etc/shadow"],
    ["echo", "١٢٣"],
]


def load(text: str, lint: bool = False) -> list[Filter] | None:
    """The filters, or None when refused with PolicyError; nothing else may escape."""
    warnings: list[PolicyWarning] = []
    with bounded():
        try:
            filters = parse_filters(text, PATH, warnings, lint=lint)
        except PolicyError as exc:
            assert PATH in str(exc), f"PolicyError does not name the file: {exc}"
            return None
        except Exception as exc:
            raise AssertionError(f"parse_filters raised {exc!r} for {text!r:.300}") from exc
    assert all(isinstance(w, PolicyWarning) for w in warnings)
    return filters


def ask(filt: Filter, argv: list[str]) -> None:
    """Every question a FilterIndex or the executor asks a filter."""
    with bounded():
        try:
            keys = filt.index_keys()
            assert keys is None or isinstance(keys, tuple)
            for strict in (True, False):
                miss = filt.check(argv, strict=strict)
                assert miss is None or isinstance(miss, Miss)
            filt.resolve(("/bin", "/usr/bin"))
            filt.user()
            if argv and filt.check(argv) is None:
                filt.command(argv, filt.exec_path)
                filt.environment(argv)
                filt.chained(argv)
        except Exception as exc:
            raise AssertionError(f"{filt!r} raised {exc!r} for argv {argv!r}") from exc


def check_text(text: str, argvs: list[list[str]] = ARGVS) -> None:
    filters = load(text)
    linted = load(text, lint=True)
    assert (filters is None) == (linted is None), "lint changed whether the file loads"
    for filt in filters or ():
        for argv in argvs:
            ask(filt, argv)


# -- seeds ----------------------------------------------------------------------------------

SEED_FILES = [
    *seeds("filters", "*.filters"),
    *sorted((REPO / "filters" / "rootwrap.d").glob("*.filters")),
    *sorted((REPO / "tests" / "data" / "openstack").glob("*.filters")),
]


#: Seeds that break the invariant today. NEW: not among issue 9's items.
KNOWN_CRASHERS: dict[str, str] = {}


def _seed(path):
    reason = KNOWN_CRASHERS.get(path.stem)
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
    return pytest.param(path, marks=marks, id=f"{path.parent.name}/{path.name}")


@pytest.mark.parametrize("path", [_seed(p) for p in SEED_FILES])
def test_filters_seed_loads_or_is_refused_and_every_filter_answers(path):
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    check_text(text)


def test_real_filter_sets_load():
    """The OpenStack sets are real policy: they must load, not merely not crash."""
    for path in sorted((REPO / "tests" / "data" / "openstack").glob("*.filters")):
        assert load(path.read_text()), path


# -- generated ---------------------------------------------------------------------------------

WORDS = [
    "/bin/cat", "cat", "ip", "env", "/usr/bin/env", "kill", "/bin/sleep", "nice", "sh",
    "root", "nobody", "no-such-user", "", "pass", "/var/lib/nova", "relative", "-9", "-SIGHUP",
    ".*", "[0-9]+", "\\d+", "(", ")", "a{1", "2}", "a|b", "(?i)x", "$", "^", "\\", "A=",
    "LD_PRELOAD=", "=", "netns", "exec", "-b", "é", "\t", " x ",
    "a{4294967296}", "(?u)[a-z]+", "(?L)a", "(" * 600 + ")" * 600, "x\\",
]  # fmt: skip
word = st.sampled_from(WORDS) | st.text(
    st.characters(blacklist_characters=",\n\r", blacklist_categories=("Cs",)), max_size=8
)
klass = st.sampled_from(sorted(FILTER_CLASSES)) | st.text(max_size=6)
rule = st.builds(
    lambda name, cls, cols, sep: f"{name}{sep} {', '.join([cls, *cols])}",
    st.text(
        st.characters(blacklist_characters=":=[\n\r", blacklist_categories=("Cs",)), max_size=8
    ),
    klass,
    st.lists(word, max_size=6),
    st.sampled_from([":", "="]),
)
line = rule | st.sampled_from(["[Filters]", "[DEFAULT]", "[x]", "# c", "; c", "", "  cont"])
document = st.builds(
    lambda head, lines, crlf: ("\r\n" if crlf else "\n").join([head, *lines]),
    st.sampled_from(["[Filters]", "[DEFAULT]", "", "[Filters"]),
    st.lists(line, max_size=10),
    st.booleans(),
)
argv = st.lists(st.sampled_from(WORDS) | st.text(max_size=6), max_size=6)


@budget(150)
@given(text=st.text(max_size=300))
@example(text="[Filters]\nx: RegExpFilter, /bin/x, root, x, (?P<a>\n")
def test_fuzz_any_text_loads_or_is_refused(text):
    check_text(text)


@budget(250)
@given(text=document, argvs=st.lists(argv, max_size=3))
def test_fuzz_filter_files_load_or_are_refused_and_every_filter_answers(text, argvs):
    check_text(text, ARGVS[:3] + argvs)
