"""A few rtnetlink calls over the stdlib socket module, pyroute2-style.

Enough for svc: create a veth pair, set MTU and up, read a link, delete it.
Kernel errors raise :class:`NetlinkError` with the errno in ``.code``.
"""

from __future__ import annotations

import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO = 3, 4, 18
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")


class NetlinkError(Exception):
    def __init__(self, code: int, msg: str | None = None) -> None:
        msg = msg or os.strerror(code)
        super().__init__(code, msg)
        self.code = code


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _ifinfo(flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, flags, change)


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    pos = 0
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[pos + _RTATTR.size : pos + length]
        pos += (length + 3) & ~3
    return out


class IPRoute:
    """One NETLINK_ROUTE socket; each request waits for its answer."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> IPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, kind: int, flags: int, body: bytes) -> bytes | None:
        self._seq += 1
        size = _NLMSGHDR.size + len(body)
        header = _NLMSGHDR.pack(size, kind, NLM_F_REQUEST | flags, self._seq, 0)
        self._sock.send(header + body)
        while True:
            data = self._sock.recv(65536)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                length, mtype, _, seq, _ = _NLMSGHDR.unpack_from(data, pos)
                payload = data[pos + _NLMSGHDR.size : pos + length]
                pos += (length + 3) & ~3
                if seq != self._seq:
                    continue
                if mtype == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", payload)
                    if error:
                        raise NetlinkError(-error)
                    return None
                return payload

    def link_add_veth(self, name: str, peer: str) -> None:
        peer_info = _ifinfo() + _name(IFLA_IFNAME, peer)
        linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info)
        )
        body = _ifinfo() + _name(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO, linkinfo)
        self._request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def link_set(self, name: str, mtu: int | None = None, up: bool | None = None) -> None:
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        body = _ifinfo(flags, change) + _name(IFLA_IFNAME, name)
        if mtu is not None:
            body += _attr(IFLA_MTU, struct.pack("=I", mtu))
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def link_get(self, name: str) -> dict:
        payload = self._request(RTM_GETLINK, 0, _ifinfo() + _name(IFLA_IFNAME, name))
        assert payload is not None
        _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
        attrs = _attrs(payload[_IFINFOMSG.size :])
        (mtu,) = struct.unpack("=I", attrs[IFLA_MTU])
        return {"index": index, "mtu": mtu, "up": bool(flags & IFF_UP)}

    def link_del(self, name: str) -> None:
        self._request(RTM_DELLINK, NLM_F_ACK, _ifinfo() + _name(IFLA_IFNAME, name))
