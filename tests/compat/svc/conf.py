"""svc's own configuration section, registered like any OpenStack service's."""

from oslo_config import cfg

OPTS = [
    cfg.IntOpt("default_mtu", default=1400, help="MTU of the links svc creates."),
    cfg.StrOpt("link_prefix", default="svc", help="Prefix of svc's link names."),
]


def register(conf: cfg.ConfigOpts = cfg.CONF) -> None:
    conf.register_opts(OPTS, group="svc")
