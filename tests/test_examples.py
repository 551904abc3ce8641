"""The documentation's Python examples are files, and each one runs for real.

Every fenced ``python`` block of README.md and docs/*.md must be the exact
text of a file in ``privsepd/examples/`` (shipped with the package, so
``importlib.resources`` reaches them), and every example file has a test
here that runs it as a user would (``python -m privsepd.examples.NAME``),
as root, on a veth pair in a fresh network namespace, and checks what it
did to the kernel.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from conftest import in_child

ROOT = Path(__file__).resolve().parents[1]
# docs/migration.md is the exception: its blocks are parts of the worked
# service under docs/examples/migration/, which tests/compat/test_migration_doc.py
# checks block by block and runs.
DOCS = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "migration.md"),
]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
CLONE_NEWNS = 0x00020000

_names = itertools.count()


def examples() -> dict[str, str]:
    """name -> text of every example module shipped in privsepd.examples."""
    package = resources.files("privsepd.examples")
    return {
        entry.name[:-3]: entry.read_text()
        for entry in package.iterdir()
        if entry.name.endswith(".py") and entry.name != "__init__.py"
    }


def python_blocks() -> list[tuple[str, str]]:
    """(where, text) of every fenced python block of the documentation."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def test_every_python_block_of_the_docs_is_an_example_file():
    shipped = set(examples().values())
    stray = [where for where, text in python_blocks() if text not in shipped]
    assert not stray, (
        f"python blocks that are not the text of a file in privsepd/examples/: {stray}; "
        "put the example there (and a test in tests/test_examples.py that runs it)"
    )


def test_the_readme_shows_the_set_mtu_example():
    assert examples()["set_mtu"] in dict(python_blocks()).values()


def test_every_example_has_a_test_that_runs_it():
    assert set(examples()) == set(RUNS)


# ---------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------


@pytest.fixture
def netns(root):
    name = f"privsepd-ex-{os.getpid()}-{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def link_mtu(ns: str, dev: str = "eth0") -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", dev], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r" mtu (\d+)", out).group(1))


def run_example(ns: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", f"privsepd.examples.{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_set_mtu_example_sets_the_mtu_of_eth0(netns):
    assert link_mtu(netns) == 1500
    proc = run_example(netns, "set_mtu")
    assert proc.returncode == 0, proc.stderr
    assert link_mtu(netns) == 1400
    assert link_mtu(netns, "eth1") == 1500


def test_ip_link_example_sets_the_mtu_through_ip(netns):
    proc = run_example(netns, "ip_link")
    assert proc.returncode == 0, proc.stderr
    assert link_mtu(netns) == 1280


def test_ip_run_by_an_entrypoint_without_ambient_capabilities_is_not_permitted(netns):
    """Why ip_link.py raises ambient capabilities: exec drops the helper's."""
    script = (
        "import json, subprocess, privsepd\n"
        "ctx = privsepd.Context('t-noamb', capabilities=['CAP_NET_ADMIN'])\n"
        "@ctx.entrypoint\n"
        "def run() -> list:\n"
        "    p = subprocess.run(['/usr/sbin/ip', 'link', 'set', 'dev', 'eth0', 'mtu', '1280'],\n"
        "                       env={}, capture_output=True, text=True)\n"
        "    return [p.returncode, p.stderr]\n"
        "print(json.dumps(run()))\n"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rc, stderr = json.loads(proc.stdout)
    assert rc != 0
    assert "Operation not permitted" in stderr
    assert link_mtu(netns) == 1500


def test_load_policy_example_loads_the_root_owned_policy(root, tmp_path):
    """Runs against a private /etc (overlay, own mount namespace): the host's is untouched."""
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "privsepd" / "policy.d").mkdir(parents=True)
    (upper / "privsepd" / "policy.toml").write_text(
        '[context.neutron]\ncapabilities = ["CAP_NET_ADMIN"]\n'
    )
    (upper / "privsepd" / "policy.d" / "10-extra.toml").write_text("[context.extra]\n")
    work.mkdir()
    for path in (upper / "privsepd", upper / "privsepd" / "policy.d"):
        path.chmod(0o755)
    example = resources.files("privsepd.examples") / "load_policy.py"

    def child() -> list[str]:
        import runpy

        from privsepd.helper import kernel

        kernel.syscall(kernel.SYSCALLS["unshare"][0], CLONE_NEWNS)
        subprocess.run(["mount", "--make-rslave", "/"], check=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir=/etc,upperdir={upper},workdir={work}",
                "/etc",
            ],
            check=True,
        )
        found = runpy.run_path(str(example))["policy"]
        return sorted(found.contexts)

    assert in_child(child) == ["extra", "neutron"]


RUNS = {
    "set_mtu": test_set_mtu_example_sets_the_mtu_of_eth0,
    "ip_link": test_ip_link_example_sets_the_mtu_through_ip,
    "load_policy": test_load_policy_example_loads_the_root_owned_policy,
}
