"""Old home of the fixture (oslo moved it to ``oslo_privsep.test.fixture``)."""

from privsepd.compat.oslo_privsep.test.fixture import UnprivilegedPrivsepFixture

__all__ = ["UnprivilegedPrivsepFixture"]
