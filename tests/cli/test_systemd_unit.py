"""The shipped systemd unit and ``privsepd systemd-unit``: hardened, fitted to policy.

Exposure scores come from the real ``systemd-analyze security --offline=true``
(required in CI); the bounding set and no_new_privs are tried for real by
running the daemon under ``setpriv`` with exactly the unit's settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require_feature, trusted_tree

from privsepd.channel.protocol import OP_CALL
from privsepd.cli.systemd_unit import DAEMON_CAPABILITIES, render_unit
from privsepd.context import Context
from privsepd.policy.loader import load_policy

REPO = Path(__file__).resolve().parents[2]
SHIPPED_UNIT = REPO / "filters" / "systemd" / "privsepd.service"


def shipped_policy() -> list[str]:
    """The shipped demo policy, from a root-owned copy when the checkout is untrusted."""
    filters = trusted_tree(REPO / "filters")
    return [str(filters / "demo.toml"), str(filters / "privsepd.d")]


INSTALLED = ["/etc/privsepd/policy.toml", "/etc/privsepd/policy.d"]


def exposure(unit: Path) -> float:
    tool = shutil.which("systemd-analyze")
    require_feature(tool is not None, "systemd-analyze (package systemd)")
    out = subprocess.run(
        [tool, "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match.group(1))


def directives(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def unit_for(tmp: Path, toml: str) -> str:
    policy = tmp / "policy.toml"
    policy.write_text(textwrap.dedent(toml))
    os.chmod(policy, 0o644)
    return render_unit(load_policy([str(policy)]), [str(policy)], home_install=False)


# -- the shipped unit --------------------------------------------------------------


def test_the_shipped_unit_is_what_the_generator_writes_for_the_shipped_policy():
    expected = render_unit(load_policy(shipped_policy()), INSTALLED, home_install=False)
    assert SHIPPED_UNIT.read_text() == expected


def test_the_shipped_unit_scores_at_most_5_in_systemd_analyze_security():
    assert exposure(SHIPPED_UNIT) <= 5.0  # the unit it replaces scored 9.2 UNSAFE


def test_the_shipped_unit_sets_no_new_privs_and_the_sandboxing_its_policy_allows():
    d = directives(SHIPPED_UNIT.read_text())
    expected = {
        "Type": "notify",
        "NoNewPrivileges": "yes",
        "ProtectKernelModules": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "PrivateTmp": "yes",
        "UMask": "0077",
    }
    assert {k: d.get(k) for k in expected} == expected
    assert d["RestrictAddressFamilies"].startswith("AF_UNIX")
    assert d["SystemCallFilter"].startswith("~")


@pytest.mark.parametrize("policy", ["quickstart.toml", "demo.toml"])
def test_the_unit_for_a_shipped_demo_policy_scores_at_most_5(tmp_path, policy):
    path = str(trusted_tree(REPO / "filters") / policy)
    unit = tmp_path / "privsepd.service"
    unit.write_text(render_unit(load_policy([path]), [path], home_install=False))
    assert exposure(unit) <= 5.0


def test_the_generated_unit_passes_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    require_feature(tool is not None, "systemd-analyze (package systemd)")
    privsepd = shutil.which("privsepd") or sys.executable
    unit = tmp_path / "privsepd.service"
    policy = shipped_policy()
    unit.write_text(render_unit(load_policy(policy), policy, privsepd))
    out = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_privsepd_systemd_unit_prints_the_unit_for_the_policy_it_is_given():
    policy = shipped_policy()
    out = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "systemd-unit"]
        + ["--policy", policy[0], "--policy", policy[1]]
        + ["--installed-as", INSTALLED[0], "--installed-as", INSTALLED[1]],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "ExecStart=/usr/local/bin/privsepd serve --policy /etc/privsepd/policy.toml" in out.stdout
    )
    assert "Type=notify" in out.stdout and "ExecReload=/bin/kill -HUP $MAINPID" in out.stdout


def test_privsepd_systemd_unit_refuses_an_untrusted_policy(trusted_dir):
    policy = trusted_dir / "policy.toml"
    policy.write_text('[context.x]\ncapabilities = ["CAP_NET_ADMIN"]\n')
    os.chmod(policy, 0o666)
    out = subprocess.run(
        [sys.executable, "-m", "privsepd.cli.main", "systemd-unit", "--policy", str(policy)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "world-writable" in out.stderr


# -- what the generator derives from policy ---------------------------------------


def test_the_bounding_set_is_the_contexts_and_commands_capabilities_plus_the_daemons(trusted_dir):
    unit = unit_for(
        trusted_dir,
        """
        [context.a]
        capabilities = ["CAP_NET_ADMIN"]
        [context.b]
        capabilities = ["CAP_DAC_READ_SEARCH"]
        [[command]]
        context = "b"
        name = "ping"
        exec = "/usr/bin/ping"
        args = ["-c1", "127.0.0.1"]
        capabilities = ["CAP_NET_RAW"]
        """,
    )
    caps = set(directives(unit)["CapabilityBoundingSet"].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_NET_RAW", *DAEMON_CAPABILITIES}
    assert directives(unit)["AmbientCapabilities"] == ""


def test_contexts_that_declare_their_writes_get_protect_system_strict_with_those_paths(
    trusted_dir,
):
    unit = unit_for(
        trusted_dir,
        """
        [context.a]
        audit = "/var/log/privsepd-a/audit.jsonl"
        [context.a.sandbox]
        landlock_read = ["/etc"]
        landlock_write = ["/run/a", "/var/lib/a"]
        """,
    )
    d = directives(unit)
    assert d["ProtectSystem"] == "strict"
    assert d["ReadWritePaths"].split() == ["-/run/a", "-/var/lib/a", "-/var/log/privsepd-a"]
    for key in ("ProtectKernelTunables", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert d[key] == "yes"


def test_a_context_without_a_declared_sandbox_keeps_protect_system_full_and_says_why(
    trusted_dir,
):
    unit = unit_for(
        trusted_dir,
        """
        [context.a]
        [context.a.sandbox]
        landlock_write = ["/run/a"]
        [context.loose]
        capabilities = ["CAP_CHOWN"]
        """,
    )
    d = directives(unit)
    assert d["ProtectSystem"] == "full" and "ReadWritePaths" not in d
    assert "ProtectKernelTunables" not in d
    assert "# ProtectSystem=strict not set: context(s) 'loose' declare no Landlock" in unit


def test_a_context_writing_proc_sys_turns_off_protect_kernel_tunables(trusted_dir):
    unit = unit_for(
        trusted_dir,
        """
        [context.a]
        [context.a.sandbox]
        landlock_write = ["/proc/sys/net"]
        """,
    )
    assert "ProtectKernelTunables" not in directives(unit)
    assert "a context declares writes to /proc/sys/net" in unit


@pytest.mark.parametrize(
    "cap, lost",
    [
        ("CAP_SYS_MODULE", ["ProtectKernelModules", "@module"]),
        ("CAP_SYS_TIME", ["ProtectClock", "@clock"]),
        ("CAP_SYS_ADMIN", ["ProtectHostname", "PrivateMounts", "@mount", "PrivateDevices"]),
        ("CAP_SYSLOG", ["ProtectKernelLogs"]),
        ("CAP_SYS_PTRACE", ["@debug", "ProtectProc"]),
    ],
)
def test_a_capability_a_context_declares_turns_off_what_would_break_it(trusted_dir, cap, lost):
    def set_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("#")]

    base = set_lines(unit_for(trusted_dir, "[context.a]\n"))
    unit = unit_for(trusted_dir, f'[context.a]\ncapabilities = ["{cap}"]\n')
    for word in lost:
        assert any(word in line for line in base), word  # set when nobody needs it
        assert not any(word in line for line in set_lines(unit)), (word, unit)
        assert f"hold {cap}" in unit or "hold a capability" in unit  # and says why not


def test_contexts_with_no_network_need_get_a_private_network_and_unix_sockets_only(trusted_dir):
    d = directives(unit_for(trusted_dir, '[context.a]\ncapabilities = ["CAP_CHOWN"]\n'))
    assert d["PrivateNetwork"] == "yes" and d["IPAddressDeny"] == "any"
    assert d["RestrictAddressFamilies"] == "AF_UNIX"
    d = directives(unit_for(trusted_dir, '[context.a]\ncapabilities = ["CAP_NET_ADMIN"]\n'))
    assert "PrivateNetwork" not in d
    assert d["RestrictAddressFamilies"] == "AF_UNIX AF_NETLINK AF_INET AF_INET6"


# -- the bounding set and no_new_privs, for real ----------------------------------------


def test_the_daemon_serves_a_context_inside_the_units_bounding_set_and_no_new_privs(
    trusted_dir,
):
    require_feature(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    policy = trusted_dir / "policy.toml"
    policy.write_text(
        textwrap.dedent(
            """
            [context.t-unit]
            capabilities = ["CAP_DAC_READ_SEARCH"]
            user = "nobody"

            [[function]]
            context = "t-unit"
            name = "privsepd.cli.demo:count_lines"
            args.path = { path_under = "/etc", must_exist = true }
            """
        )
    )
    os.chmod(policy, 0o644)
    unit = render_unit(load_policy([str(policy)]), [str(policy)])
    bounding = directives(unit)["CapabilityBoundingSet"].split()
    keep = ",".join("+" + cap[4:].lower() for cap in bounding)
    sockets = trusted_dir / "sock"
    proc = subprocess.Popen(
        ["setpriv", f"--bounding-set=-all,{keep}", "--no-new-privs", sys.executable]
        + ["-m", "privsepd.cli.main", "serve", "--policy", str(policy)]
        + ["--socket-dir", str(sockets)],
        stderr=subprocess.PIPE,
    )
    try:
        path = str(sockets / "t-unit.sock")
        deadline = time.monotonic() + 10
        while not os.path.exists(sockets / ".control"):  # made after the context sockets
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        ctx = Context("t-unit", socket_path=path)
        with open("/etc/shadow", "rb") as f:
            expected = sum(1 for _ in f)
        assert ctx._call(OP_CALL, "privsepd.cli.demo:count_lines", ["/etc/shadow"], {}) == expected
        # SIGTERM with the helper still connected: draining a helper that runs
        # as another uid takes CAP_KILL.
        proc.terminate()
        assert proc.wait(30) == 0, proc.stderr.read().decode()  # generous: PyPy under CI load
        ctx.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
