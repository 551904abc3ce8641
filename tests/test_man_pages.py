"""The man pages document every subcommand and option the CLIs accept.

Options are read from the CLIs' own ``--help`` output, so an option added
without documentation fails here; each page must also render without a
groff warning.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privsepd.cli import rootwrap
from privsepd.policy import native

MAN = Path(__file__).resolve().parents[1] / "docs" / "man"
PAGES = ["privsepd.8", "privsepd-rootwrap.8", "privsepd-policy.5"]


def _text(page: str) -> str:
    """The page's words with roff escapes for '-' undone."""
    return (MAN / page).read_text().replace("\\-", "-").replace("\\&", "")


def _help(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "privsepd", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", help_text)) - {"-h", "--help"}


def _names(option: str, page: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", page) is not None


def _subcommands(help_text: str) -> list[str]:
    match = re.search(r"\{([a-z,-]+)\} \.\.\.", help_text)  # argparse's subparser usage
    return match.group(1).split(",") if match else []


def _commands() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    todo: list[tuple[str, ...]] = [()]
    while todo:
        cmd = todo.pop()
        assert len(cmd) < 4, cmd
        for sub in _subcommands(_help(*cmd)):
            out.append((*cmd, sub))
            todo.append((*cmd, sub))
    return out


COMMANDS = _commands()


def test_the_cli_walk_finds_every_known_subcommand():
    names = {" ".join(c) for c in COMMANDS}
    assert {"demo", "serve", "helper", "filters check", "filters learn propose"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "privsepd")
def test_privsepd_man_page_names_the_subcommand_and_each_of_its_options(command):
    page = _text("privsepd.8")
    if command:
        assert re.search(r"\b" + re.escape(command[-1]) + r"\b", page), command
    missing = sorted(o for o in _options(_help(*command)) if not _names(o, page))
    assert missing == [], f"privsepd {' '.join(command)}: {missing} not in privsepd(8)"


def test_rootwrap_man_page_names_each_option_and_exit_code():
    page = _text("privsepd-rootwrap.8")
    missing = sorted(o for o in _options(rootwrap.HELP) if not _names(o, page))
    assert missing == []
    for code in ("99", "98", "97", "96", "126", "128+N"):
        assert f".B {code}\n" in page, code


def test_policy_man_page_names_every_key_the_parser_accepts():
    page = _text("privsepd-policy.5")
    keys = (
        native._CONTEXT_KEYS | native._SANDBOX_KEYS | native._FUNCTION_KEYS | native._COMMAND_KEYS
    ) - {"sandbox"}
    missing = sorted(k for k in keys if not re.search(r"\b" + k + r"\b", page))
    assert missing == []


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_groff_warnings(page):
    groff = shutil.which("groff")
    assert groff, "groff is needed to render the man pages (apt-get install groff-base)"
    proc = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(MAN / page)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
