"""Packaging and command-line conventions: version, help, metadata, wheel
contents, and the sysusers.d / tmpfiles.d files applied for real."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import require_feature

import privsepd

ROOT = Path(__file__).resolve().parents[1]
BIN = os.path.dirname(sys.executable)


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _script(name: str) -> str:
    path = os.path.join(BIN, name)
    assert os.access(path, os.X_OK), f"console script {name} is not installed in {BIN}"
    return path


# -- version: one source of truth ------------------------------------------------------


def test_version_attribute_is_the_installed_distributions_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.\w+)?", privsepd.__version__)
    assert importlib.metadata.version("privsepd") == privsepd.__version__


def test_setup_cfg_reads_the_version_from_the_package():
    assert "version = attr: privsepd.__version__" in (ROOT / "setup.cfg").read_text()


@pytest.mark.parametrize(
    "argv",
    [("privsepd", "--version"), ("-m", "privsepd", "--version")],
    ids=["console-script", "python-m"],
)
def test_privsepd_version(argv):
    cmd = [_script("privsepd"), *argv[1:]] if argv[0] == "privsepd" else [sys.executable, *argv]
    proc = _run(*cmd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"privsepd {privsepd.__version__}\n"


def test_python_m_privsepd_runs_the_same_cli_as_the_console_script():
    proc = _run(sys.executable, "-m", "privsepd", "filters", "check", "--list-rules")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _run(_script("privsepd"), "filters", "check", "--list-rules").stdout


# -- privsepd-rootwrap: --help/--version, oslo's codes for real usage errors --------------


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_rootwrap_help_exits_0_with_usage_on_stdout(flag):
    proc = _run(_script("privsepd-rootwrap"), flag)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: privsepd-rootwrap [--explain]")
    assert "--version" in proc.stdout and proc.stderr == ""


def test_rootwrap_version_exits_0():
    proc = _run(_script("privsepd-rootwrap"), "--version")
    assert (proc.returncode, proc.stdout) == (0, f"privsepd-rootwrap {privsepd.__version__}\n")


def test_rootwrap_unknown_option_keeps_oslos_exit_code_98():
    proc = _run(_script("privsepd-rootwrap"), "--bogus", "/etc/x.conf", "ls")
    assert proc.returncode == 98
    assert "unknown option '--bogus'" in proc.stderr


def test_rootwrap_without_a_command_keeps_oslos_exit_code_98():
    proc = _run(_script("privsepd-rootwrap"), "/etc/privsepd/rootwrap.conf")
    assert proc.returncode == 98
    assert "No command specified" in proc.stderr


# -- serve and helper: every option explained --------------------------------------------


def _option_help(help_text: str) -> dict[str, str]:
    """Each option of an argparse --help with the text that explains it."""
    # ("optional arguments:" before Python 3.10)
    section = re.split(r"\n(?:options|optional arguments):\n", help_text, maxsplit=1)[1]
    out: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"  (-\S+(?:, -\S+)?)(?: [A-Z_]+)?(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1).split(", ")[-1]
            out[current] = m.group(2) or ""
        elif current and line.startswith(" " * 10):
            out[current] += " " + line.strip()
    return out


@pytest.mark.parametrize("command", ["serve", "helper"])
def test_every_option_of_serve_and_helper_has_help(command):
    options = _option_help(_run(_script("privsepd"), command, "--help").stdout)
    assert "--policy" in options and "--context" in options
    assert {o: t for o, t in options.items() if len(t.strip()) < 10} == {}


@pytest.mark.parametrize("command", ["serve", "helper"])
def test_policy_option_says_it_may_repeat(command):
    options = _option_help(_run(_script("privsepd"), command, "--help").stdout)
    assert "may repeat" in options["--policy"]


# -- metadata and files ------------------------------------------------------------------


def test_license_is_the_apache_2_0_text_the_metadata_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0")
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 190
    meta = importlib.metadata.metadata("privsepd")
    assert meta["License"] == "Apache-2.0"


def test_metadata_has_author_urls_and_the_supported_pythons():
    meta = importlib.metadata.metadata("privsepd")
    assert meta["Author"]
    urls = meta.get_all("Project-URL") or []
    assert any(u.startswith("Source, https://") for u in urls), urls
    assert meta["Requires-Python"] == ">=3.9"
    classifiers = meta.get_all("Classifier")
    for minor in range(9, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Programming Language :: Python :: Implementation :: PyPy" in classifiers
    assert "Typing :: Typed" in classifiers


def test_runtime_requirements_use_environment_markers():
    requires = importlib.metadata.requires("privsepd") or []
    prctl = [r for r in requires if r.startswith("python-prctl")]
    tomli = [r for r in requires if r.startswith("tomli")]
    assert prctl and 'platform_python_implementation == "CPython"' in prctl[0]
    assert tomli and 'python_version < "3.11"' in tomli[0]


def test_changelog_has_an_entry_for_this_version():
    assert f"## {privsepd.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_wheel_ships_the_default_policy_py_typed_and_the_license(tmp_path):
    proc = _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("privsepd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "privsepd/data/quickstart.toml" in names
    assert "privsepd/py.typed" in names
    assert any(n.endswith(".dist-info/LICENSE") or "licenses/LICENSE" in n for n in names)
    data = zipfile.ZipFile(wheel).read("privsepd/data/quickstart.toml")
    assert data == (ROOT / "filters" / "quickstart.toml").read_bytes()


# -- sysusers.d and tmpfiles.d, applied to a scratch root --------------------------------

SYSTEMD = ROOT / "filters" / "systemd"


def test_sysusers_file_creates_the_privsepd_system_user(tmp_path):
    tool = shutil.which("systemd-sysusers")
    require_feature(tool is not None, "systemd-sysusers (Debian package systemd)")
    (tmp_path / "etc").mkdir()
    proc = _run(tool, f"--root={tmp_path}", str(SYSTEMD / "sysusers.d-privsepd.conf"))
    assert proc.returncode == 0, proc.stderr
    entry = next(
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("privsepd:")
    )
    assert int(entry[2]) < 1000  # a system uid
    assert entry[6] == "/usr/sbin/nologin"


def test_tmpfiles_file_creates_the_socket_directory_root_owned_0755(tmp_path):
    from privsepd.cli.status import SOCKET_DIR

    tool = shutil.which("systemd-tmpfiles")
    require_feature(tool is not None, "systemd-tmpfiles (Debian package systemd)")
    conf = SYSTEMD / "tmpfiles.d-privsepd.conf"
    proc = _run(tool, "--create", f"--root={tmp_path}", str(conf))
    assert proc.returncode == 0, proc.stderr
    st = os.stat(str(tmp_path) + SOCKET_DIR)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)
