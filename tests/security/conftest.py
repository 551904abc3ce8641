"""Targets of the red-team suite: one running instance of each way privsepd serves.

* ``fork``    a helper forked from this (root) process, as ``ctx.start()`` does;
* ``spawn``   ``privsepd helper`` run as helper_command with the channel on stdin;
* ``daemon``  ``privsepd serve`` with a Unix socket per context;
* ``rootwrap`` the ``privsepd-rootwrap`` console script.

The three helper targets load the same root-owned policy (:data:`BASE_POLICY`
plus whatever a test adds), with a JSON-lines audit file of their own per
test, so each test reads exactly the records its attempt produced. The
rootwrap shim audits to syslog; each run gets a private ``/dev/log`` bound
to a socket of the test (see ``attack.private_dev_log``).

Every target offers the same few verbs -- ``call``, ``execute``, ``raw``,
``good_call``, ``audit`` -- so a test states an attack and its three
outcomes in a handful of lines.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import require_feature, require_root, trusted_tree, unix_listening

from privsepd.channel.protocol import OP_CALL
from privsepd.context import Context
from privsepd.modes import SpawnMode
from privsepd.policy.loader import load_policy

from . import entrypoints
from .attack import (
    AuditTrail,
    RawPeer,
    SyslogTrail,
    as_user,
    fn,
    pid_gone,
    private_dev_log,
    wait_for,
)

#: The directory holding the ``security`` package (tests/, or a root-owned
#: copy of the package when the checkout is untrusted, e.g. under /tmp), put
#: on the spawned helper's and the daemon's sys.path as a service's own
#: package would be installed: they import only trust-checked modules.
TESTS_DIR = str(trusted_tree(Path(__file__).resolve().parent).parent)
NOBODY = 65534
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BASE_POLICY = """
[context.t-sec]
capabilities = @CAPS@
user = "nobody"
timeout = 10
audit = "@AUDIT@"
@PEERS@

[context.t-sec-other]
user = "nobody"
audit = "@AUDIT@"

[[function]]
context = "t-sec"
name = "security.entrypoints:echo"
args.values = { one_of = [{ str = true }, { bytes = true }, { int_range = { min = 0 } }] }

[[function]]
context = "t-sec"
name = "security.entrypoints:whoami"

[[function]]
context = "t-sec"
name = "security.entrypoints:run"
strict = false

[[function]]
context = "t-sec"
name = "security.entrypoints:child_env"

