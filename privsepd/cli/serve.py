"""What a daemon-mode or spawn-mode helper is fixed to, and spawn mode itself.

The daemon (``privsepd serve``, :mod:`privsepd.cli.daemon`; root, under
systemd) loads root-owned policy, imports the modules that policy names
(never a module a client names), and listens on ``SOCKET_DIR/CONTEXT.sock``.
Each connection is authorized by the kernel's SO_PEERCRED uid/gid against the
context's allow lists; an authorized peer is served by a freshly forked
helper scoped to that context, so one client's helper never sees another's
state. ``privsepd helper`` (spawn mode) builds its one helper the same way.
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from privsepd.audit import AuditLog
from privsepd.channel.peer import PeerCredentials, peer_credentials
from privsepd.channel.protocol import ServerProtocol
from privsepd.errors import PolicyError, PrivsepError
from privsepd.helper.monitor import Entrypoint, HelperSpec, _helper_main

log = logging.getLogger("privsepd.daemon")

DEFAULT_POLICY = ["/etc/privsepd/policy.toml", "/etc/privsepd/policy.d"]

__all__ = ["PeerCredentials", "PeerPolicy", "peer_credentials"]


@dataclass(frozen=True)
class PeerPolicy:
    """Who may connect to a context: uids, and gids the peer holds.

    A gid admits a peer that holds it as its primary group or as one of its
    supplementary groups when it connected (SO_PEERGROUPS, captured by the
    kernel at connect() like SO_PEERCRED). Primary-only would not be tighter:
    any member listed in the group database can make the group primary with
    ``sg``/``newgrp``.
    """

    uids: frozenset[int]
    gids: frozenset[int]

    @classmethod
    def from_spec(cls, spec: Any) -> PeerPolicy:
        uids = set(spec.allow_uids)
        gids = set(spec.allow_gids)
        for name in spec.allow_users:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                raise PolicyError(f"context {spec.name!r}: unknown user {name!r} in allow_users")
        for name in spec.allow_groups:
            try:
                gids.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                raise PolicyError(f"context {spec.name!r}: unknown group {name!r} in allow_groups")
        return cls(frozenset(uids), frozenset(gids))

    def allows(self, peer: PeerCredentials) -> bool:
        # Root may always connect: it could run the function itself anyway.
        if peer.uid == 0 or peer.uid in self.uids:
            return True
        return peer.gid in self.gids or not self.gids.isdisjoint(peer.groups)


def load_entrypoints(functions: Mapping[str, Any]) -> dict[str, Entrypoint]:
    """Import what root-owned policy names and find its @entrypoint functions.

    Only names from policy are imported, and only functions decorated with
    ``@ctx.entrypoint`` are accepted, so a typo in policy cannot expose an
    arbitrary callable such as ``os:system``.
    """
    from privsepd.policy.modules import import_trusted

    found: dict[str, Entrypoint] = {}
    for name, fspec in functions.items():
        module_name, _, qualname = name.partition(":")
        where = _where(fspec)
        try:
            # Code that will run as root: every module file must pass the
            # policy trust check, and runs from the bytes that were checked.
            obj: Any = import_trusted(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except PolicyError as exc:
            raise PolicyError(f"function {name}{where}: {exc}") from None
        except (ImportError, AttributeError) as exc:
            raise PolicyError(f"function {name}{where}: cannot load: {exc}") from None
        entry = getattr(obj, "privsepd_entrypoint", None)
        if not isinstance(entry, Entrypoint):
            raise PolicyError(f"function {name}{where}: not a privsepd @entrypoint")
        found[name] = entry
    return found


def _where(fspec: Any) -> str:
    source = getattr(fspec, "source", None)
    return f" ({source.path}:{source.line})" if source is not None else ""


@dataclass
class ServedContext:
    """One listening socket and what its helpers are fixed to."""

    name: str
    listener: socket.socket | None  # the daemon's socket, or spawn mode's stdin
    peers: PeerPolicy
    spec: HelperSpec
    table: dict[str, Entrypoint]
    audit: AuditLog
    runner_factory: Any = None


def served_context(policy: Any, name: str, listener: socket.socket | None) -> ServedContext:
    """Everything a helper of context ``name`` is fixed to, from root-owned policy.

    Daemon and spawn mode both build their helpers from this, so the two can
    never disagree on scope, function table, peers or audit sink.
    """
    from privsepd.context import Context, entrypoint_table

    spec = policy.contexts.get(name)
    if spec is None:
        raise PolicyError(f"policy declares no context {name!r}")
    functions = policy.functions_for(name)
    table = entrypoint_table(load_entrypoints(functions), functions, log)
    ctx = Context(name)
    ctx.apply_policy(policy)
    return ServedContext(
        name,
        listener,
        PeerPolicy.from_spec(spec),
        HelperSpec(name, ctx.scope(), ctx.limits, ctx.max_workers),
        table,
        AuditLog.open(spec.audit),
        ctx._command_runner_factory,
    )


def serve_connection(
    served: ServedContext, conn: socket.socket, peer: PeerCredentials, stats: Any = None
) -> int:
    """Scope this process to the context and serve ``conn`` until EOF.

    ``stats`` is where the helper counts its calls (the daemon shares it).
    """
    from privsepd.context import monitor_factory

    factory = monitor_factory(
        served.name, served.table, served.runner_factory, served.audit, _peer(peer)
    )
    return _helper_main(conn, served.spec, factory, served.audit, stats=stats)


def _peer(peer: PeerCredentials) -> dict:
    return peer.fields()


# ------------------------------------------------------------------ spawn mode


def helper_main(argv: list[str] | None = None) -> int:
    """``privsepd helper --context NAME``: serve one client on stdin (spawn mode).

    An unprivileged service runs this through one sudoers line. The channel
    is the socket the service passed as standard input, so no path from the
    caller is ever opened as root; everything else (capabilities, user,
    functions, commands) comes from root-owned policy.
    """
    if os.geteuid() != 0:
        print("privsepd helper: must be started as root (e.g. through sudo)", file=sys.stderr)
        return 1
    from privsepd.cli.rootwrap import sudo_leaked_variables
    from privsepd.helper.process import reset_inherited_state

    leaked = sudo_leaked_variables()  # read before the environment is reset
    # A first title while the environment is intact (python-prctl finds argv
    # through it); the helper sets the full one with its capabilities later.
    from privsepd.helper.procinfo import COMM, set_title

    set_title(COMM)
    # Before anything else: limits, signals, umask and environment came from
    # the caller through sudo (RLIMIT_FSIZE + SIGXFSZ ignored would make
    # every audit write fail).
    inherited: PrivsepError | None = None
    try:
        reset_inherited_state()
    except PrivsepError as exc:
        inherited = exc
    from privsepd.policy.loader import load_policy
    from privsepd.policy.modules import install_import_guard

    parser = argparse.ArgumentParser(
        prog="privsepd helper",
        description="Spawn mode: serve one client whose channel socket is standard input, "
        "as the scoped helper of context NAME from root-owned policy. Started as root "
        "through one sudoers line by privsepd.Context(..., helper_command=[...]).",
    )
    parser.add_argument(
        "--context",
        required=True,
        metavar="NAME",
        help="the policy context to serve (its capabilities, user, functions, commands)",
    )
    parser.add_argument(
        "--policy",
        action="append",
        metavar="PATH",
        help="root-owned policy file or drop-in directory; may repeat "
        f"(default: {' and '.join(DEFAULT_POLICY)})",
    )
    args = parser.parse_args(argv)
    try:
        sock: socket.socket | None = socket.socket(fileno=os.dup(0))
    except OSError:
        sock = None
    peer: PeerCredentials | None = None
    if sock is not None and sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
        peer = peer_credentials(sock)
    policy: Any = None
    served: ServedContext | None = None
    try:
        if leaked:
            raise PolicyError(
                f"refusing to run: {', '.join(leaked)} reached a root interpreter through "
                "sudo; keep sudo's 'Defaults env_reset'"
            )
        if peer is None:
            raise PolicyError("standard input is not a Unix stream socket")
        if inherited is not None:
            raise inherited
        install_import_guard()  # every module imported from here on is trust-checked
        policy = load_policy(args.policy or DEFAULT_POLICY)
        served = served_context(policy, args.context, sock)
        if (served.peers.uids or served.peers.gids) and not served.peers.allows(peer):
            raise PolicyError(
                f"peer uid {peer.uid} gid {peer.gid} groups {list(peer.groups)} is not allowed "
                f"to use context {served.name!r}"
            )
    except PrivsepError as exc:
        if policy is None and served is None:
            policy = _policy_for_audit(args.policy or DEFAULT_POLICY)
        return _refuse_spawn(args.context, str(exc), sock if peer else None, peer, policy, served)
    assert sock is not None and peer is not None
    return serve_connection(served, sock, peer)


def _policy_for_audit(paths: list[str]) -> Any:
    """The policy, read only to learn where a refusal's record goes (None if unreadable)."""
    from privsepd.policy.loader import load_policy

    try:
        return load_policy(paths)
    except PrivsepError:
        return None


