"""Decision and Trust are immutable values (plain classes, for the shim's start-up)."""

from __future__ import annotations

import pytest

from privsepd.policy.decision import Candidate, Decision
from privsepd.policy.filters import BUILTIN, CommandFilter, Miss, Source
from privsepd.policy.trust import ROOT_ONLY, Trust

FILT = CommandFilter("/bin/true", "root", source=Source("x.filters", 3, "true"))


def _decision(**over):
    filt = FILT
    fields = dict(
        argv=("true",),
        outcome="allow",
        filter=filt,
        executable="/bin/true",
        command=("/bin/true",),
        run_as="root",
        uid=0,
        gid=0,
        env={"A": "1"},
        trace=(Candidate(filt, None),),
    )
    fields.update(over)
    return Decision(**fields)


def test_decision_defaults_match_the_documented_fields():
    d = Decision(("x",), "no-match")
    assert (d.filter, d.executable, d.command, d.run_as, d.uid, d.gid) == (None,) * 6
    assert (d.env, d.trace, d.chain) == ({}, (), None)
    assert Decision(("x",), "no-match").env is not d.env  # no shared default dict


def test_decision_fields_cannot_be_set_or_deleted():
    d = _decision()
    with pytest.raises(AttributeError):
        d.outcome = "deny"
    with pytest.raises(AttributeError):
        del d.argv
    with pytest.raises(AttributeError):
        d.extra = 1
    assert d.outcome == "allow"


def test_decisions_compare_by_value_and_repr_names_every_field():
    assert _decision() == _decision()
    assert _decision() != _decision(uid=1)
    assert _decision() != ("true",)
    text = repr(_decision())
    for name in Decision.__slots__:
        assert f"{name}=" in text


def test_decisions_are_unhashable_like_the_frozen_dataclass_with_a_dict_field():
    with pytest.raises(TypeError):
        hash(_decision())
    with pytest.raises(TypeError):
        hash(Decision(("x",), "no-match", trace=(Candidate(BUILTIN, Miss("command", "no")),)))


def test_source_miss_and_candidate_are_named_tuples():
    s = Source("f", 2, "n")
    assert (s.path, s.line, s.name) == tuple(s) == ("f", 2, "n")
    assert str(s) == "f:2 (n)" and s._replace(line=3).line == 3
    m = Miss("regex-anchor", "d")
    assert m.deviation and str(m) == "regex-anchor: d"
    c = Candidate(None, m)
    assert c.miss is m and c._fields == ("filter", "miss")
    with pytest.raises(AttributeError):
        s.path = "g"


def test_trust_is_an_immutable_value():
    assert Trust() == ROOT_ONLY and hash(Trust()) == hash(ROOT_ONLY)
    assert Trust(frozenset({0, 5})) != ROOT_ONLY
    assert repr(ROOT_ONLY) == "Trust(owners=frozenset({0}))"
    with pytest.raises(AttributeError):
        del ROOT_ONLY.owners
    with pytest.raises(AttributeError):
        ROOT_ONLY.other = 1
