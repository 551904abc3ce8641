"""oslo.privsep / oslo.rootwrap compatibility: move over by changing imports.

- ``oslo_privsep.X`` -> ``privsepd.compat.oslo_privsep.X`` for every module
  services import (``priv_context``, ``capabilities``, ``comm``, ``daemon``,
  ``test.fixture``);
- ``oslo_rootwrap.client.Client`` -> ``privsepd.compat.rootwrap_client.Client``.

``from privsepd.compat import priv_context, capabilities`` keeps working.
The walk-through, and what deliberately differs, is docs/migration.md.
"""

from privsepd.compat.oslo_privsep import capabilities, priv_context

__all__ = ["capabilities", "priv_context"]