[[function]]
context = "t-sec-other"
name = "security.entrypoints:other_secret"
"""


def write_root_file(path: Path, text: str, mode: int = 0o644) -> str:
    path.write_text(text)
    os.chown(path, 0, 0)
    path.chmod(mode)
    return str(path)


def write_policy(
    path: Path,
    audit: str,
    extra: str = "",
    caps: tuple[str, ...] = ("CAP_DAC_READ_SEARCH",),
    peers: str = "allow_uids = [65534]",
) -> str:
    """BASE_POLICY for context t-sec (plus ``extra``) as a root-owned 0644 file."""
    text = BASE_POLICY.replace("@CAPS@", json.dumps(list(caps))).replace("@PEERS@", peers)
    return write_root_file(path, text.replace("@AUDIT@", audit) + extra)


def spawn_command(policy: str, isolated: bool = True) -> list[str]:
    """``privsepd helper`` with tests/ on its sys.path (where the service's package lives).

    ``isolated`` (-I) keeps the caller's working directory off sys.path, as
    the installed console script does; without it the interpreter honours
    PYTHON* variables, which is what the sudo test needs to show refused.
    """
    boot = (
        f"import sys; sys.path.insert(0, {TESTS_DIR!r}); "
        "from privsepd.cli.main import main; sys.exit(main())"
    )
    # -B: a helper started under a hostile RLIMIT_FSIZE must not leave truncated
    # bytecode in the shared __pycache__ (CPython ignores the short write).
    flags = ["-B", "-I"] if isolated else ["-B"]
    return [sys.executable, *flags, "-c", boot, "helper", "--policy", policy]


class _PidLink:
    """A daemon's helper: not our child, so only its disappearance can be seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self, wait: float = 0.0) -> int | None:
        deadline = time.monotonic() + wait
        while not pid_gone(self.pid):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return -1

    def describe_exit(self) -> str:
        return f"daemon helper pid {self.pid}"

    def stop(self, timeout: float = 1.0) -> None:
        pass


def children_of(pid: int) -> set[int]:
    """Live (not zombie) children of ``pid``, from /proc."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.add(int(entry))
    return out


class HelperTarget:
    """A running privsepd serving context ``t-sec`` in one of three modes."""

    kind = ""
    context = "t-sec"

    def __init__(
        self, directory: Path, extra_policy: str, caps: tuple[str, ...], peers: str
    ) -> None:
        directory.mkdir(mode=0o755)
        self.dir = directory
        self.audit = AuditTrail(str(directory / "audit.jsonl"))
        self.policy = write_policy(
            directory / "policy.toml", self.audit.path, extra_policy, caps, peers
        )
        self._client: Context | None = None
        self._peers: list[RawPeer] = []

    # -- the service side, used as intended ---------------------------------
    def new_client(self) -> Context:
        raise NotImplementedError

    def client(self) -> Context:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call an entrypoints.py function by short name, or any wire name (with ':')."""
        wire = name if ":" in name or not name else fn(name)
        return self.client()._call(OP_CALL, wire, list(args), kwargs)

    def execute(self, argv: list[str], **kwargs: Any) -> tuple[int, bytes, bytes]:
        return self.client().execute(argv, **kwargs)

    def serving_pid(self) -> int:
        """The pid of the helper serving this target's client."""
        self.good_call()
        return self.client().helper_pid

    def good_call(self) -> None:
        """The target still serves: a fresh good call returns its answer."""
        token = f"good-{time.monotonic_ns()}"
        got = self.call("echo", token)
        assert got == [token], f"good call returned {got!r}"

    # -- the service side, hostile ------------------------------------------
    def open_link(self) -> tuple[socket.socket, Any]:
        raise NotImplementedError

    def connect(self) -> RawPeer:
        sock, helper = self.open_link()
        peer = RawPeer(sock, self.context, helper)
        self._peers.append(peer)
        return peer

    def raw(self) -> RawPeer:
        """A connection past the handshake, for sending hostile frames."""
        return self.connect().handshake()

    def close(self) -> None:
        for peer in self._peers:
            peer.close()
        if self._client is not None:
            self._client.stop()


class ForkTarget(HelperTarget):
    kind = "fork"

    def new_client(self) -> Context:
        ctx = entrypoints.fresh_context()
        ctx.apply_policy(load_policy([self.policy]))
        return ctx

    def open_link(self) -> tuple[socket.socket, Any]:
        helper = self.client().mode.open(self.client())
        return helper.sock, helper


class SpawnTarget(HelperTarget):
    kind = "spawn"

    def new_client(self) -> Context:
        return Context(self.context, timeout=10, helper_command=spawn_command(self.policy))

    def open_link(self) -> tuple[socket.socket, Any]:
        helper = SpawnMode(spawn_command(self.policy)).open(self.client())
        return helper.sock, helper


class DaemonTarget(HelperTarget):
    kind = "daemon"

    def __init__(
        self, directory: Path, extra_policy: str, caps: tuple[str, ...], peers: str, args=()
    ) -> None:
        super().__init__(directory, extra_policy, caps, peers)
        self.socket_dir = str(directory / "sock")
        self.socket = os.path.join(self.socket_dir, f"{self.context}.sock")
        self.log = str(directory / "daemon.log")
        self._serving: int | None = None
        self.proc = start_daemon(self.policy, self.socket_dir, self.log, args)
        wait_for(
            lambda: self.proc.poll() is not None or daemon_listening(self.socket),
            15,
            "the daemon's socket",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon did not start: {open(self.log).read()}")

    def new_client(self) -> Context:
        return Context(self.context, timeout=10, socket_path=self.socket)

    def helpers(self) -> set[int]:
        """The daemon's children: one helper per connection it accepted."""
        return children_of(self.proc.pid)

    def open_link(self) -> tuple[socket.socket, Any]:
        before = self.helpers()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.socket)
        new = wait_for(lambda: self.helpers() - before, 5, "the daemon to fork a helper")
        return sock, _PidLink(max(new))

    def serving_pid(self) -> int:
        """The helper serving this target's client (connecting it first if need be)."""
        if self._serving is None:
            before = self.helpers()
            self.good_call()
            self._serving = max(wait_for(lambda: self.helpers() - before, 5, "a helper"))
        return self._serving

    def close(self) -> None:
        super().close()
        self.proc.kill()
        self.proc.wait()


def daemon_listening(socket_path: str) -> bool:
    """The daemon has called listen() on ``socket_path`` (its file exists a moment
    earlier, when a connect would still be refused)."""
    return unix_listening(socket_path)


def start_daemon(policy: str, socket_dir: str, log: str, args=(), env=None) -> subprocess.Popen:
    """``privsepd serve`` as systemd would run it, tests/ on its PYTHONPATH."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "privsepd.cli.main",
                "serve",
                "--policy",
                policy,
                "--socket-dir",
                socket_dir,
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ, PYTHONPATH=TESTS_DIR),
        )


_KINDS = {"fork": ForkTarget, "spawn": SpawnTarget, "daemon": DaemonTarget}


class Targets:
    """Opens targets for one test and tears them all down after it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.opened: list[Any] = []

    def open(
        self,
        kind: str,
        extra_policy: str = "",
        caps: tuple[str, ...] = ("CAP_DAC_READ_SEARCH",),
        peers: str = "allow_uids = [65534]",
        **kwargs: Any,
    ) -> HelperTarget:
        """Start ``kind`` on BASE_POLICY + ``extra_policy``; ``peers`` are t-sec's allow keys."""
        directory = self.base / f"{kind}-{len(self.opened)}"
        target = _KINDS[kind](directory, extra_policy, caps, peers, **kwargs)
        self.opened.append(target)
        return target

    def rootwrap(self, filters: str, conf_extra: str = "") -> RootwrapTarget:
        target = RootwrapTarget(self.base / f"rootwrap-{len(self.opened)}", filters, conf_extra)
        self.opened.append(target)
        return target

    def close(self) -> None:
        for target in reversed(self.opened):
            target.close()


@pytest.fixture
def targets(trusted_dir):
    opened = Targets(trusted_dir)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["fork", "spawn", "daemon"])
