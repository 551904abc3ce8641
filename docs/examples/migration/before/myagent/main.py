import sys  # noqa: I001 (the import swap changes the order)

from oslo_config import cfg
from oslo_privsep import priv_context

from myagent.privileged import link


def main(argv=None):
    cfg.CONF(argv if argv is not None else sys.argv[1:], project="myagent")
    priv_context.init(root_helper=["sudo"])
    link.set_mtu("lo", 1400)
    return link.get_mtu("lo")
