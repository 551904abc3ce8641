import privsepd
from privsepd.constraints import InterfaceName, IntRange

ctx = privsepd.Context(
    "neutron",
    capabilities=["CAP_NET_ADMIN"],
    files=privsepd.Files(write=["/sys/class/net/*/mtu"]),
)


@ctx.entrypoint(dev=InterfaceName(), mtu=IntRange(68, 9000), timeout=5)
def set_mtu(dev: str, mtu: int) -> None:
    with open(f"/sys/class/net/{dev}/mtu", "w") as f:
        f.write(str(mtu))


if __name__ == "__main__":
    ctx.start()  # as root: fork + scope the helper; then drop your own privileges
    set_mtu("eth0", 1400)  # runs in the helper, after the constraints pass
