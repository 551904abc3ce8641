"""``oslo_privsep.priv_context``: ``PrivContext``, ``Method``, ``init``, backed by privsepd.

A ``PrivContext`` wraps a :class:`privsepd.Context` named after its
``pypath`` (``neutron.privileged.default``), else its ``cfg_section``:
every context is its own privsepd context, with its own helper and, in
daemon mode, its own socket.

With oslo.config importable, the options oslo registers are registered
under ``cfg_section`` with oslo's defaults, and read when the helper starts:
``user``, ``group`` and ``capabilities`` set in configuration (file, command
line, ``set_override``) replace the constructor's, ``thread_pool_size`` sizes
the helper's worker pool, ``logger_name`` names the context's logger and
``helper_command`` is the spawn command. Without oslo.config the
constructor's arguments are used.

``start(Method.FORK)`` forks the scoped helper (the service holds the
privileges). ``start(Method.ROOTWRAP)`` (the default, also taken on the
first call): with ``privsepd_socket_dir`` set, connect to ``privsepd
serve`` at ``<dir>/<name>.sock``; else with ``helper_command`` set, or when
the service is not root, spawn ``<root_helper> privsepd helper --context
<name>`` (``helper_command`` replaces ``<root_helper> privsepd helper``);
else (root, nothing configured) fork. Spawned and daemon helpers take their
declaration from root-owned policy, never from this process.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import shlex
import threading
from collections.abc import Callable, Iterable
from typing import Any

from privsepd.compat.oslo_privsep import _remote, comm, daemon
from privsepd.compat.oslo_privsep import capabilities as _caps
from privsepd.context import Context, in_helper
from privsepd.errors import CallTimeout, HandshakeError, PrivsepError, ProtocolError
from privsepd.modes import DaemonMode, ForkMode, SpawnMode

try:  # optional: services that use oslo.privsep have it; privsepd does not need it
    from oslo_config import cfg
    from oslo_config import types as cfg_types
except ImportError:  # pragma: no cover - exercised in a subprocess test
    cfg = None
    cfg_types = None

LOG = logging.getLogger(__name__)

_ENTRYPOINT_ATTR = "privsep_entrypoint"
_HELPER_COMMAND_PREFIX = ["sudo"]

#: oslo's timeout=None waits forever; privsepd bounds every call.
DEFAULT_TIMEOUT = 3600.0


def _cap_number(value: Any) -> int:
    text = str(value).strip()
    if text in _caps.CAPS_BYNAME:
        return _caps.CAPS_BYNAME[text]
    number = int(text)
    if number not in _caps.CAPS_BYVALUE:
        raise ValueError(f"unknown capability number {number}")
    return number


if cfg is not None:

    class CapNameOrInt(cfg_types.ConfigType):
        """A capability by name (``CAP_NET_ADMIN``) or number (``12``)."""

        def __init__(self) -> None:
            super().__init__("capability")

        def __call__(self, value: Any) -> int:
            return _cap_number(value)

        def _formatter(self, value: Any) -> str:
            return str(value)

    OPTS = [
        cfg.StrOpt("user", help="User that the privsep daemon should run as."),
        cfg.StrOpt("group", help="Group that the privsep daemon should run as."),
        cfg.Opt(
            "capabilities",
            type=cfg_types.List(CapNameOrInt()),
            default=[],
            help="List of Linux capabilities retained by the privsep daemon.",
        ),
        cfg.IntOpt(
            "thread_pool_size",
            min=1,
            default=os.cpu_count() or 1,
            sample_default="multiprocessing.cpu_count()",
            help="The number of threads available for privsep to concurrently run "
            "processes. Defaults to the number of CPU cores in the system.",
        ),
        cfg.StrOpt(
            "helper_command",
            help="Command to invoke to start the privsep daemon if not using the "
            '"fork" method. privsepd appends "--context NAME" and passes the channel '
            'as standard input; the default is the root helper and "privsepd helper".',
        ),
        cfg.StrOpt(
            "logger_name",
            default="oslo_privsep.daemon",
            help="Logger name to use for this privsep context.",
        ),
        cfg.BoolOpt(
            "log_daemon_traceback",
            default=False,
            help="Accepted for compatibility; privsepd does not send tracebacks.",
        ),
        cfg.StrOpt(
            "privsepd_socket_dir",
            help="privsepd: with the rootwrap method, connect to privsepd serve's "
            "socket DIR/CONTEXT.sock instead of spawning a helper.",
        ),
    ]
else:
    OPTS = []

_CODE_OVERRIDABLE = ("user", "group", "capabilities", "logger_name")


def _list_opts() -> list:
    """(group, opts) for the oslo-config-generator, as oslo.privsep lists them."""
    import copy

    if cfg is None:
        return []
    group = cfg.OptGroup("privsep", title="oslo.privsep options (privsepd)")
    return [(group, copy.deepcopy(OPTS))]


@enum.unique
class Method(enum.Enum):
    FORK = 1
    ROOTWRAP = 2


def init(root_helper: list[str] | None = None) -> None:
    """Set the command prefix that starts helpers as root (default ``sudo``).

    Call it early in ``main()``, as with oslo. The helper then runs as
    ``root_helper + ["privsepd", "helper", "--context", NAME]``; a context's
    ``helper_command`` option, if set, replaces the whole prefix.
    """
    global _HELPER_COMMAND_PREFIX
    if root_helper:
        _HELPER_COMMAND_PREFIX = list(root_helper)


class _Conf:
    """The options of one context when oslo.config is not installed."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class PrivContext:
    """oslo.privsep's ``PrivContext``; privsepd keywords come after ``*``.

    ``user``/``group`` set the helper's identity (oslo: stays root; privsepd
    leaves uid 0 unless ``stay_root=True``); ``files`` declares the files
    the helper may open (``privsepd.Files``); ``socket_dir`` is
    ``privsepd_socket_dir`` for code without oslo.config.
    """

    def __init__(
        self,
        prefix: str,
        cfg_section: str = "privsep",
        pypath: str | None = None,
        capabilities: Iterable[int | str] | None = None,
        logger_name: str = "oslo_privsep.daemon",
        timeout: float | None = None,
        *,
        user: str | None = None,
        group: str | None = None,
        stay_root: bool = False,
        files: Any = None,
        socket_dir: str | None = None,
    ) -> None:
        if capabilities is None:
            raise ValueError("capabilities is a required parameter")
        self.prefix = prefix
        self.cfg_section = cfg_section
        self.pypath = pypath
        self.timeout = timeout
        self.start_lock = threading.Lock()
        self._code = {
            "user": user,
            "group": group,
            "capabilities": [_cap_number(c) for c in capabilities],
            "logger_name": logger_name,
        }
        self._socket_dir = socket_dir
        self._started = False
        self._loopback = False
        if cfg is not None:
            cfg.CONF.register_opts(OPTS, group=cfg_section)
            cfg.CONF.set_default(
                "capabilities", group=cfg_section, default=self._code["capabilities"]
            )
            cfg.CONF.set_default("logger_name", group=cfg_section, default=logger_name)
            self._conf: Any = None
        else:
            self._conf = _Conf(
                thread_pool_size=os.cpu_count() or 1,
                helper_command=None,
                log_daemon_traceback=False,
                privsepd_socket_dir=socket_dir,
                **self._code,
            )
        extra = {} if files is None else {"files": files}
        self.context = Context(
            pypath or cfg_section,
            [_caps.CAPS_BYVALUE[c] for c in self._code["capabilities"]],
            user=user,
            group=group,
            stay_root=stay_root,
            timeout=timeout or DEFAULT_TIMEOUT,
            logger=logging.getLogger(logger_name),
            **extra,
        )

    # -- configuration --------------------------------------------------------

    @property
    def conf(self) -> Any:
        """The context's option values (oslo.config's group when available)."""
        if cfg is not None:
            return cfg.CONF[self.cfg_section]
        return self._conf

    def _option(self, name: str) -> Any:
        """An option's value: configuration when set there, else the code's.

        oslo reads ``conf.<name>`` whose default is the last constructor's
        (contexts may share a section); a value nobody configured is taken
        from this context's own constructor instead.
        """
        value = getattr(self.conf, name)
        if cfg is None or name not in _CODE_OVERRIDABLE:
            return value
        try:
            where = cfg.CONF.get_location(name, self.cfg_section).location
        except Exception:
            return value
        if where in (cfg.Locations.opt_default, cfg.Locations.set_default):
            return self._code[name]
        return value

    @property
    def name(self) -> str:
        """The privsepd context name: policy and daemon socket use it."""
        return self.context.name

    def __repr__(self) -> str:
        return f"PrivContext(cfg_section={self.cfg_section})"

    def helper_command(self, sockpath: str | None = None) -> list[str]:
        """The command that spawns this context's helper (``sockpath`` is unused).

        privsepd hands the helper its channel as standard input, so no
        socket path appears on the command line.
        """
        if self.pypath is None:
            raise AssertionError("helper_command requires priv_context pypath to be specified")
        self._check_pypath()
        configured = self.conf.helper_command
        if configured:
            cmd = shlex.split(configured)
        else:
            cmd = [*_HELPER_COMMAND_PREFIX, "privsepd", "helper"]
        return [*cmd, "--context", self.name]

    def _check_pypath(self) -> None:
        module, _, attr = (self.pypath or "").rpartition(".")
        found = _remote_resolve_object(module, attr)
        if found is not self:
            raise AssertionError("helper_command requires priv_context pypath for context object")

    # -- client mode ------------------------------------------------------------

    @property
    def client_mode(self) -> bool:
        return self.context.client_mode

    @client_mode.setter
    def client_mode(self, enabled: bool) -> None:
        self.context.client_mode = enabled

    def set_client_mode(self, enabled: bool) -> None:
        """False runs entrypoints in this process (service unit tests)."""
        self.context.client_mode = enabled

    @property
    def channel(self) -> Any:
        """The open channel, or None (oslo exposes it; code tests it for None)."""
        return self.context._channel

    # -- entrypoints ------------------------------------------------------------

    def entrypoint(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: run ``func`` in this context's helper."""
        return self._entrypoint(func, None)

    def entrypoint_with_timeout(self, timeout: float) -> Callable[[Callable], Callable]:
        """Decorator: as ``entrypoint``, with a per-call timeout (PrivsepTimeout)."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            return self._entrypoint(func, timeout)

        return wrap

    def is_entrypoint(self, func: Callable[..., Any]) -> bool:
        return getattr(func, _ENTRYPOINT_ATTR, None) is self

    def _entrypoint(self, func: Callable[..., Any], timeout: float | None) -> Callable[..., Any]:
        if not func.__module__.startswith(self.prefix):
            raise AssertionError(f'{self!r} entrypoints must be below "{self.prefix}"')
        if getattr(func, _ENTRYPOINT_ATTR, None) is not None:
            raise AssertionError(f"{func!r} is already associated with another PrivContext")
        if timeout is None:
            remote = self.context.entrypoint(func)
        else:
            remote = self.context.entrypoint(timeout=timeout)(func)

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            if in_helper() or not self.context.client_mode:
                return func(*args, **kwargs)
            if self._loopback:
                return _remote.loopback(func, args, kwargs)
            if not self._started:
                self.start()
            try:
                return remote(*args, **kwargs)
            except CallTimeout as exc:
                raise comm.PrivsepTimeout(str(exc)) from None
            except HandshakeError as exc:
                raise daemon.FailedToDropPrivileges(f"privsep helper failed to start: {exc}")
            except ProtocolError as exc:
                if type(exc) is ProtocolError:
                    raise daemon.ProtocolError(str(exc)) from None
                raise
            except Exception as exc:
                new = _remote.rebuild(exc)
                if new is exc:
                    raise
                raise new from None

        call.privsepd_name = remote.privsepd_name  # type: ignore[attr-defined]
        call.privsepd_entrypoint = remote.privsepd_entrypoint  # type: ignore[attr-defined]
        setattr(call, _ENTRYPOINT_ATTR, self)
        return call

    # -- lifecycle ----------------------------------------------------------------

    def start(self, method: Method = Method.ROOTWRAP) -> None:
        """Start the helper now; a running one is left alone (with a warning)."""
        if not isinstance(method, Method):
            raise ValueError(f"Unknown method: {method}")
        with self.start_lock:
            if self._started:
                LOG.warning("privsep daemon already running")
                return
            self._configure(method)
            try:
                self.context.start()
            except PrivsepError as exc:
                msg = f"privsep helper for context {self.name!r} failed to start: {exc}"
                LOG.critical(msg)
                raise daemon.FailedToDropPrivileges(msg) from exc
            self._started = True

    def _configure(self, method: Method) -> None:
        """Apply configuration and choose how the helper is reached."""
        from privsepd.helper.scoping import parse_capabilities

        ctx = self.context
        caps = [_cap_number(c) for c in self._option("capabilities")]
        ctx.capabilities = parse_capabilities([_caps.CAPS_BYVALUE[c] for c in caps])
        ctx.user = self._option("user")
        ctx.group = self._option("group")
        # privsepd starts helper workers on demand, up to this many. At least
        # 4: calls that timed out are bounded to half the workers, and oslo's
        # helper runs the next call to an entrypoint whose previous call
        # timed out (with 2 workers privsepd would hold it back).
        ctx.max_workers = max(4, int(self.conf.thread_pool_size))
        ctx.logger = logging.getLogger(self._option("logger_name"))
        # Like oslo's forked daemon, the helper keeps the service's log level
        # and its records reach the service's loggers by name.
        ctx.log_level = logging.getLogger().getEffectiveLevel()
        ctx.log_sink = _remote.log_sink
        socket_dir = self.conf.privsepd_socket_dir or self._socket_dir
        if method is Method.FORK or not (
            socket_dir or self.conf.helper_command or os.geteuid() != 0
        ):
            # Root with nothing configured: forking needs no sudo round trip.
            ctx.mode = ForkMode()
        elif socket_dir:
            if self.pypath is None:
                raise AssertionError("privsepd daemon mode requires priv_context pypath")
            self._check_pypath()
            # One socket per context, named like the context: two contexts
            # (even in one cfg_section) never share a socket or a helper.
            ctx.mode = DaemonMode(os.path.join(socket_dir, f"{self.name}.sock"))
        else:
            ctx.mode = SpawnMode(self.helper_command()[:-2])

    def stop(self) -> None:
        """Close the channel; the helper sees EOF and exits."""
        with self.start_lock:
            self.context.stop()
            self._started = False


def _remote_resolve_object(module: str, attr: str) -> Any:
    import importlib

    if not module or not attr:
        return None
    try:
        return getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
