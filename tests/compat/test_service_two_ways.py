"""svc (tests/compat/svc) passes the same checks on oslo.privsep and on privsepd.

Each implementation runs svc_checks.py once, in its own interpreter inside
a fresh network namespace (``unshare --net``); every check is then reported
here as its own test, ``test_svc_check[privsepd-<check>]``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_root

HERE = Path(__file__).resolve().parent
CHECKS = [
    node.name
    for node in ast.parse((HERE / "svc_checks.py").read_text()).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
]


@pytest.fixture(scope="module", params=["oslo", "privsepd"])
def svc_run(request, tmp_path_factory):
    require_root()
    report = tmp_path_factory.mktemp(request.param) / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "SVC_PRIVSEP": request.param,
        "SVC_REPORT": str(report),
        "SVC_PARENT_NETNS": os.readlink("/proc/self/ns/net"),
    }
    cmd = ["unshare", "--net", "--", sys.executable, "-m", "pytest", "-q"]
    cmd += ["-p", "no:cacheprovider", "-p", "import_swap", str(HERE / "svc_checks.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if not report.exists():
        pytest.fail(f"svc run on {request.param} wrote no report:\n{proc.stdout}\n{proc.stderr}")
    return request.param, json.loads(report.read_text()), proc


def test_every_check_ran(svc_run):
    impl, results, proc = svc_run
    assert sorted(results) == sorted(CHECKS), proc.stdout
    assert (proc.returncode == 0) == all(r["outcome"] == "passed" for r in results.values())


@pytest.mark.parametrize("check", CHECKS)
def test_svc_check(svc_run, check):
    impl, results, _ = svc_run
    result = results.get(check, {"outcome": "missing", "detail": ""})
    assert result["outcome"] == "passed", f"{impl}: {check}: {result['detail']}"