def helper(request, targets) -> HelperTarget:
    """Each helper mode in turn, serving BASE_POLICY."""
    return targets.open(request.param)


@pytest.fixture
def fork(targets) -> HelperTarget:
    return targets.open("fork")


@pytest.fixture
def spawn(targets) -> HelperTarget:
    return targets.open("spawn")


@pytest.fixture
def daemon(targets) -> HelperTarget:
    return targets.open("daemon")


# -- privsepd-rootwrap -------------------------------------------------------------

ROOTWRAP_FILTERS = """
[Filters]
true: CommandFilter, /bin/true, root
"""


#: Runs requests (JSON lines: argv, env, input, timeout) and answers with
#: rc/stdout/stderr, from inside the private /dev/log namespace.
_RUNNER = """
import json, subprocess, sys
for line in sys.stdin:
    req = json.loads(line)
    data = None if req["input"] is None else bytes.fromhex(req["input"])
    r = subprocess.run(req["argv"], env=req["env"], input=data, capture_output=True,
                       stdin=None if data is not None else subprocess.DEVNULL,
                       timeout=req["timeout"])
    out = {"rc": r.returncode, "out": r.stdout.hex(), "err": r.stderr.hex()}
    sys.stdout.write(json.dumps(out) + "\\n")
    sys.stdout.flush()
"""


def rootwrap_script() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "privsepd-rootwrap")
    found = beside if os.access(beside, os.X_OK) else shutil.which("privsepd-rootwrap")
    assert found, "privsepd-rootwrap is not installed (pip install -e .[test])"
    return found


