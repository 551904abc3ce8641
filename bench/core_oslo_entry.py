"""oslo.privsep side of bench/bench_core.py: its contexts and entrypoints.

oslo.privsep resolves an entrypoint by its dotted module path, and insists
that the module starts with the context's prefix, so the entrypoints live in
this importable module (bench/ is put on sys.path by bench_core.py).
"""

from __future__ import annotations

from oslo_privsep import capabilities as oslo_caps
from oslo_privsep import priv_context

PREFIX = "core_oslo_entry"
CAPS = [oslo_caps.CAP_NET_ADMIN]

# Long-lived helper: RTT, threaded throughput, memory.
ctx = priv_context.PrivContext(
    PREFIX, cfg_section="core_bench_oslo", pypath=__name__ + ".ctx", capabilities=CAPS
)
# Restarted over and over: start time.
ctx_start = priv_context.PrivContext(
    PREFIX,
    cfg_section="core_bench_oslo_start",
    pypath=__name__ + ".ctx_start",
    capabilities=CAPS,
)


@ctx.entrypoint
def noop():
    return None


@ctx_start.entrypoint
def noop_start():
    return None
