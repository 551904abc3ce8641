"""privsep-helper: oslo.rootwrap's implicit rule is a hole; privsepd allows only listed contexts.

oslo-rootwrap runs ``privsep-helper`` as root with any arguments, so any
importable privsep context starts with whatever capabilities the config
files its caller names grant. privsepd-rootwrap denies it by default and
allows only rootwrap.conf's ``privsep_contexts``, with exactly the argv
oslo.privsep's client builds and root-owned config files. The real
``oslo-rootwrap`` and oslo.privsep's ``PrivContext.helper_command`` are the
oracles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import needs_posix_spawn
from oslo_config import cfg
from oslo_privsep import priv_context as oslo_priv_context

from privsepd.policy.rootwrap import ConfigValueError, load_policy, parse_config

CONTEXT = "test_privsep_helper_rule.oslo_ctx"
# oslo.privsep's own client builds the command line under test.
oslo_ctx = oslo_priv_context.PrivContext(
    "test_privsep_helper_rule", cfg_section="t_helper_rule", pypath=CONTEXT, capabilities=[]
)


def _script(name: str) -> str:
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e .[test])"
    return found


class World:
    """A root-owned rootwrap.conf whose exec_dirs hold a privsep-helper that reports its argv."""

    def __init__(self, base, contexts: str | None) -> None:
        self.base = base
        bindir = base / "bin"
        bindir.mkdir(mode=0o755)
        filters = base / "filters.d"
        filters.mkdir(mode=0o755)
        (filters / "none.filters").write_text("[Filters]\n")
        self.out = base / "out"
        self.out.mkdir(mode=0o755)
        helper = bindir / "privsep-helper"
        helper.write_text(
            f"#!/bin/sh\n: > {self.out}/argv\n"
            f'for a; do printf "%s\\n" "$a"; done >> {self.out}/argv\n'
        )
        helper.chmod(0o755)
        self.etc = base / "etc"
        self.etc.mkdir(mode=0o755)
        self.trusted_conf = self.etc / "svc.conf"
        self.trusted_conf.write_text("[DEFAULT]\n")
        self.conf = base / "rootwrap.conf"
        extra = "" if contexts is None else f"privsep_contexts = {contexts}\n"
        self.conf.write_text(f"[DEFAULT]\nfilters_path={filters}\nexec_dirs={bindir}\n{extra}")
        for p in (filters / "none.filters", self.conf, self.trusted_conf):
            p.chmod(0o644)

    def run(self, tool: str, *argv: str) -> subprocess.CompletedProcess:
        ran = self.out / "argv"
        if ran.exists():
            ran.unlink()
        options = ["--no-cache"] if tool == "privsepd-rootwrap" else []
        return subprocess.run(
            [_script(tool), *options, str(self.conf), "privsep-helper", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ran(self) -> list[str] | None:
        path = self.out / "argv"
        return path.read_text().splitlines() if path.exists() else None

    def decide(self, *argv: str):
        return load_policy(str(self.conf)).match(["privsep-helper", *argv])


@pytest.fixture
def unlisted(trusted_dir):
    return World(trusted_dir, None)


@pytest.fixture
def listed(trusted_dir):
    return World(trusted_dir, f"neutron.privileged.default, {CONTEXT}")


SOCK = "/tmp/tmpabc123/privsep.sock"


def test_oslo_rootwrap_runs_privsep_helper_for_any_context_as_root(unlisted):
    argv = [
        "--config-file",
        "/tmp/evil.conf",
        "--privsep_context",
        "os.path",
        "--privsep_sock_path",
        "/x",
    ]
    result = unlisted.run("oslo-rootwrap", *argv)
    assert result.returncode == 0, result.stderr
    assert unlisted.ran() == argv  # the hole: oslo ran it, as root


def test_privsepd_rootwrap_refuses_privsep_helper_without_privsep_contexts(unlisted):
    argv = ["--privsep_context", "neutron.privileged.default", "--privsep_sock_path", SOCK]
    result = unlisted.run("privsepd-rootwrap", *argv)
    assert result.returncode == 99
    assert "Unauthorized command: privsep-helper" in result.stderr
    assert unlisted.ran() is None
    (miss,) = [c.miss for c in unlisted.decide(*argv).deviations]
    assert (
        miss.code == "privsep-helper"
        and "not in rootwrap.conf privsep_contexts (none)" in miss.detail
    )


@needs_posix_spawn
def test_listed_context_with_oslo_privseps_exact_argv_runs(listed):
    cfg.CONF(["--config-file", str(listed.trusted_conf)], project="t_helper_rule")
    try:
        oslo_priv_context.init(root_helper=["sudo", "privsepd-rootwrap", str(listed.conf)])
        sockpath = os.path.join(tempfile.mkdtemp(), "privsep.sock")
        cmd = oslo_ctx.helper_command(sockpath)
    finally:
        # clear(): forget the parsed files. Not reset(), which also unsets every
        # module's set_default (privsep contexts set their capabilities so).
        cfg.CONF.clear()
        oslo_priv_context.init(root_helper=["sudo"])
    assert cmd[:4] == ["sudo", "privsepd-rootwrap", str(listed.conf), "privsep-helper"]
    result = listed.run("privsepd-rootwrap", *cmd[4:])
    assert result.returncode == 0, result.stderr
    assert listed.ran() == cmd[4:]
    assert cmd[4:] == [
        "--config-file",
        str(listed.trusted_conf),
        "--privsep_context",
        CONTEXT,
        "--privsep_sock_path",
        sockpath,
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--privsep_context", "os.path", "--privsep_sock_path", SOCK],
        ["--privsep_sock_path", SOCK, "--privsep_context", CONTEXT],
        ["--privsep_context", CONTEXT, "--privsep_sock_path", SOCK, "--config-file", "/etc/x"],
        ["--privsep_context", CONTEXT, "--privsep_sock_path", SOCK, "--debug"],
        ["--privsep_context=" + CONTEXT, "--privsep_sock_path", SOCK],
        ["--privsep_context", CONTEXT],
        ["--privsep_context", CONTEXT, "--privsep_sock_path", "/tmp/x/other.sock"],
        ["--privsep_context", CONTEXT, "--privsep_sock_path", "tmp/x/privsep.sock"],
        ["--privsep_context", CONTEXT, "--privsep_sock_path", "/tmp/x/../privsep.sock"],
        [
            "--config-file",
            "/etc/nonexistent.conf",
            "--privsep_context",
            CONTEXT,
            "--privsep_sock_path",
            SOCK,
        ],
        [
            "--config-file",
            "etc/svc.conf",
            "--privsep_context",
            CONTEXT,
            "--privsep_sock_path",
            SOCK,
        ],
        [],
    ],
    ids=lambda a: " ".join(a) or "no-arguments",
)
def test_other_argument_shapes_are_refused_though_oslo_runs_them(listed, argv):
    oslo = listed.run("oslo-rootwrap", *argv)
    assert oslo.returncode == 0 and listed.ran() == argv
    ours = listed.run("privsepd-rootwrap", *argv)
    assert ours.returncode == 99 and listed.ran() is None
    assert [c.miss.code for c in listed.decide(*argv).deviations] == ["privsep-helper"]


def test_a_config_file_the_caller_can_write_is_refused(listed, tmp_path):
    evil = tmp_path / "evil.conf"  # under /tmp: writable by others up the chain
    evil.write_text("[t_helper_rule]\ncapabilities = CAP_SYS_ADMIN\n")
    argv = ["--config-file", str(evil), "--privsep_context", CONTEXT, "--privsep_sock_path", SOCK]
    (miss,) = [c.miss for c in listed.decide(*argv).deviations]
    assert "could hand the helper its capabilities" in miss.detail


def test_a_non_root_owned_config_file_is_refused(listed):
    listed.trusted_conf.chmod(0o666)
    argv = [
        "--config-file",
        str(listed.trusted_conf),
        "--privsep_context",
        CONTEXT,
        "--privsep_sock_path",
        SOCK,
    ]
    assert not listed.decide(*argv).allowed
    listed.trusted_conf.chmod(0o644)
    assert listed.decide(*argv).allowed


def test_trusted_config_dir_is_allowed_and_an_untrusted_file_in_it_is_not(listed):
    argv = [
        "--config-file",
        str(listed.trusted_conf),
        "--config-dir",
        str(listed.etc),
        "--privsep_context",
        CONTEXT,
        "--privsep_sock_path",
        SOCK,
    ]
    assert listed.decide(*argv).allowed
    planted = listed.etc / "zz.conf"
    planted.write_text("[t_helper_rule]\nuser = root\n")
    planted.chmod(0o646)
    assert not listed.decide(*argv).allowed


def test_privsep_contexts_must_be_context_paths(tmp_path):
    with pytest.raises(ConfigValueError, match="not a privsep context path: 'os.system; id'"):
        parse_config("[DEFAULT]\nfilters_path=/x\nprivsep_contexts = a.b, os.system; id\n", "c")


def test_privsep_contexts_are_trimmed_and_read(tmp_path):
    config = parse_config("[DEFAULT]\nfilters_path=/x\nprivsep_contexts = a.b ,c.d\n", "c")
    assert config.privsep_contexts == ("a.b", "c.d")


@needs_posix_spawn
def test_the_policy_cache_does_not_change_the_decision(listed):
    good = ["--config-file", str(listed.trusted_conf), "--privsep_context", CONTEXT]
    good += ["--privsep_sock_path", SOCK]
    bad = ["--privsep_context", "os.path", "--privsep_sock_path", SOCK]
    cache = ["--cache-dir", str(listed.base / "cache")]
    for _ in range(2):  # the second round may be served from the cache
        for argv, rc in ((good, 0), (bad, 99)):
            result = subprocess.run(
                [_script("privsepd-rootwrap"), *cache, str(listed.conf), "privsep-helper", *argv],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == rc, result.stderr
