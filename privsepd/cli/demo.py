"""``privsepd demo``: the whole path once, on the shipped demo policy.

Loads the shipped ``quickstart.toml`` (package data, also in the source tree
as ``filters/quickstart.toml``; copied into a fresh root-owned directory, so
the real ownership checks apply), starts the scoped helper of context
``demo``, makes an allowed call, two calls that policy denies, and prints
the helper's capability sets as the kernel reports them in /proc.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from privsepd.constraints import PathUnder
from privsepd.context import Context
from privsepd.errors import PrivsepError

demo = Context("demo")

SHIPPED_POLICY = "quickstart.toml"  # in privsepd/data, read via importlib.resources
STATUS_KEYS = ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
STATUS_KEYS += ("NoNewPrivs", "Seccomp")


#: The policy checks ``path`` too; opening through the constraint means the
#: file read is the one judged, whatever is renamed under /etc meanwhile.
ETC = PathUnder("/etc", must_exist=True)


@demo.entrypoint
def count_lines(path: str) -> int:
    """Count the lines of a file the service itself may not read."""
    with ETC.open(path, "rb") as f:
        return sum(1 for _ in f)


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = value.strip()
    return out


def _cap_names(mask: str) -> str:
    from privsepd.helper.kernel import CAPABILITIES

    value = int(mask, 16)
    names = [name for name, bit in CAPABILITIES.items() if value >> bit & 1]
    return ", ".join(sorted(names)) or "none"


def shipped_policy() -> bytes:
    """The default demo policy, from the installed package (any install kind)."""
    from importlib.resources import files

    return files("privsepd.data").joinpath(SHIPPED_POLICY).read_bytes()


def _private_copy(name: str, data: bytes) -> Path:
    """Write the policy into a root-owned 0700 directory under /run.

    A checkout may live under /tmp or a user's home, and site-packages may be
    anywhere, which the trust check rightly refuses; the copy lets the demo
    run the real check unchanged.
    """
    directory = Path(tempfile.mkdtemp(prefix="privsepd-demo-", dir="/run"))
    target = directory / name
    target.write_bytes(data)
    os.chmod(target, 0o644)
    return target


def run_demo(policy_path: str | None = None) -> int:
    from privsepd.policy.loader import load_policy

    if os.geteuid() != 0:
        print("privsepd demo: fork mode needs root to start the helper", file=sys.stderr)
        return 1
    if policy_path:
        source = Path(policy_path)
        if not source.is_file():
            print(f"privsepd demo: policy file not found: {source}", file=sys.stderr)
            return 1
        copy = _private_copy(source.name, source.read_bytes())
    else:
        source = Path(f"<privsepd package data>/{SHIPPED_POLICY}")
        copy = _private_copy(SHIPPED_POLICY, shipped_policy())
    try:
        policy = load_policy([str(copy)])
        demo.apply_policy(policy)
        print(f"policy: {source} (checked as {copy})")
        demo.start()
        pid = demo.helper_pid
        status = _status(pid)
        print(f"helper: pid {pid}, context {demo.name!r}")
        for key in STATUS_KEYS:
            line = f"  {key + ':':<12}{status[key]}"
            if key.startswith("Cap"):
                line += f"  ({_cap_names(status[key])})"
            print(line)

        lines = count_lines("/etc/shadow")
        print(f"allowed: count_lines('/etc/shadow') -> {lines} lines")
        for label, call in (
            ("count_lines('/etc/../root/.profile')", lambda: count_lines("/etc/../root/.profile")),
            ("unknown function 'os:system'", lambda: demo._call("call", "os:system", ["id"], {})),
        ):
            try:
                call()
            except PrivsepError as exc:
                print(f"denied:  {label} -> {type(exc).__name__}: {exc}")
            else:
                print(f"UNEXPECTED: {label} was allowed", file=sys.stderr)
                return 1
        return 0
    except PrivsepError as exc:
        print(f"privsepd demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
        shutil.rmtree(copy.parent, ignore_errors=True)
