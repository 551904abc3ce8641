"""oslo.privsep-compatible front end: move over by changing an import.

``from oslo_privsep import priv_context`` becomes
``from privsepd.compat import priv_context`` (and ``capabilities`` likewise);
``PrivContext(prefix, cfg_section=..., pypath=..., capabilities=[...])``,
``@ctx.entrypoint``, ``@ctx.entrypoint_with_timeout(t)``,
``ctx.start(method)``, ``ctx.stop()`` and ``set_client_mode`` keep their
meaning. What deliberately differs (see README):

- the helper leaves uid 0 for an unprivileged user unless ``stay_root=True``
  (oslo's helper stays root and so owns every root-owned file);
- ``Method.ROOTWRAP`` connects to ``privsepd serve`` at
  ``/run/privsepd/<cfg_section>.sock`` instead of running ``sudo
  privsep-helper``: no helper command line exists to be abused;
- nothing is configured through oslo.config; nothing is imported by name.
"""

from __future__ import annotations

import enum
import logging
import os
import types
from collections.abc import Callable, Iterable
from typing import Any

from privsepd.context import Context
from privsepd.kernel_names import CAP_NAMES, CAPABILITIES
from privsepd.modes import DaemonMode

SOCKET_DIR = "/run/privsepd"


class Method(enum.Enum):
    FORK = 1
    ROOTWRAP = 2


def _cap_name(cap: int | str) -> str:
    if isinstance(cap, str):
        return cap
    try:
        return CAP_NAMES[cap]
    except KeyError:
        raise ValueError(f"unknown capability number {cap}") from None


class PrivContext:
    """oslo.privsep's PrivContext, backed by a privsepd Context."""

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
    ) -> None:
        if capabilities is None:
            raise ValueError("capabilities is a required parameter")
        self.prefix = prefix
        self.cfg_section = cfg_section
        self.pypath = pypath
        self.timeout = timeout
        self.context = Context(
            cfg_section,
            [_cap_name(c) for c in capabilities],
            user=user,
            group=group,
            stay_root=stay_root,
            timeout=timeout or 30.0,
            logger=logging.getLogger(logger_name),
        )

    def __repr__(self) -> str:
        return f"PrivContext(cfg_section={self.cfg_section})"

    def set_client_mode(self, enabled: bool) -> None:
        self.context.client_mode = enabled

    def entrypoint(self, func: Callable[..., Any]) -> Callable[..., Any]:
        self._check_prefix(func)
        return self.context.entrypoint(func)

    def entrypoint_with_timeout(self, timeout: float) -> Callable[[Callable], Callable]:
        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            self._check_prefix(func)
            return self.context.entrypoint(timeout=timeout)(func)

        return wrap

    def is_entrypoint(self, func: Callable[..., Any]) -> bool:
        entry = getattr(func, "privsepd_entrypoint", None)
        return entry is not None and entry.name in self.context.entrypoints

    def _check_prefix(self, func: Callable[..., Any]) -> None:
        if not func.__module__.startswith(self.prefix):
            raise AssertionError(f'{self!r} entrypoints must be below "{self.prefix}"')

    def start(self, method: Method = Method.ROOTWRAP) -> None:
        if method is Method.ROOTWRAP and os.geteuid() != 0:
            self.context.mode = DaemonMode(os.path.join(SOCKET_DIR, f"{self.cfg_section}.sock"))
        self.context.start()

    def stop(self) -> None:
        self.context.stop()


priv_context = types.SimpleNamespace(PrivContext=PrivContext, Method=Method)
capabilities = types.SimpleNamespace(**CAPABILITIES)