def _refuse_spawn(
    context: str,
    reason: str,
    sock: socket.socket | None,
    peer: PeerCredentials | None,
    policy: Any,
    served: ServedContext | None,
) -> int:
    """Audit a spawn-mode refusal, tell the peer why, exit 2.

    The record goes where the context's own records go (the policy is read
    for that even when the refusal came first); to the default sink when
    the policy cannot be read or has no such context. It names the peer as
    far as the kernel told us (nothing when stdin is no socket).
    """
    import signal

    from privsepd.errors import AuditError

    # Refused because a file-size limit could not be restored: a record past
    # it must fail as EFBIG (AuditError, said below), not kill us mid-write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fields: dict[str, Any] = {
        "context": context,
        "decision": "deny",
        "op": "connect",
        "error": reason,
        **(peer.fields() if peer is not None else {}),
    }
    try:
        if served is not None:
            audit = served.audit
        else:
            spec = policy.contexts.get(context) if policy is not None else None
            audit = AuditLog.open(getattr(spec, "audit", None))
        audit.record(**fields)
    except AuditError as exc:
        reason = f"{reason}; the refusal was not audited: {exc}"
    if sock is not None:
        try:
            sock.sendall(ServerProtocol(context).reject(reason))
        except OSError:
            pass
    print(f"privsepd helper: {reason}", file=sys.stderr)
    return 2
