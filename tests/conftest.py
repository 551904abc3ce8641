"""Shared test helpers.

Tests that need root or a kernel feature call :func:`require_root` /
:func:`require_feature`. Outside CI they skip with a reason; with
``PRIVSEPD_REQUIRE_ROOT=1`` (set by ``.ci/run``) they fail instead, so a CI
machine that lacks the feature can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ROOT = os.environ.get("PRIVSEPD_REQUIRE_ROOT") == "1"


def require_root() -> None:
    if os.geteuid() != 0:
        msg = "test needs root (real capabilities, chown, setuid)"
        if REQUIRE_ROOT:
            pytest.fail(msg + " but PRIVSEPD_REQUIRE_ROOT=1")
        pytest.skip(msg)


def require_feature(available: bool, what: str) -> None:
    if not available:
        msg = f"kernel feature missing: {what}"
        if REQUIRE_ROOT:
            pytest.fail(msg + " but PRIVSEPD_REQUIRE_ROOT=1")
        pytest.skip(msg)


@pytest.fixture
def root() -> None:
    """Use as a fixture argument to mark a test as needing root."""
    require_root()
