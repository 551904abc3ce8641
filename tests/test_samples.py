"""The policy samples privsepd ships are safe to copy into place.

Every shipped sample (``filters/``, the package's own ``quickstart.toml``)
passes ``privsepd filters check`` with no error-severity finding; rules that
are holes live apart in ``filters/examples-of-bad-rules/``, labelled, and the
checker must report each of them. The README's ``filters check`` examples
are run here as written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from privsepd.authoring.check import check_paths

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ROOT / "filters"
BAD = FILTERS / "examples-of-bad-rules"
# Not policy: unit files, sudoers, sysusers.d/tmpfiles.d lines.
NOT_POLICY = {FILTERS / "systemd", FILTERS / "sudoers.d-privsepd"}

SHIPPED = [
    FILTERS / "quickstart.toml",
    FILTERS / "demo.toml",
    FILTERS / "rootwrap.conf",
    FILTERS / "rootwrap.d",
    FILTERS / "privsepd.d",
    # docs/migration.md's policy, which readers copy too
    ROOT / "docs" / "examples" / "migration" / "etc" / "privsepd" / "policy.d",
    ROOT / "docs" / "examples" / "migration" / "etc" / "privsepd" / "files-example.toml",
    ROOT / "docs" / "examples" / "migration" / "etc" / "rootwrap.d",
]


def _errors(*paths: Path) -> list[str]:
    report = check_paths([str(p) for p in paths], ownership=False)
    return [
        f"{f.path}:{f.line}: [{f.code}] {f.rule}: {f.problem}"
        for f in report.findings
        if f.severity == "error"
    ]


@pytest.mark.parametrize("sample", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_sample_passes_check_with_no_error(sample):
    assert _errors(sample) == []


def test_shipped_samples_together_pass_check_with_no_error():
    # Cross-rule checks (chaining, shadowing) see every rule at once.
    assert _errors(*SHIPPED) == []


def test_package_data_policy_passes_check_with_no_error(tmp_path):
    policy = tmp_path / "quickstart.toml"
    policy.write_bytes(files("privsepd.data").joinpath("quickstart.toml").read_bytes())
    assert _errors(policy) == []


def test_package_data_policy_is_the_one_in_filters():
    shipped = files("privsepd.data").joinpath("quickstart.toml").read_bytes()
    assert shipped == (FILTERS / "quickstart.toml").read_bytes()


def test_every_policy_file_under_filters_is_checked_or_labelled_bad():
    covered = []
    for path in sorted(FILTERS.rglob("*")):
        if not path.is_file() or any(path == p or p in path.parents for p in NOT_POLICY):
            continue
        if BAD in path.parents:
            continue
        covered.append(any(path == s or s in path.parents for s in SHIPPED))
        assert covered[-1], f"{path} is neither a checked sample nor a labelled bad example"
    assert len(covered) >= 6


def test_rootwrap_sample_has_no_free_argument_tee_rule():
    # The rule that let a user truncate /etc/passwd as root is gone for good.
    text = (FILTERS / "rootwrap.d" / "compute.filters").read_text()
    assert not re.search(r"^\s*tee\s*:\s*CommandFilter", text, re.M)


# -- the labelled holes ------------------------------------------------------------

BAD_FINDINGS = [
    ("holes.filters", "tee", "unrestricted-program", "error"),
    ("holes.filters", "qemu-img", "unrestricted-program", "error"),
    ("holes.filters", "blockdev", "path-traversal", "warning"),
    ("holes.filters", "blockdev", "world-writable-path", "warning"),
    ("holes.filters", "chown", "path-prefix", "warning"),
    ("holes.filters", "dnsmasq", "env-unchecked", "error"),
    ("holes.filters", "dnsmasq", "unrestricted-program", "error"),
    ("holes.filters", "haproxy", "unrestricted-program", "error"),
    ("holes.filters", "haproxy_plain", "unrestricted-program", "error"),
    ("holes.filters", "chain_noop", "never-matches", "warning"),
    ("holes.filters", "read_shadow", "sensitive-read", "warning"),
    ("holes.toml", "bad", "capability", "warning"),
    ("holes.toml", "cp-anything", "unrestricted-program", "error"),
    ("holes.toml", "truncate-anything", "wildcard-path", "error"),
]


@pytest.fixture(scope="module")
def bad_report():
    return check_paths([str(BAD / "rules")], ownership=False)


@pytest.mark.parametrize(("file", "rule", "code", "severity"), BAD_FINDINGS)
def test_check_reports_each_labelled_bad_rule(bad_report, file, rule, code, severity):
    found = {
        (Path(f.path).name, f.rule, f.code, f.severity)
        for f in bad_report.findings
        if f.code != "missing-executable"
    }
    assert (file, rule, code, severity) in found


def test_every_labelled_bad_rule_is_reported(bad_report):
    from privsepd.policy.native import parse_policy
    from privsepd.policy.rootwrap import parse_filters

    names = {f.name for f in parse_filters((BAD / "rules" / "holes.filters").read_text(), "x")}
    frag = parse_policy((BAD / "rules" / "holes.toml").read_text(), "x")
    names |= set(frag.commands) | set(frag.contexts)
    reported = {f.rule for f in bad_report.findings if f.code != "missing-executable"}
    assert names <= reported, sorted(names - reported)


def test_bad_rules_are_labelled_do_not_install():
    assert "do not install" in (BAD / "README.md").read_text().lower()
    for path in (BAD / "rules").iterdir():
        assert path.read_text().startswith("# DO NOT INSTALL."), path


# -- the README's examples ---------------------------------------------------------


def _readme_check_commands() -> list[tuple[str, str]]:
    """(command, comment) for each `privsepd filters ...` line of README's block."""
    text = (ROOT / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "privsepd filters check" in b
    )
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        command, _, comment = line.partition("#")
        if command.strip():
            out.append((command.strip(), comment.strip()))
    return out


def _run(command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_readme_filters_examples_are_the_ones_tested():
    commands = [c for c, _ in _readme_check_commands()]
    assert len(commands) == 3, commands
    assert commands[0].startswith("privsepd filters check")
    assert commands[1].startswith("privsepd filters check")
    assert commands[2].startswith("privsepd filters explain")


@pytest.mark.parametrize("index", [0, 1])
def test_readme_check_example_reports_the_errors_it_claims(index):
    command, comment = _readme_check_commands()[index]
    claimed = int(re.search(r"(\d+) errors?", comment).group(1))
    proc = _run(command)
    summary = proc.stdout.strip().splitlines()[-1]
    assert f" {claimed} error(s)," in summary, (command, summary)
    assert proc.returncode == (1 if claimed else 0), proc.stderr


def test_readme_explain_example_denies_with_each_candidates_reason():
    command, comment = _readme_check_commands()[2]
    assert comment.startswith("deny")
    proc = _run(command)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("deny:")
    assert "rules considered before the decision" in proc.stdout
