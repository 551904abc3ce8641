"""What a helper does at start: nothing the parent could have done once for all helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: pytest's own process has imported every module
# some earlier test needed, which would hide an import left to the helper.
SCRIPT = textwrap.dedent(
    """
    import sys
    from privsepd.context import Context

    ctx = Context("t-start", capabilities=["CAP_NET_ADMIN"], audit="none")

    @ctx.entrypoint
    def modules():
        return sorted(sys.modules)

    with ctx:
        in_helper = set(modules())
    print("\\n".join(sorted(in_helper - set(sys.modules))))
    """
)


def test_forked_helper_imports_no_module_its_parent_has_not_imported(root):
    # Each module a helper imports itself is imported again by every helper
    # (fork: each start; daemon: each connection): cffi's cdef in
    # helper.memory alone cost ~18 ms per helper before preload().
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
