from privsepd.compat.oslo_privsep import capabilities as caps
from privsepd.compat.oslo_privsep import priv_context

default = priv_context.PrivContext(
    "myagent",
    cfg_section="myagent_privileged",
    pypath=__name__ + ".default",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_DAC_READ_SEARCH],
)
