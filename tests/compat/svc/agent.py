"""svc's unprivileged logic: it catches the privileged side's errors by type."""

from __future__ import annotations

import errno

from oslo_privsep import comm
from svcdeps import netlink, processutils

from svc import exceptions
from svc.privileged import ops


def ensure_mtu(name: str, mtu: int) -> str:
    try:
        ops.set_link(name, mtu=mtu)
    except netlink.NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return "missing"
        raise
    return "set"


def file_exists(path: str) -> bool:
    try:
        ops.read_file(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def run(*cmd: str) -> tuple:
    try:
        return ("ok", *ops.execute(*cmd))
    except processutils.ProcessExecutionError as exc:
        return ("failed", exc.exit_code, exc.stderr, exc.cmd)


def link_index(name: str) -> int | None:
    try:
        return ops.require_link(name)
    except exceptions.InterfaceNotFound as exc:
        assert exc.device == name
        return None


def probe(seconds: float) -> str:
    try:
        return ops.slow(seconds)
    except comm.PrivsepTimeout:
        return "timeout"
