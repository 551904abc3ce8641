"""python-prctl where it serves: the helper's process title, and a second,
independent read-back of its capabilities and securebits.

The title makes a helper recognisable in ``ps`` the way sshd shows
``[priv]``: ``privsepd-helper: neutron [CAP_NET_ADMIN]``. The read-back asks
the kernel through libcap (python-prctl's ``capget`` and
``PR_CAPBSET_READ``/``PR_GET_SECUREBITS``), a binding that shares no code
with our cffi calls, and must agree with ``/proc/thread-self/status``; a
disagreement means one of the two readers is wrong, and the helper refuses
to serve rather than guess which.

python-prctl is optional: it is CPython-only (its C extension does not
import on PyPy, ``Py_GetArgcArgv``). Without it the title is the 15-byte
``comm`` set with PR_SET_NAME through our own cffi binding (what
``ps -o comm``, ``top`` and ``/proc/PID/comm`` show; ``/proc/PID/cmdline``
keeps the original command line), and verification rests on ``/proc`` and
cffi alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privsepd.errors import ScopingError
from privsepd.helper import kernel

if TYPE_CHECKING:
    from privsepd.helper.scoping import ScopeReport

_prctl: Any
try:
    import prctl as _prctl
except ImportError:  # PyPy, or an install without the optional dependency
    _prctl = None

HAVE_PYTHON_PRCTL = _prctl is not None
COMM = "privsepd-helper"  # exactly TASK_COMM_LEN - 1 = 15 bytes

__all__ = [
    "COMM",
    "HAVE_PYTHON_PRCTL",
    "PrctlReading",
    "helper_title",
    "prctl_readback",
    "set_title",
    "verify_readback",
]


def helper_title(context: str, capabilities: Iterable[str]) -> str:
    """``privsepd-helper: CONTEXT [CAP_A, CAP_B]`` (``[]`` when it keeps none)."""
    return f"{COMM}: {context} [{', '.join(sorted(capabilities))}]"


_argv_found = False  # python-prctl has located argv (it caches it): later calls are safe


def _environ_untouched() -> bool:
    """True while ``environ[0]`` is still the kernel's first environment string.

    On Python 3, python-prctl finds argv by walking back from ``environ[0]``;
    once the environment was cleared or its first variable unset (the
    helper's scrub does both), that walk runs through the heap and crashes.
    """
    try:
        import ctypes

        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        env_start = int(fields[50 - 3])  # proc(5) field 50, env_start; the list starts at 3
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
        return bool(environ) and environ[0] == env_start
    except (OSError, ValueError, IndexError, AttributeError):
        return False


def set_title(title: str) -> str:
    """Set this process's title; return how: ``"cmdline"`` or ``"comm"`` only.

    The command line is rewritten only where python-prctl can do it safely
    (see :func:`_environ_untouched`); ``comm`` is always set.
    """
    global _argv_found
    if _prctl is not None and (_argv_found or _environ_untouched()):
        _prctl.set_name(COMM)
        _prctl.set_proctitle(title)
        _argv_found = True
        return "cmdline"
    kernel.set_name(COMM)
    return "comm"


@dataclass(frozen=True)
class PrctlReading:
    """Capability sets and securebits as python-prctl (libcap) reads them.

    ``known`` is the set of capabilities python-prctl was built to know;
    newer ones (e.g. CAP_CHECKPOINT_RESTORE) can only be compared via /proc.
    """

    known: frozenset[str]
    cap_eff: frozenset[str]
    cap_prm: frozenset[str]
    cap_inh: frozenset[str]
    cap_bnd: frozenset[str]
    securebits: int


def prctl_readback() -> PrctlReading | None:
    """Read the calling thread's capabilities and securebits, or None without python-prctl."""
    if _prctl is None:
        return None
    names = [n for n in _prctl.ALL_CAP_NAMES if n != "last_cap"]

    def held(sets: Any) -> frozenset[str]:
        return frozenset(f"CAP_{n.upper()}" for n in names if getattr(sets, n))

    return PrctlReading(
        known=frozenset(f"CAP_{n.upper()}" for n in names),
        cap_eff=held(_prctl.cap_effective),
        cap_prm=held(_prctl.cap_permitted),
        cap_inh=held(_prctl.cap_inheritable),
        cap_bnd=held(_prctl.capbset),
        securebits=_prctl.get_securebits(),
    )


def verify_readback(reading: PrctlReading, report: ScopeReport) -> None:
    """Raise ScopingError naming every set where python-prctl and /proc disagree."""
    diffs = []
    for field in ("cap_eff", "cap_prm", "cap_inh", "cap_bnd"):
        via_prctl = getattr(reading, field)
        via_proc = getattr(report, field) & reading.known
        if via_prctl != via_proc:
            diffs.append(f"{field}: python-prctl {sorted(via_prctl)}, /proc {sorted(via_proc)}")
    if report.securebits is not None and reading.securebits != report.securebits:
        diffs.append(
            f"securebits: python-prctl {reading.securebits:#x}, prctl {report.securebits:#x}"
        )
    if diffs:
        raise ScopingError("independent read-back disagrees: " + "; ".join(diffs))
