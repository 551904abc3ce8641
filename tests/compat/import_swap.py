"""pytest plugin for the inner svc run (``-p import_swap``).

``SVC_PRIVSEP=privsepd`` makes ``oslo_privsep`` and each of its modules
*be* privsepd's compat package before svc is imported: the same svc
source then runs on privsepd, as it would after the one-line import change
of docs/migration.md. ``SVC_PRIVSEP=oslo`` leaves the real oslo.privsep.
Each check's outcome is written as JSON to ``SVC_REPORT``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

IMPL = os.environ.get("SVC_PRIVSEP", "oslo")
MODULES = ("priv_context", "capabilities", "comm", "daemon", "test", "test.fixture")

if IMPL == "privsepd":
    assert "oslo_privsep" not in sys.modules, "real oslo_privsep imported before the swap"
    sys.modules["oslo_privsep"] = importlib.import_module("privsepd.compat.oslo_privsep")
    for _name in MODULES:
        sys.modules[f"oslo_privsep.{_name}"] = importlib.import_module(
            f"privsepd.compat.oslo_privsep.{_name}"
        )
elif IMPL != "oslo":
    raise SystemExit(f"SVC_PRIVSEP must be oslo or privsepd, not {IMPL!r}")

_results: dict[str, dict] = {}


def pytest_runtest_logreport(report) -> None:
    name = report.nodeid.rpartition("::")[2]
    entry = _results.setdefault(name, {"outcome": "passed", "detail": ""})
    if report.failed:
        entry["outcome"] = "failed"
        entry["detail"] += f"[{report.when}] {report.longreprtext}\n"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["detail"] += f"[{report.when}] {report.longreprtext}\n"


def pytest_sessionfinish(session) -> None:
    path = os.environ.get("SVC_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f)
