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
    _HAVE_FIXTURES = True
except ImportError:
    _HAVE_FIXTURES = False

    class _Base:  # type: ignore[no-redef]
        def __init__(self) -> None:
            self._cleanups: list = []

        def setUp(self) -> None:
            self._cleanups = []

        def addCleanup(self, fn: Any, *args: Any, **kwargs: Any) -> None:
            self._cleanups.append((fn, args, kwargs))

        def cleanUp(self) -> None:
            while self._cleanups:
                fn, args, kwargs = self._cleanups.pop()
                fn(*args, **kwargs)

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
            overrides = {"capabilities": [], "user": None, "group": None}
            overrides.update(self.config_override)
            if _HAVE_FIXTURES:
                from oslo_config import fixture as cfg_fixture

                self.conf = self.useFixture(cfg_fixture.Config()).conf
            else:
                self.conf = priv_context.cfg.CONF
                for key in overrides:
                    self.addCleanup(self.conf.clear_override, key, group=section)
            for key, value in overrides.items():
                self.conf.set_override(key, value, group=section)
        self.context._loopback = True
        self.addCleanup(setattr, self.context, "_loopback", False)
