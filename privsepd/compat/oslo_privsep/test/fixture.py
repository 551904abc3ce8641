"""``oslo_privsep.test.fixture``: run a context's entrypoints in the test process.

``UnprivilegedPrivsepFixture(context, config_override)`` clears the
context's capabilities, user and group (as oslo's does), applies
``config_override`` to the context's section, and runs every entrypoint in
this process through the channel's encoding: arguments and results cross
as they would (tuples become lists, non-msgpack values are refused) and
exceptions come back re-created, but nothing is forked and no privilege is
needed. oslo's fixture forks a helper instead.

It is a ``fixtures.Fixture`` when the ``fixtures`` package is installed
(``self.useFixture(...)``); otherwise use it as a context manager.
"""

from __future__ import annotations

from typing import Any

from privsepd.compat.oslo_privsep import priv_context

try:
    import fixtures

    _Base: Any = fixtures.Fixture
except ImportError:  # pragma: no cover - fixtures comes with oslo's test stack

    class _Base:  # type: ignore[no-redef]
        def __init__(self) -> None:
            self._cleanups: list = []

        def setUp(self) -> None:
            self._cleanups = []

        def addCleanup(self, fn: Any, *args: Any) -> None:
            self._cleanups.append((fn, args))

        def cleanUp(self) -> None:
            while self._cleanups:
                fn, args = self._cleanups.pop()
                fn(*args)

        def __enter__(self) -> Any:
            self.setUp()
            return self

        def __exit__(self, *exc: object) -> None:
            self.cleanUp()


class UnprivilegedPrivsepFixture(_Base):
    def __init__(
        self, context: priv_context.PrivContext, config_override: dict | None = None
    ) -> None:
        super().__init__()
        self.context = context
        self.config_override = dict(config_override or {})
        self.conf: Any = None

    def setUp(self) -> None:
        super().setUp()
        section = self.context.cfg_section
        if priv_context.cfg is not None:
            from oslo_config import fixture as cfg_fixture

            config = cfg_fixture.Config()
            if hasattr(self, "useFixture"):
                self.conf = self.useFixture(config).conf
            else:
                config.setUp()
                self.addCleanup(config.cleanUp)
                self.conf = config.conf
            self.conf.set_override("capabilities", [], group=section)
            for key in ("user", "group"):
                self.conf.set_override(key, None, group=section)
            for key, value in self.config_override.items():
                self.conf.set_override(key, value, group=section)
        self.context._loopback = True
        self.addCleanup(setattr, self.context, "_loopback", False)
