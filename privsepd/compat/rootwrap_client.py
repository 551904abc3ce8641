"""``oslo_rootwrap.client.Client``, backed by a privsepd helper.

Services that run commands through oslo.rootwrap's daemon
(``root_helper_daemon``) build ``Client(rootwrap_daemon_cmd)`` and call
``execute(cmd, stdin=None) -> (returncode, stdout, stderr)``. Swap the
import and the command:

- ``Client(["sudo", "privsepd", "helper", "--context", "NAME"])`` spawns the
  helper of context NAME on the first call (spawn mode; any prefix before
  the ``--context NAME`` pair is the command run, as with oslo's daemon);
- ``Client(["unix:/run/privsepd/NAME.sock"])`` connects to ``privsepd
  serve`` (daemon mode; the context is the socket's name).

The commands a context may run are its ``[[command]]`` rules in root-owned
policy (``privsepd filters convert --context NAME`` turns a ``.filters``
set into them). A denied command returns ``99`` with oslo-rootwrap's
message; the precise reason is logged. (oslo's own daemon raises
``RemoteError`` for a denied command and restarts.) A call that finds the
helper dead restarts it and is sent once more, as oslo's client does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from privsepd.context import Context
from privsepd.errors import DeniedError, HelperDiedError

LOG = logging.getLogger(__name__)

RC_UNAUTHORIZED = 99
#: oslo's daemon has no call timeout; privsepd bounds every call.
DEFAULT_TIMEOUT = 3600.0


def context_for(rootwrap_daemon_cmd: Sequence[str]) -> Context:
    """The privsepd context a rootwrap daemon command line stands for."""
    cmd = list(rootwrap_daemon_cmd)
    if len(cmd) == 1 and cmd[0].startswith("unix:"):
        path = cmd[0][len("unix:") :]
        name = os.path.basename(path)
        if not name.endswith(".sock") or len(name) == len(".sock"):
            raise ValueError(f"daemon socket must be named CONTEXT.sock, not {path!r}")
        return Context(name[: -len(".sock")], socket_path=path, timeout=DEFAULT_TIMEOUT)
    if cmd.count("--context") != 1:
        raise ValueError(
            "rootwrap_daemon_cmd must be a privsepd helper command with one "
            f"'--context NAME' (e.g. sudo privsepd helper --context NAME), got {cmd!r}"
        )
    at = cmd.index("--context")
    if at + 1 >= len(cmd) or at == 0:
        raise ValueError(f"'--context' needs a command before it and a name after it: {cmd!r}")
    name = cmd[at + 1]
    return Context(name, helper_command=cmd[:at] + cmd[at + 2 :], timeout=DEFAULT_TIMEOUT)


class Client:
    """Runs commands through a privsepd helper, as oslo's rootwrap daemon client."""

    def __init__(self, rootwrap_daemon_cmd: Sequence[str]) -> None:
        self._start_command = list(rootwrap_daemon_cmd)
        self._context = context_for(self._start_command)
        self._lock = threading.Lock()

    def execute(self, cmd: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
        """Run ``cmd`` if policy allows it; ``(returncode, stdout, stderr)`` as str."""
        argv = [str(a) for a in cmd]
        data = os.fsencode(stdin) if stdin is not None else None
        try:
            try:
                rc, out, err = self._context.execute(argv, input=data)
            except HelperDiedError:
                # As oslo's client: a daemon found dead is restarted and the
                # command sent once more (the context starts a new helper).
                LOG.warning("privsepd helper for %r died; restarting", self._context.name)
                rc, out, err = self._context.execute(argv, input=data)
        except DeniedError as exc:
            LOG.warning("Unauthorized command: %s (%s)", " ".join(argv), exc)
            return (
                RC_UNAUTHORIZED,
                "",
                f"Unauthorized command: {' '.join(argv)} (no filter matched)\n",
            )
        return rc, os.fsdecode(out), os.fsdecode(err)

    def stop(self) -> None:
        """Stop the helper (it is started again by the next ``execute``)."""
        with self._lock:
            self._context.stop()
