"""What the helper sends back, delivered the way oslo.privsep delivers it.

- An exception raised in an entrypoint is re-created on this (unprivileged)
  side as the same class, found by module and qualified name, with the same
  ``args`` and plain attributes (``NetlinkError.code``,
  ``ProcessExecutionError.exit_code``...). The helper only describes the
  exception (privsepd.errors.exception_detail); any import happens here.
- A log record emitted in the helper is handled by the service's logger of
  the same name.
- :func:`loopback` runs an entrypoint in-process but through the channel's
  value and exception encoding (the unit-test fixture).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from privsepd.errors import (
    DETAIL_MAX_NAME,
    RemoteDetail,
    exception_from_wire,
    exception_to_wire,
)

LOG = logging.getLogger("privsepd.compat")

#: Log records whose logger name is not a plain dotted name land here.
FALLBACK_LOGGER = "privsepd.helper"


def _dotted(name: object) -> bool:
    return (
        type(name) is str
        and 0 < len(name) <= DETAIL_MAX_NAME
        and all(part.isidentifier() for part in name.split("."))
    )


def resolve(module: str, qualname: str) -> type[Exception] | None:
    """The exception class ``module.qualname``, importing ``module`` if needed.

    Only an ``Exception`` subclass is accepted: a name that resolves to
    anything else (a function, ``SystemExit``) is not re-created.
    """
    if not (_dotted(module) and _dotted(qualname)):
        return None
    try:
        obj: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or the module's own error
        LOG.debug("cannot re-create %s.%s: %s", module, qualname, exc)
        return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def rebuild(exc: BaseException) -> BaseException:
    """The helper's exception as its own class, or ``exc`` if that cannot be."""
    detail: RemoteDetail | None = getattr(exc, "remote_detail", None)
    if detail is None:
        return exc
    cls = resolve(detail.module, detail.qualname)
    if cls is None:
        return exc
    args = tuple(detail.args)
    try:
        new = cls(*args)
    except Exception:
        try:
            new = cls.__new__(cls, *args)
        except Exception:
            return exc
    try:
        # The constructor may have reshaped its arguments: args are the
        # helper's, as pickle would restore them.
        new.args = args
    except Exception:
        pass
    for name, value in detail.attrs.items():
        try:
            setattr(new, name, value)
        except Exception:
            pass  # a read-only property: the constructor already set it
    return new


def log_sink(record: Any) -> None:
    """Handle a helper log record by the service's logger of the same name."""
    name = record.logger if _dotted(record.logger) else FALLBACK_LOGGER
    logger = logging.getLogger(name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(
            logger.makeRecord(
                name, record.levelno, "(privsep helper)", 0, record.message, None, None
            )
        )


def _through(value: Any) -> Any:
    """``value`` after one trip over the channel's encoding (or ProtocolError)."""
    from privsepd.channel.protocol import FrameDecoder, encode_frame

    return FrameDecoder().feed(encode_frame(value))[0]


def loopback(func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run ``func`` here, with arguments, result and errors as a helper returns them."""
    from privsepd.errors import ProtocolError

    call_args, call_kwargs = _through([list(args), dict(kwargs)])
    try:
        result = func(*call_args, **call_kwargs)
    except Exception as exc:
        wire = _through(list(exception_to_wire(exc)))
        raise rebuild(exception_from_wire(*wire)) from None
    try:
        return _through(result)
    except ProtocolError as exc:
        raise TypeError(f"result cannot cross the channel: {exc}") from None
