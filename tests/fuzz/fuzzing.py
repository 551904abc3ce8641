"""What the fuzz targets share: seed corpora, example budgets, a hang guard.

Seeds live in ``tests/fuzz/corpus/<target>/`` and run as ordinary
parametrized tests; the generated examples come from hypothesis, derandomized
under CI (tests/conftest.py). ``PRIVSEPD_FUZZ_SCALE`` multiplies every
target's example count for a longer local run (e.g. 20).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings

CORPUS = Path(__file__).parent / "corpus"
REPO = Path(__file__).resolve().parent.parent.parent
#: A generous per-example bound: every target decides one input in well under 50 ms.
DEADLINE = timedelta(milliseconds=2000)
HANG_AFTER = 5.0


def seeds(target: str, pattern: str = "*") -> list[Path]:
    files = sorted((CORPUS / target).glob(pattern))
    assert files, f"the {target} seed corpus went missing"
    return files


def budget(examples: int) -> settings:
    """Settings for one target: its example count (scaled) and the per-example deadline."""
    scale = float(os.environ.get("PRIVSEPD_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, int(examples * scale)),
        deadline=DEADLINE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(Exception):
    """An input kept the code under test busy past HANG_AFTER seconds."""


@contextmanager
def bounded(seconds: float = HANG_AFTER) -> Iterator[None]:
    """Fail an example that runs too long instead of hanging the suite.

    hypothesis' deadline only measures an example after it returns; this
    interrupts one that never does (SIGALRM in the main thread).
    """

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
