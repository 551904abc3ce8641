"""svc's privsep contexts, declared as in neutron/privileged/__init__.py."""

from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

# Code says NET_ADMIN and NET_RAW; the checks narrow it from configuration.
default = priv_context.PrivContext(
    __name__,
    cfg_section="svc_privileged",
    pypath=__name__ + ".default",
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_NET_RAW],
)

# A second context in oslo's default section, as libraries often leave it.
reader = priv_context.PrivContext(
    __name__,
    pypath=__name__ + ".reader",
    capabilities=[caps.CAP_DAC_READ_SEARCH],
)
