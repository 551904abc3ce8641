"""``privsepd status``: what a running ``privsepd serve`` holds, from its control socket.

Root only: the control socket is mode 0600 and the daemon checks the peer's
SO_PEERCRED uid too. The client checks the daemon's uid the same way, so a
look-alike socket cannot feed it a made-up status.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

SOCKET_DIR = "/run/privsepd"
CONTROL_NAME = ".control"  # context names cannot start with a dot
EXIT_NOT_RUNNING = 3  # as "systemctl status" says of an inactive unit


def fetch(socket_dir: str = SOCKET_DIR, timeout: float = 5.0) -> dict[str, Any]:
    """The daemon's status as a dict; OSError if no daemon answers."""
    from privsepd.cli.serve import peer_credentials

    path = os.path.join(socket_dir, CONTROL_NAME)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        server = peer_credentials(sock)
        if server.uid != 0:
            raise PermissionError(f"{path} is served by uid {server.uid}, not root")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def render(status: dict[str, Any]) -> str:
    """The human-readable form of ``fetch``'s result."""
    d = status["daemon"]
    lines = [
        f"privsepd serve: pid {d['pid']}, up {d['uptime']:g}s (since {d['started']}), "
        f"sockets in {d['socket_dir']}, policy generation {d['policy_generation']}",
        "limits: " + ", ".join(f"{k} {v:g}" for k, v in sorted(d["limits"].items())),
        "policy:",
    ]
    for f in status["policy"]["files"]:
        if "error" in f:
            lines.append(f"  {f['path']}: {f['error']}")
        else:
            lines.append(
                f"  {f['path']}  {f['size']} bytes, modified {f['mtime']}, "
                f"sha256 {f['sha256'][:16]}"
            )
    reload = status["policy"]["last_reload"]
    if reload is None:
        lines.append("  last reload: none since start")
    elif reload["ok"]:
        lines.append(f"  last reload: {reload['time']} ok (generation {reload['generation']})")
    else:
        lines.append(f"  last reload: {reload['time']} REFUSED: {reload['error']}")
    for ctx in status["contexts"]:
        lines.append(f"context {ctx['name']}: {ctx['socket'] or '(removed by a reload)'}")
        box = ctx.get("sandbox")
        if box is not None:
            who = f"uid {box['uid']} gid {box['gid']}"
            if box["uid"] is None:
                who = "uid 0 (stay_root)"
            lines.append(
                f"  sandbox: {', '.join(box['capabilities']) or 'no capabilities'}; {who}; "
                f"umask {box['umask']}; no_new_privs; securebits locked"
            )
            if box["landlock_read"] is not None:
                lines.append(
                    f"  landlock: read {box['landlock_read']} write {box['landlock_write']}"
                )
            if box["seccomp_deny"]:
                lines.append(f"  seccomp deny: {', '.join(box['seccomp_deny'])}")
            lines.append(
                f"  peers: uids {ctx['allow_uids']} gids {ctx['allow_gids']} (and root); "
                f"timeout {ctx['timeout']:g}s; max_frame {ctx['max_frame']}"
            )
        helpers = ctx["helpers"]
        lines.append(f"  helpers: {len(helpers)}")
        for h in helpers:
            state = " (evicting)" if h["evicting"] else ""
            lines.append(
                f"    pid {h['pid']}: peer uid {h['peer_uid']} pid {h['peer_pid']}, "
                f"served {h['served']}, in flight {h['in_flight']}, "
                f"abandoned {h['abandoned']}, idle {h['idle_for']:g}s, "
                f"policy generation {h['policy_generation']}{state}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="privsepd status", description="Show what a running privsepd serve holds."
    )
    parser.add_argument(
        "--socket-dir",
        default=SOCKET_DIR,
        metavar="DIR",
        help=f"the socket directory of the privsepd serve to ask (default: {SOCKET_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("privsepd status: must run as root", file=sys.stderr)
        return 1
    try:
        status = fetch(args.socket_dir)
    except (FileNotFoundError, ConnectionRefusedError):
        where = args.socket_dir
        print(f"privsepd status: no privsepd serve is running in {where}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except (OSError, ValueError) as exc:
        print(f"privsepd status: {exc}", file=sys.stderr)
        return 1
    if "error" in status:
        print(f"privsepd status: {status['error']}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render(status))
    return 0
