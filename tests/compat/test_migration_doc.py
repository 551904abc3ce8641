"""docs/migration.md: every snippet is a file here, and those files work.

The "before" tree goes through steps.sh (the import swap and ``privsepd
filters convert``) and must become the "after" tree; the policy loads as
root-owned policy; the migrated agent sets an MTU in a fresh network
namespace, forked and spawned (the spawned helper checks the
shipped policy's constraints); its rootwrap client runs the converted
command.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_root, trusted_tree

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import privsepd

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "migration.md"
EXAMPLE = ROOT / "docs" / "examples" / "migration"
CONTEXT = "myagent.privileged.default"


def _snippets() -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```$", GUIDE.read_text(), re.S | re.M)


def _example_texts() -> list[str]:
    return [
        p.read_text() for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]


def test_every_snippet_of_the_guide_is_in_an_example_file():
    snippets = _snippets()
    assert len(snippets) >= 15
    texts = _example_texts()
    missing = [s for s in snippets if not any(s.rstrip("\n") in t for t in texts)]
    assert missing == []


def _steps(tmp_path: Path) -> tuple[Path, str]:
    tree = tmp_path / "src"
    shutil.copytree(EXAMPLE / "before", tree, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    }
    out = subprocess.run(
        [str(EXAMPLE / "steps.sh"), str(tree), str(EXAMPLE / "etc/rootwrap.d/myagent.filters")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return tree, out.stdout


def test_the_steps_turn_the_before_tree_into_the_after_tree(tmp_path):
    tree, _ = _steps(tmp_path)
    for path in tree.rglob("*.py"):
        after = EXAMPLE / "after" / path.relative_to(tree)
        assert filecmp.cmp(path, after, shallow=False), f"{after} is not the swapped {path}"


def test_the_policy_commands_are_the_converted_filters(tmp_path):
    _, converted = _steps(tmp_path)
    shipped = tomllib.loads((EXAMPLE / "etc/privsepd/policy.d/myagent.toml").read_text())
    keep = ("name", "context", "exec", "args")
    assert [{k: c[k] for k in keep} for c in tomllib.loads(converted)["command"]] == [
        {k: c[k] for k in keep} for c in shipped["command"]
    ]


@pytest.fixture
def policy_dir(trusted_dir):
    target = trusted_dir / "policy.d"
    target.mkdir(mode=0o755)
    shutil.copy(EXAMPLE / "etc/privsepd/policy.d/myagent.toml", target / "myagent.toml")
    (target / "myagent.toml").chmod(0o644)
    return target


def test_the_policy_loads_as_root_owned_policy(policy_dir):
    policy = privsepd.load_policy([str(policy_dir)])
    assert list(policy.contexts) == [CONTEXT]
    assert sorted(policy.functions_for(CONTEXT)) == [
        "myagent.privileged.link:get_mtu",
        "myagent.privileged.link:set_mtu",
    ]


def test_the_rootwrap_conf_and_filters_load():
    from privsepd.policy.rootwrap import parse_config, parse_filters

    conf = parse_config((EXAMPLE / "etc/rootwrap.conf").read_text(), "rootwrap.conf")
    assert conf.privsep_contexts == (CONTEXT,)
    text = (EXAMPLE / "etc/rootwrap.d/myagent.filters").read_text()
    assert [f.name for f in parse_filters(text, "myagent.filters")] == ["ip_mtu"]


def test_the_sudoers_lines_and_unit_have_the_documented_shape():
    before = (EXAMPLE / "etc/sudoers.d/myagent-before").read_text().strip()
    after = (EXAMPLE / "etc/sudoers.d/myagent-after").read_text().strip()
    assert re.fullmatch(r"myagent ALL=\(root\) NOPASSWD: /usr/bin/myagent-rootwrap \S+ \*", before)
    assert after == f"myagent ALL=(root) NOPASSWD: /usr/bin/privsepd helper --context {CONTEXT}"
    import configparser

    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str
    unit.read(EXAMPLE / "etc/systemd/myagent.service")
    assert unit["Service"]["User"] == "myagent" and unit["Service"]["NoNewPrivileges"] == "no"


AGENT = """
import json, sys
from myagent import main
from myagent.privileged import default
print(json.dumps({"mtu": main.main(sys.argv[1:]), "mode": type(default.context.mode).__name__}))
"""

BOOT = (
    "import sys; sys.path[:0] = [sys.argv.pop(1)]; "
    "from privsepd.cli.main import main; sys.exit(main())"
)


def _in_fresh_namespaces(code: str, *args: str) -> dict:
    """Run the agent in a new network namespace (its own ``lo``)."""
    out = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE / "after")},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_migrated_agent_runs_forked():
    require_root()
    assert _in_fresh_namespaces(AGENT) == {"mtu": 1400, "mode": "ForkMode"}


def test_the_migrated_agent_runs_spawned_with_the_shipped_policy(policy_dir, tmp_path):
    helper = [
        sys.executable,
        "-c",
        BOOT,
        str(trusted_tree(EXAMPLE / "after")),
        "helper",
        "--policy",
        str(policy_dir),
    ]
    conf = tmp_path / "myagent.conf"
    conf.write_text(f"[myagent_privileged]\nhelper_command = {shlex.join(helper)}\n")
    assert _in_fresh_namespaces(AGENT, "--config-file", str(conf)) == {
        "mtu": 1400,
        "mode": "SpawnMode",
    }


CLIENT = """
import json, sys
from myagent import rootwrap
from myagent.privileged import link
from privsepd.compat.rootwrap_client import Client
client = Client(sys.argv[1:])
rc = rootwrap.execute(["ip", "link", "set", "lo", "mtu", "1300"], client)
denied = rootwrap.execute(["ip", "link", "set", "lo", "mtu", "1300", "up"], client)
print(json.dumps({"rc": rc, "denied": denied, "mtu": link.get_mtu("lo")}))
"""


def test_the_rootwrap_client_runs_the_converted_command(policy_dir):
    helper = [
        sys.executable,
        "-c",
        BOOT,
        str(trusted_tree(EXAMPLE / "after")),
        "helper",
        "--policy",
        str(policy_dir),
    ]
    result = _in_fresh_namespaces(CLIENT, *helper, "--context", CONTEXT)
    assert result["rc"] == [0, "", ""]
    assert result["denied"] == [
        99,
        "",
        "Unauthorized command: ip link set lo mtu 1300 up (no filter matched)\n",
    ]
    assert result["mtu"] == 1300


def test_files_declaration_loads_from_policy(trusted_dir):
    target = trusted_dir / "files.toml"
    shutil.copy(EXAMPLE / "etc/privsepd/files-example.toml", target)
    target.chmod(0o644)
    policy = privsepd.load_policy([str(target)])
    assert "myagent.privileged.tap" in policy.contexts


def test_files_declaration_opens_a_0600_root_tun_device(trusted_dir):
    require_root()
    tun = trusted_dir / "tun"
    os.mknod(tun, 0o600 | 0o020000, os.makedev(10, 200))  # a private /dev/net/tun
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import files_example as f\n"
        "f.tap.start(f.priv_context.Method.FORK)\n"
        "print(f.open_tun())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MYAGENT_TUN": str(tun)},
    )
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
