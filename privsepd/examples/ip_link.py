import subprocess

import privsepd
from privsepd.constraints import InterfaceName, IntRange

ctx = privsepd.Context("neutron-ip", capabilities=["CAP_NET_ADMIN"])


@ctx.entrypoint(dev=InterfaceName(), mtu=IntRange(68, 9000), timeout=5)
def set_mtu_with_ip(dev: str, mtu: int) -> None:
    argv = ["/usr/sbin/ip", "link", "set", "dev", dev, "mtu", str(mtu)]
    # A program the helper runs starts with no capability at all, unless the
    # entrypoint hands it some of its own, for this one call.
    with privsepd.ambient_capabilities(["CAP_NET_ADMIN"]):
        subprocess.run(argv, env={}, check=True, capture_output=True)


if __name__ == "__main__":
    ctx.start()
    set_mtu_with_ip("eth0", 1280)
