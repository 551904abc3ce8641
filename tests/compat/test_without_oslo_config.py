"""Without oslo.config the constructor's arguments configure the context."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_root

SCRIPT = """
import json, os, sys
sys.modules["oslo_config"] = None  # importing it now raises ImportError
from privsepd.compat.oslo_privsep import priv_context

ctx = priv_context.PrivContext(
    "__main__", cfg_section="plain", capabilities=["CAP_NET_ADMIN"], user="nobody"
)

@ctx.entrypoint
def whoami():
    with open(f"/proc/{os.getpid()}/status") as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    return [os.getuid(), int(st["CapEff"], 16)]

ctx.start(priv_context.Method.FORK)
print(json.dumps({
    "cfg": priv_context.cfg is None,
    "conf": [ctx.conf.capabilities, ctx.conf.user, ctx.conf.logger_name],
    "helper": whoami(),
}))
ctx.stop()
"""


def test_constructor_arguments_configure_the_helper_without_oslo_config():
    require_root()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {
        "cfg": True,
        "conf": [[12], "nobody", "oslo_privsep.daemon"],
        "helper": [65534, 1 << 12],
    }