class RootwrapTarget:
    """``privsepd-rootwrap CONF ...`` with its own config, cache and /dev/log."""

    kind = "rootwrap"

    def __init__(self, directory: Path, filters: str, conf_extra: str = "") -> None:
        directory.mkdir(mode=0o755)
        self.dir = directory
        self.filters_dir = directory / "filters.d"
        self.filters_dir.mkdir(mode=0o755)
        write_root_file(self.filters_dir / "redteam.filters", ROOTWRAP_FILTERS + filters)
        self.conf = write_root_file(
            directory / "rootwrap.conf",
            f"[DEFAULT]\nfilters_path={self.filters_dir}\nexec_dirs=/bin,/usr/bin,/sbin,/usr/sbin\n"
            + conf_extra,
        )
        self.cache = str(directory / "cache")
        # The scratch dir holds the log socket: not world-writable, outside /tmp.
        self.scratch = tempfile.mkdtemp(prefix="rw-", dir=str(directory))
        self.audit = SyslogTrail(os.path.join(self.scratch, "log"))
        self._runner: subprocess.Popen | None = None

    def run(
        self,
        *argv: str,
        conf: str | None = None,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
        input: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        """Run the shim as sudo would (a clean environment unless ``env`` says otherwise)."""
        cmd = [rootwrap_script(), "--cache-dir", self.cache, *options, conf or self.conf, *argv]
        request = {
            "argv": cmd,
            "env": env if env is not None else {"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
            "input": None if input is None else input.hex(),
            "timeout": timeout,
        }
        server = self._server()
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        line = server.stdout.readline()
        if not line:
            raise AssertionError(f"rootwrap runner died: {server.stderr.read()}")
        reply = json.loads(line)
        return subprocess.CompletedProcess(
            cmd, reply["rc"], bytes.fromhex(reply["out"]), bytes.fromhex(reply["err"])
        )

    def _server(self) -> subprocess.Popen:
        """One runner per test inside the private /dev/log namespace (saves a
        namespace set-up per command)."""
        if self._runner is None:
            self._runner = subprocess.Popen(
                private_dev_log(self.scratch, self.audit.path, [sys.executable, "-c", _RUNNER]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
            )
        return self._runner

    def runner_pid(self) -> int:
        return self._server().pid

    def good_call(self) -> None:
        result = self.run("true")
        assert result.returncode == 0, result.stderr
        self.audit.expect(decision="allow", argv="true")

    def close(self) -> None:
        if self._runner is not None:
            self._runner.stdin.close()
            self._runner.wait(10)
        self.audit.close()


@pytest.fixture
def rootwrap(targets) -> RootwrapTarget:
    require_root()
    return targets.rootwrap("")


# -- privileged binaries an attacker would reach for -----------------------------------


def status_of(out: bytes) -> dict[str, str]:
    """``/proc/self/status`` as printed by a command, as a dict."""
    return dict(line.split(":\t", 1) for line in out.decode().splitlines() if ":\t" in line)


@pytest.fixture
def binaries(trusted_dir) -> dict[str, str]:
    """setuid-root and file-capability copies of cat, on a filesystem that honours them."""
    bindir = trusted_dir / "bin"
    bindir.mkdir(mode=0o755)
    nosuid = getattr(os, "ST_NOSUID", 2)  # Linux's value; PyPy 3.9 does not name it
    require_feature(not os.statvfs(bindir).f_flag & nosuid, f"{bindir} is nosuid")
    require_feature(shutil.which("setcap") is not None, "setcap (libcap2-bin)")
    suid = bindir / "suid-cat"
    shutil.copy("/bin/cat", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    fcaps = bindir / "fcaps-cat"
    shutil.copy("/bin/cat", fcaps)
    subprocess.run(["setcap", "cap_dac_override,cap_sys_admin+ep", str(fcaps)], check=True)
    got = subprocess.run(["getcap", str(fcaps)], capture_output=True, text=True).stdout
    assert "cap_dac_override" in got and "cap_sys_admin" in got, got
    # The binaries really are privileged for anyone who runs them outside a helper:
    direct = as_user(NOBODY, NOBODY, lambda: _status_line(str(suid)))
    assert direct.split()[1] == "0", f"setuid bit not honoured here: {direct}"
    return {"suid": str(suid), "fcaps": str(fcaps)}


def _status_line(binary: str) -> str:
    out = subprocess.run([binary, "/proc/self/status"], capture_output=True).stdout
    return status_of(out)["Uid"]


#: A command that tries to hand itself a capability: inheritable +CAP, then
#: PR_CAP_AMBIENT_RAISE CAP, then exec the rest of its argv (which inherits
#: whatever ambient set it got).
CAPRAISE_C = r"""
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int cap = atoi(argv[1]);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d)) { perror("capget"); return 3; }
    d[cap / 32].inheritable |= 1u << (cap % 32);
    if (syscall(SYS_capset, &h, d))
        fprintf(stderr, "capset inheritable +%d: %s\n", cap, strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0))
        fprintf(stderr, "ambient raise %d: %s\n", cap, strerror(errno));
    else
        fprintf(stderr, "ambient raise %d: ok\n", cap);
    execv(argv[2], argv + 2);
    perror("execv");
    return 127;
}
"""


@pytest.fixture
def capraise(trusted_dir) -> str:
    require_feature(shutil.which("cc") is not None, "a C compiler (cc)")
    bindir = trusted_dir / "cbin"
    bindir.mkdir(mode=0o755)
    src = bindir / "capraise.c"
    src.write_text(CAPRAISE_C)
    exe = bindir / "capraise"
    subprocess.run(["cc", "-O", "-o", str(exe), str(src)], check=True)
    exe.chmod(0o755)
    return str(exe)
