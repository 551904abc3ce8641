"""``privsepd demo`` runs the whole path on the shipped quickstart policy."""

from __future__ import annotations

import shutil
import subprocess


def run_demo() -> subprocess.CompletedProcess:
    exe = shutil.which("privsepd")
    assert exe, "console script privsepd is not installed (pip install -e .[test])"
    return subprocess.run([exe, "demo"], capture_output=True, text=True, timeout=60)


def test_demo_makes_an_allowed_call_and_two_denied_ones(root):
    proc = run_demo()
    assert proc.returncode == 0, proc.stderr
    assert "allowed: count_lines('/etc/shadow') ->" in proc.stdout
    assert "denied:  count_lines('/etc/../root/.profile') -> ConstraintError" in proc.stdout
    assert "outside '/etc'" in proc.stdout
    assert "UnknownFunctionError" in proc.stdout


def test_demo_prints_the_helpers_real_capability_sets(root):
    lines = run_demo().stdout.splitlines()
    status = {
        line.split(":")[0].strip(): line.split(":", 1)[1].split()[0]
        for line in lines
        if line.startswith("  ")
    }
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000004"
    assert status["CapAmb"] == status["CapInh"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Uid"] == "65534"
