"""svc's privileged functions: netlink, files, commands."""

from __future__ import annotations

import logging
import os
import time

from svcdeps import netlink, processutils

from svc import exceptions, privileged

LOG = logging.getLogger(__name__)


def _status() -> dict:
    with open(f"/proc/{os.getpid()}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {"CapEff": int(fields["CapEff"], 16), "CapBnd": int(fields["CapBnd"], 16)}


@privileged.default.entrypoint
def whoami() -> dict:
    return {"pid": os.getpid(), **_status()}


@privileged.reader.entrypoint
def reader_whoami() -> dict:
    return {"pid": os.getpid(), **_status()}


@privileged.default.entrypoint
def create_veth(name: str, peer: str) -> None:
    LOG.debug("creating veth pair %s/%s", name, peer)
    with netlink.IPRoute() as ip:
        ip.link_add_veth(name, peer)


@privileged.default.entrypoint
def set_link(name: str, mtu: int | None = None, up: bool | None = None) -> None:
    with netlink.IPRoute() as ip:
        ip.link_set(name, mtu=mtu, up=up)


@privileged.default.entrypoint
def get_link(name: str) -> dict:
    with netlink.IPRoute() as ip:
        return ip.link_get(name)


@privileged.default.entrypoint
def delete_link(name: str) -> None:
    with netlink.IPRoute() as ip:
        ip.link_del(name)


@privileged.default.entrypoint
def require_link(name: str) -> int:
    try:
        with netlink.IPRoute() as ip:
            return ip.link_get(name)["index"]
    except netlink.NetlinkError as exc:
        if exc.code == 19:  # ENODEV
            raise exceptions.InterfaceNotFound(name) from None
        raise


@privileged.reader.entrypoint
def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


@privileged.default.entrypoint
def execute(*cmd: str) -> tuple:
    return processutils.execute(*cmd)


@privileged.default.entrypoint
def echo(value):
    return value


@privileged.default.entrypoint_with_timeout(0.3)
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@privileged.default.entrypoint_with_timeout(5)
def quick_with_timeout() -> str:
    return "done"
