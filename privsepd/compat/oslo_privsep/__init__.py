"""``oslo_privsep``, module for module, backed by privsepd.

Replace ``oslo_privsep`` with ``privsepd.compat.oslo_privsep`` in imports:
``priv_context``, ``capabilities``, ``comm``, ``daemon`` and
``test.fixture`` hold the names services use. What deliberately differs is
listed in docs/migration.md.
"""
