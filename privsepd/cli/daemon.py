"""``privsepd serve``: the daemon's lifecycle around the per-connection helpers.

What each helper is fixed to (scope, function table, peers, audit) is built
by :mod:`privsepd.cli.serve`, shared with spawn mode. This module owns the
process that accepts connections:

- **One instance per socket directory.** The directory must be root-owned,
  not a symlink, mode 0755 or stricter, and its parents not writable by
  others (unless sticky); a lock file in it (``flock``) refuses a second
  ``privsepd serve`` instead of letting it unlink the live sockets.
- **Signals.** SIGTERM/SIGINT: stop accepting, remove the sockets, let every
  helper drain (calls already read finish and answer) up to
  ``--drain-timeout``, kill what is left, reap everything, exit 0. SIGHUP:
  reload policy; a policy that fails to load or is unsafe is refused with a
  log line and the old one keeps serving; new connections get the new
  policy, existing helpers keep the one they started with.
- **systemd.** ``READY=1`` once the sockets listen, ``RELOADING=1`` /
  ``READY=1`` around a reload, ``STOPPING=1`` (``Type=notify``).
- **Limits without lock-out.** Each helper counts its calls in memory the
  daemon shares (:mod:`privsepd.channel.stats`). When a peer uid (or the
  daemon) is at its helper limit, the helper idle longest (no call for at
  least ``--idle-evict-after`` seconds, none in flight) is drained to make
  room; only busy helpers count against a real client. An evicted client's
  next call goes to a fresh helper by itself (nothing of it was sent).
- **Status.** A root-only control socket answers ``privsepd status``.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import select
import selectors
import signal
import socket
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from privsepd.channel.protocol import ServerProtocol
from privsepd.channel.stats import CallStats
from privsepd.cli.serve import (
    PeerCredentials,
    ServedContext,
    _peer,
    peer_credentials,
    serve_connection,
    served_context,
)
from privsepd.cli.status import CONTROL_NAME, SOCKET_DIR
from privsepd.cli.systemd import notify
from privsepd.errors import AuditError, PolicyError, PrivsepError

log = logging.getLogger("privsepd.daemon")

LOCK_NAME = ".lock"
# Each connection costs a forked helper: bound what one peer (and all) can hold.
MAX_HELPERS_PER_UID = 32
MAX_HELPERS = 512
IDLE_EVICT_AFTER = 2.0
DRAIN_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
FRAME_TIMEOUT = 10.0


class AlreadyRunning(PrivsepError):
    """Another ``privsepd serve`` holds the socket directory."""


@dataclass
class Child:
    """A helper the daemon forked, and who it serves."""

    pid: int
    context: str
    peer: PeerCredentials
    generation: int
    timeout: float
    stats: CallStats
    started: float = field(default_factory=time.time)
    evicted_at: float | None = None  # monotonic time of the SIGTERM, if evicted

    def describe(self) -> dict[str, Any]:
        out = {
            "pid": self.pid,
            "peer_uid": self.peer.uid,
            "peer_gid": self.peer.gid,
            "peer_pid": self.peer.pid,
            "policy_generation": self.generation,
            "started": _iso(self.started),
            "evicting": self.evicted_at is not None,
        }
        out.update(self.stats.snapshot(timeout=self.timeout))
        return out


def prepare_socket_dir(path: str) -> None:
    """Create the socket directory, or refuse one that others could control.

    A directory someone else owns or may write lets them replace the
    sockets (and impersonate the daemon) or hold the lock.
    """
    path = os.path.abspath(path)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        raise PolicyError(f"cannot create socket directory: {exc.strerror}", path=path) from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PolicyError("socket directory is not a directory (a symlink?)", path=path)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        raise PolicyError(
            f"socket directory is owned by uid {st.st_uid}, not root; remove it or fix it",
            path=path,
        )
    if mode & ~0o755:
        raise PolicyError(
            f"socket directory has mode {mode:04o}; it must be 0755 or stricter", path=path
        )
    parent = os.path.dirname(path)
    while True:
        pst = os.stat(parent)
        writable = pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if pst.st_uid != 0 or (writable and not pst.st_mode & stat.S_ISVTX):
            raise PolicyError(
                f"socket directory's parent {parent} can be changed by others "
                f"(owner uid {pst.st_uid}, mode {stat.S_IMODE(pst.st_mode):04o})",
                path=path,
            )
        if parent == "/":
            break
        parent = os.path.dirname(parent)


def acquire_lock(socket_dir: str) -> int:
    """Hold the directory's lock for this daemon's lifetime; refuse a second one."""
    path = os.path.join(socket_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"another privsepd serve (pid {holder}) is serving {socket_dir}; "
            "stop it first (its sockets are left alone)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def policy_stamps(files: Sequence[str]) -> list[dict[str, Any]]:
    """What each policy file looked like when it was loaded."""
    out: list[dict[str, Any]] = []
    for path in files:
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError as exc:
            out.append({"path": path, "error": exc.strerror})
            continue
        out.append({"path": path, "mtime": _iso(st.st_mtime), "size": st.st_size, "sha256": digest})
    return out


class Daemon:
    """Accepts connections and forks one scoped helper per authorized peer."""

    def __init__(
        self,
        policy_paths: Sequence[str],
        socket_dir: str = SOCKET_DIR,
        contexts: Sequence[str] | None = None,
        max_per_uid: int = MAX_HELPERS_PER_UID,
        max_total: int = MAX_HELPERS,
        idle_evict_after: float = IDLE_EVICT_AFTER,
        drain_timeout: float = DRAIN_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
    ) -> None:
        self.policy_paths = list(policy_paths)
        self.socket_dir = os.path.abspath(socket_dir)
        self.only = list(contexts) if contexts else None
        self.max_per_uid = max_per_uid
        self.max_total = max_total
        self.idle_evict_after = idle_evict_after
        self.drain_timeout = drain_timeout
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.children: dict[int, Child] = {}
        self.served: dict[str, ServedContext] = {}
        self.timeouts: dict[str, float] = {}
        self.listeners: dict[str, socket.socket] = {}
        self.generation = 0
        self.stamps: list[dict[str, Any]] = []
        self.last_reload: dict[str, Any] | None = None
        self.started = time.time()
        self._selector = selectors.DefaultSelector()
        self._stop = False
        self._reload = False
        self._wake: tuple[int, int] | None = None
        self.control: socket.socket | None = None
        self._lock_fd: int | None = None
        prepare_socket_dir(self.socket_dir)
        self._lock_fd = acquire_lock(self.socket_dir)
        try:
            # Every context is built (and any policy error raised) before a
            # socket is created.
            served, timeouts, files = self._load()
            self._apply(served, timeouts, files)
            self.control = self._listen(CONTROL_NAME, 0o600)
            self._selector.register(self.control, selectors.EVENT_READ, None)
        except BaseException:
            self._close_all()
            raise

    # -- policy ----------------------------------------------------------------

    def _load(self) -> tuple[dict[str, ServedContext], dict[str, float], list[str]]:
        from privsepd.helper.monitor import preload
        from privsepd.policy.loader import load_policy

        preload()  # once here, not again in every connection's helper
        policy = load_policy(self.policy_paths)
        names = self.only or sorted(policy.contexts)
        served: dict[str, ServedContext] = {}
        try:
            for name in names:
                one = served_context(policy, name, None)
                one.spec = dataclasses.replace(
                    one.spec,
                    handshake_timeout=self.handshake_timeout,
                    frame_timeout=self.frame_timeout,
                )
                served[name] = one
        except BaseException:
            _close_audit(served.values())
            raise
        timeouts = {name: policy.contexts[name].timeout for name in names}
        return served, timeouts, list(policy.files)

    def _apply(
        self, served: dict[str, ServedContext], timeouts: dict[str, float], files: list[str]
    ) -> None:
        """Switch to a loaded policy: new sockets first, then the swap, then removals."""
        created = {}
        try:
            for name in served:
                if name not in self.listeners:
                    created[name] = self._listen(f"{name}.sock", 0o666)
        except OSError:
            for name, sock in created.items():
                sock.close()
                _unlink(os.path.join(self.socket_dir, f"{name}.sock"))
            raise
        gone = [name for name in self.listeners if name not in served]
        for name, sock in created.items():
            self.listeners[name] = sock
            self._selector.register(sock, selectors.EVENT_READ, name)
        old, self.served, self.timeouts = self.served, served, timeouts
        _close_audit(old.values())  # helpers hold their own copies
        self.generation += 1
        self.stamps = policy_stamps(files)
        for name in gone:
            self._close_listener(name)

    def reload(self) -> bool:
        """Load policy again; keep the old one if the new one is not acceptable."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            loaded = self._load()
            try:
                self._apply(*loaded)
            except BaseException:
                _close_audit(loaded[0].values())
                raise
        except (PrivsepError, OSError) as exc:
            log.error("reload refused, the previous policy keeps serving: %s", exc)
            self.last_reload = {"time": _iso(time.time()), "ok": False, "error": str(exc)}
            notify("READY=1\nSTATUS=reload refused; previous policy serving")
            return False
        log.info("policy reloaded (generation %d): %s", self.generation, sorted(self.served))
        self.last_reload = {"time": _iso(time.time()), "ok": True, "generation": self.generation}
        notify(f"READY=1\nSTATUS=serving {len(self.served)} context(s)")
        return True

    # -- sockets -----------------------------------------------------------------

    def _listen(self, name: str, mode: int) -> socket.socket:
        path = os.path.join(self.socket_dir, name)
        _unlink(path)  # a leftover of a daemon that died: we hold the lock now
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(path)
            # Context sockets: access is decided per connection from
            # SO_PEERCRED, not by file mode. The control socket is root's.
            os.chmod(path, mode)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        return sock

    def _close_listener(self, name: str) -> None:
        sock = self.listeners.pop(name)
        self._selector.unregister(sock)
        sock.close()
        _unlink(os.path.join(self.socket_dir, f"{name}.sock"))

    def _close_all(self) -> None:
        for name in list(self.listeners):
            self._close_listener(name)
        control = self.control
        if control is not None:
            self._selector.unregister(control)
            control.close()
            _unlink(os.path.join(self.socket_dir, CONTROL_NAME))
            self.control = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock file stays: unlinking it would race
            self._lock_fd = None

    # -- the loop ----------------------------------------------------------------

    def serve_forever(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status (0)."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake = (r, w)
        self._selector.register(r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        log.info("serving %s in %s", sorted(self.served), self.socket_dir)
        notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving {len(self.served)} context(s)")
        while not self._stop:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "wake":
                    _drain_pipe(r)
                elif key.data is None:
                    self._answer_status()
                elif key.data in self.served:
                    self._accept(key.data)
            self._reap()
            if self._reload and not self._stop:
                self._reload = False
                self.reload()
        return self.shutdown()

    def _on_stop(self, *_: Any) -> None:
        self._stop = True

    def _on_reload(self, *_: Any) -> None:
        self._reload = True

    def shutdown(self) -> int:
        """Stop accepting, drain every helper up to the deadline, reap, exit 0."""
        notify("STOPPING=1")
        log.info("stopping: draining %d helper(s)", len(self.children))
        self._close_all()
        for child in self.children.values():
            _signal(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout
        while self.children and time.monotonic() < deadline:
            self._reap()
            if self.children:
                time.sleep(0.01)
        for pid in list(self.children):
            log.warning("helper %d did not drain within %gs: killed", pid, self.drain_timeout)
            _signal(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.children.pop(pid).stats.close()
        if self._wake is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        log.info("stopped")
        return 0

    # -- connections --------------------------------------------------------------

    def _accept(self, name: str) -> None:
        served = self.served[name]
        try:
            conn, _ = self.listeners[name].accept()
        except OSError:
            return
        if _hung_up(conn):
            # Connect-and-close floods cost an accept and a poll, not a fork.
            conn.close()
            return
        try:
            peer = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        self._reap()
        if not served.peers.allows(peer):
            reason: str | None = (
                f"peer uid {peer.uid} gid {peer.gid} (pid {peer.pid}) "
                f"is not allowed to use context {served.name!r}"
            )
        else:
            reason = self._make_room(peer)
        if reason is None:
            # The decision is recorded before a helper exists for this peer;
            # a trail that cannot be written refuses the connection.
            try:
                served.audit.record(
                    context=served.name, decision="allow", op="connect", **_peer(peer)
                )
            except AuditError as exc:
                reason = f"refused: {exc}"
        if reason is not None:
            self._refuse(served, conn, peer, reason)
            return
        try:
            stats = CallStats.shared(served.spec.max_workers)
        except OSError as exc:
            self._refuse(served, conn, peer, f"cannot map a helper's counters: {exc.strerror}")
            return
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: this peer waits, the daemon lives
            stats.close()
            self._refuse(served, conn, peer, f"cannot fork a helper: {exc.strerror}")
            return
        if pid == 0:  # pragma: no cover - the helper child
            status = 70
            try:
                self._become_helper()
                status = serve_connection(served, conn, peer, stats)
            finally:
                os._exit(status)
        conn.close()
        self.children[pid] = Child(pid, name, peer, self.generation, self.timeouts[name], stats)
        log.info("context %s: helper pid %d serves peer pid %d", served.name, pid, peer.pid)

    def _refuse(
        self, served: ServedContext, conn: socket.socket, peer: PeerCredentials, reason: str
    ) -> None:
        """Tell the peer why it gets no helper, audit it, hang up."""
        try:
            served.audit.record(
                context=served.name, decision="deny", op="connect", error=reason, **_peer(peer)
            )
        except AuditError as exc:
            log.error("%s", exc)
        try:
            conn.settimeout(0.5)
            conn.sendall(ServerProtocol(served.name).reject(reason))
        except OSError:
            pass
        conn.close()

    def _become_helper(self) -> None:
        """In the forked child: drop everything that belongs to the daemon."""
        if self._wake is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wake:
                os.close(fd)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for sock in self.listeners.values():
            sock.close()
        if self.control is not None:
            self.control.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        for child in self.children.values():
            child.stats.close()

    def _make_room(self, peer: PeerCredentials) -> str | None:
        """None if a helper may be forked for ``peer`` (evicting an idle one if
        need be), else why not."""
        live = [c for c in self.children.values() if c.evicted_at is None]
        mine = [c for c in live if c.peer.uid == peer.uid]
        if len(mine) >= self.max_per_uid:
            victim = self._idlest(mine)
            if victim is None:
                return (
                    f"peer uid {peer.uid} already has {self.max_per_uid} helper(s), "
                    f"none idle for {self.idle_evict_after:g}s"
                )
            self._evict(victim, f"peer uid {peer.uid} is at its limit of {self.max_per_uid}")
            live.remove(victim)
        if len(live) >= self.max_total:
            victim = self._idlest(live)
            if victim is None:
                return (
                    f"daemon already runs {self.max_total} helper(s), "
                    f"none idle for {self.idle_evict_after:g}s"
                )
            self._evict(victim, f"the daemon is at its limit of {self.max_total}")
        return None

    def _idlest(self, children: list[Child]) -> Child | None:
        """The helper with no call in flight that has been idle longest, past the grace."""
        now = time.monotonic()
        best, best_idle = None, self.idle_evict_after
        for child in children:
            idle = child.stats.idle_for(now)
            if idle is not None and idle >= best_idle:
                best, best_idle = child, idle
        return best

    def _evict(self, child: Child, why: str) -> None:
        log.info("evicting idle helper %d of uid %d: %s", child.pid, child.peer.uid, why)
        child.evicted_at = time.monotonic()
        _signal(child.pid, signal.SIGTERM)  # drains: it has nothing in flight
        served = self.served.get(child.context)
        if served is not None:
            try:
                served.audit.record(
                    context=child.context,
                    decision="evict",
                    helper_pid=child.pid,
                    error=why,
                    **_peer(child.peer),
                )
            except AuditError as exc:
                log.error("%s", exc)

    def _reap(self) -> None:
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.pop(pid).stats.close()
            elif child.evicted_at is not None and now - child.evicted_at > self.drain_timeout:
                _signal(pid, signal.SIGKILL)

    # -- status -----------------------------------------------------------------

    def _answer_status(self) -> None:
        if self.control is None:
            return
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(1.0)
                peer = peer_credentials(conn)
                if peer.uid != 0:
                    body: dict[str, Any] = {"error": "privsepd status is for root only"}
                else:
                    body = self.status()
                conn.sendall(json.dumps(body, sort_keys=True).encode())
            except OSError:
                pass

    def status(self) -> dict[str, Any]:
        """Everything ``privsepd status`` shows, JSON-ready."""
        self._reap()
        by_context: dict[str, list[dict[str, Any]]] = {}
        for child in sorted(self.children.values(), key=lambda c: c.pid):
            by_context.setdefault(child.context, []).append(child.describe())
        contexts = []
        for name in sorted(set(self.served) | set(by_context)):
            served = self.served.get(name)
            entry: dict[str, Any] = {
                "name": name,
                "socket": os.path.join(self.socket_dir, f"{name}.sock") if served else None,
                "helpers": by_context.get(name, []),
            }
            if served is not None:
                entry.update(
                    sandbox=_sandbox(served.spec.scope),
                    functions=sorted(served.table),
                    allow_uids=sorted(served.peers.uids),
                    allow_gids=sorted(served.peers.gids),
                    timeout=self.timeouts[name],
                    max_frame=served.spec.limits.max_frame,
                )
            contexts.append(entry)
        return {
            "daemon": {
                "pid": os.getpid(),
                "socket_dir": self.socket_dir,
                "started": _iso(self.started),
                "uptime": round(time.time() - self.started, 1),
                "policy_generation": self.generation,
                "limits": {
                    "max_helpers_per_uid": self.max_per_uid,
                    "max_helpers": self.max_total,
                    "idle_evict_after": self.idle_evict_after,
                    "drain_timeout": self.drain_timeout,
                    "handshake_timeout": self.handshake_timeout,
                    "frame_timeout": self.frame_timeout,
                },
            },
            "policy": {
                "paths": self.policy_paths,
                "files": self.stamps,
                "last_reload": self.last_reload,
            },
            "contexts": contexts,
        }


def _sandbox(scope: Any) -> dict[str, Any]:
    landlock = scope.landlock
    return {
        "capabilities": sorted(scope.capabilities),
        "uid": scope.uid,
        "gid": scope.gid,
        "groups": list(scope.groups),
        "umask": f"{scope.umask:04o}",
        "landlock_read": list(landlock.read) if landlock else None,
        "landlock_write": list(landlock.write) if landlock else None,
        "seccomp_deny": list(scope.seccomp_deny),
        "no_new_privs": True,
        "securebits_locked": True,
    }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _close_audit(served: Any) -> None:
    for one in served:
        close = getattr(one.audit, "close", None)
        if close is not None:
            close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# Linux's value; PyPy 3.9's select module does not name it.
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)


def _hung_up(conn: socket.socket) -> bool:
    """Has the peer already closed its end (nobody left to serve)?"""
    poller = select.poll()
    poller.register(conn, _POLLRDHUP)
    return any(event & (select.POLLHUP | _POLLRDHUP) for _, event in poller.poll(0))


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="privsepd serve",
        description="Daemon mode: listen on SOCKET_DIR/CONTEXT.sock for every context of the "
        "policy; authorize each peer by SO_PEERCRED against the context's allow lists and "
        "serve it from a freshly forked helper scoped to the context. Runs as root. "
        "SIGHUP reloads the policy (a bad one is refused and the old one kept); SIGTERM "
        "drains calls in flight and exits 0.",
    )
    parser.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="PATH",
        help="root-owned policy file (.toml, .filters, rootwrap.conf) or drop-in directory; "
        "may repeat, later files add rules and never widen one",
    )
    parser.add_argument(
        "--socket-dir",
        default=SOCKET_DIR,
        metavar="DIR",
        help=f"where the CONTEXT.sock sockets are created (default: {SOCKET_DIR})",
    )
    parser.add_argument(
        "--context",
        action="append",
        metavar="NAME",
        help="serve only this context of the policy; may repeat (default: every context)",
    )
    parser.add_argument(
        "--max-helpers-per-uid",
        type=int,
        default=MAX_HELPERS_PER_UID,
        metavar="N",
        help="most helpers one peer uid may hold at once; further connections are refused "
        f"(default: {MAX_HELPERS_PER_UID})",
    )
    parser.add_argument(
        "--max-helpers",
        type=int,
        default=MAX_HELPERS,
        metavar="N",
        help=f"most helpers in total (default: {MAX_HELPERS})",
    )
    parser.add_argument(
        "--idle-evict-after",
        type=float,
        default=IDLE_EVICT_AFTER,
        metavar="SECONDS",
        help="at a helper limit, drain a helper idle this long to make room "
        f"(default: {IDLE_EVICT_AFTER:g})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for calls in flight before killing helpers "
        f"(default: {DRAIN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="drop a connection whose hello is not complete this long after it connected "
        f"(default: {HANDSHAKE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--frame-timeout",
        type=float,
        default=FRAME_TIMEOUT,
        metavar="SECONDS",
        help="drop a connection that leaves a frame half-sent this long "
        f"(default: {FRAME_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="privsepd: %(message)s")
    if os.geteuid() != 0:
        print("privsepd serve: must run as root", file=sys.stderr)
        return 1
    from privsepd.policy.modules import install_import_guard

    install_import_guard()  # every module imported from here on is trust-checked
    notify("STATUS=starting")  # also takes NOTIFY_SOCKET out of the helpers' way
    try:
        daemon = Daemon(
            args.policy,
            args.socket_dir,
            args.context,
            args.max_helpers_per_uid,
            args.max_helpers,
            args.idle_evict_after,
            args.drain_timeout,
            args.handshake_timeout,
            args.frame_timeout,
        )
    except AlreadyRunning as exc:
        print(f"privsepd serve: {exc}", file=sys.stderr)
        return 1
    except PrivsepError as exc:
        print(f"privsepd serve: {exc}", file=sys.stderr)
        return 2
    return daemon.serve_forever()
