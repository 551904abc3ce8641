import fcntl
import logging
import socket
import struct

from myagent import privileged

LOG = logging.getLogger(__name__)
SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922


def _ifreq(device, value=0):
    return struct.pack("16si20x", device.encode(), value)


@privileged.default.entrypoint
def set_mtu(device, mtu):
    LOG.debug("setting MTU of %s to %d", device, mtu)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFMTU, _ifreq(device, mtu))


@privileged.default.entrypoint
def get_mtu(device):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return struct.unpack_from("16si", fcntl.ioctl(s, SIOCGIFMTU, _ifreq(device)))[1]
