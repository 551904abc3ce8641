"""What programs can do: the table behind ``unrestricted-program`` and friends.

Each dangerous program maps to a category (runs other programs, writes or
reads any file, changes permissions, mounts, touches the kernel, signals,
rewrites networking, creates files) and a concrete example of the abuse;
each category to a severity, an attack template and a fix. Shared by the
rootwrap and native rules and by the chaining check.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "CATEGORIES",
    "INTERPRETERS",
    "PATH_CATEGORIES",
    "SCRIPT_FLAGS",
    "SHELLS",
    "program_info",
]

# category -> (severity, attack template, fix)
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "exec": (
        "error",
        "run any program as {user}, e.g. `{example}`",
        "allow only the exact invocations the service needs (RegExpFilter with anchored "
        "arguments, or a native [[command]] with typed args); never a program that runs "
        "other programs with free arguments",
    ),
    "config-exec": (
        "error",
        "start it with an attacker-chosen config or hook that runs a program as {user}, "
        "e.g. `{example}`",
        "pin the options: RegExpFilter/native args that fix the config file path under a "
        "root-owned directory and refuse script/hook options",
    ),
    "write": (
        "error",
        "overwrite or destroy any file or device as {user}, e.g. `{example}`",
        "constrain every path argument to the service's own directory (PathFilter or native "
        "path_under) and fix the options with RegExpFilter/native args",
    ),
    "read": (
        "error",
        "read any file as {user}, e.g. `{example}`",
        "use ReadFileFilter for the exact file, or constrain the path argument",
    ),
    "perm": (
        "error",
        "take ownership of or open up any file as {user} (then edit it), e.g. `{example}`",
        "PathFilter/native path_under on the path argument and a literal owner/mode",
    ),
    "mount": (
        "error",
        "mount over system directories or a filesystem with setuid binaries, e.g. `{example}`",
        "fix device and mount point with RegExpFilter/native args (path_under, no options)",
    ),
    "kernel": (
        "error",
        "change kernel state as {user}, e.g. `{example}`",
        "allow only the exact parameter/module (RegExpFilter or native regex on the argument)",
    ),
    "kill": (
        "error",
        "signal any process, including init and other services, e.g. `{example}`",
        "use KillFilter with the target's executable and the needed signals",
    ),
    "network": (
        "warning",
        "rewrite host networking or firewall rules, e.g. `{example}`",
        "restrict subcommands and arguments with RegExpFilter or native args (ifname, cidr)",
    ),
    "create": (
        "warning",
        "create files or directories anywhere as {user}, e.g. `{example}`",
        "constrain the path argument with PathFilter or native path_under",
    ),
}

# Programs for which a free path argument is itself the hole.
PATH_CATEGORIES = {"write", "read", "perm", "mount", "config-exec"}

SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "ash", "busybox"}
INTERPRETERS = {
    "python",
    "perl",
    "ruby",
    "php",
    "node",
    "nodejs",
    "lua",
    "tclsh",
    "awk",
    "gawk",
    "mawk",
    "nawk",
}
SCRIPT_FLAGS = ("-c", "-e", "-E", "-r", "--eval", "--command")

_PROGRAMS: dict[str, tuple[str, str]] = {}


def _add(category: str, example: str, *names: str) -> None:
    for name in names:
        _PROGRAMS[name] = (category, example.replace("{p}", name))


_add("exec", "{p} -c 'cp /bin/sh /tmp/s; chmod 4755 /tmp/s'", *SHELLS)
_add("exec", "{p} -c 'import os; os.system(\"sh\")'", "python")
_add("exec", "{p} -e 'exec \"sh\"'", "perl", "ruby", "php", "lua", "tclsh")
_add("exec", '{p} -e \'require("child_process").execSync("sh")\'', "node", "nodejs")
_add("exec", "{p} 'BEGIN {system(\"sh\")}'", "awk", "gawk", "mawk", "nawk")
_add(
    "exec",
    "{p} /bin/sh",
    "env",
    "nice",
    "ionice",
    "timeout",
    "nohup",
    "chroot",
    "nsenter",
    "unshare",
    "setsid",
    "stdbuf",
    "taskset",
    "chrt",
    "xargs",
    "sudo",
    "su",
    "runuser",
    "flock",
    "watch",
    "strace",
    "ltrace",
    "gdb",
    "script",
    "systemd-run",
    "prlimit",
    "numactl",
)
_add("exec", "find / -maxdepth 0 -exec sh \\;", "find")
_add("exec", "ip netns exec any-ns sh", "ip")
_add("exec", "{p} run --privileged -v /:/host IMAGE sh", "docker", "podman", "nerdctl")
_add("exec", "{p} exec CONTAINER sh", "ctr", "crictl", "runc", "kubectl")
_add("exec", "systemctl start/enable any unit, or edit one with systemctl edit", "systemctl")
_add("exec", "tar cf /dev/null /etc --checkpoint=1 --checkpoint-action=exec=sh", "tar")
_add("exec", "rsync -e 'sh -c \"sh 0<&2 1>&2\"' x:/ /", "rsync")
_add("exec", "tcpdump -i lo -w /dev/null -z /tmp/payload -G 1", "tcpdump")
_add("exec", "{p} then :!sh", "vi", "vim", "less", "more", "man", "nano")
_add("exec", "ssh -o ProxyCommand='sh -c id' x", "ssh", "scp")
_add("exec", "git -c core.pager='sh -c id' log", "git")
_add("exec", "setcap cap_setuid+ep /tmp/python", "setcap")
_add("exec", "crontab /tmp/evil-crontab", "crontab", "at")
_add("exec", "dhclient -sf /tmp/payload eth0", "dhclient")
_add("exec", "make -f /tmp/Makefile", "make")
_add("exec", "{p} install /tmp/evil.pkg", "dpkg", "rpm", "apt-get", "yum", "dnf", "pip")
_add("config-exec", "dnsmasq --dhcp-script=/tmp/payload", "dnsmasq")
_add("config-exec", "keepalived -f /tmp/conf (notify /tmp/payload)", "keepalived")
_add("config-exec", "haproxy -f /tmp/conf (external-check command /tmp/payload)", "haproxy")
_add("config-exec", "radvd -C /tmp/conf -p /etc/ld.so.preload", "radvd")
_add("config-exec", "conntrackd -C /tmp/conf", "conntrackd")
_add(
    "config-exec",
    "privsep-helper --config-file /tmp/x.conf (the config picks the helper's user and "
    "capabilities)",
    "privsep-helper",
)
_add("config-exec", "ovs-vsctl set-manager ptcp:6640 (open a root control socket)", "ovs-vsctl")
_add("write", "tee /etc/sudoers.d/x", "tee")
_add("write", "dd if=/tmp/x of=/etc/shadow", "dd")
_add("write", "{p} /tmp/x /etc/shadow", "cp", "mv", "install", "ln")
_add("write", "sed -i 's/^root:[^:]*:/root::/' /etc/shadow (and sed 'e' runs commands)", "sed")
_add("write", "{p} /etc/shadow", "truncate", "rm", "shred", "unlink")
_add(
    "write",
    "{p} /dev/sda",
    "mkfs",
    "mke2fs",
    "mkswap",
    "wipefs",
    "parted",
    "sgdisk",
    "sfdisk",
    "fdisk",
    "tune2fs",
)
_add("write", "qemu-img convert -O raw /tmp/x /etc/shadow", "qemu-img")
_add("write", "qemu-nbd -c /dev/nbd0 /etc/shadow", "qemu-nbd")
_add("write", "dmsetup create x --table '0 8 linear /dev/sda 0'", "dmsetup")
_add("write", "losetup /dev/loop0 /etc/shadow", "losetup", "kpartx")
_add("write", "mknod /tmp/sda b 8 0 (raw disk access)", "mknod")
_add("write", "cryptsetup erase /dev/sda", "cryptsetup")
_add("perm", "chown nova /etc/shadow", "chown", "chgrp")
_add("perm", "chmod 0666 /etc/shadow", "chmod")
_add("perm", "setfacl -m u:nova:rw /etc/shadow", "setfacl")
_add("perm", "chattr -i /etc/passwd", "chattr")
_add("mount", "mount --bind /tmp/x /etc", "mount")
_add("mount", "umount /proc", "umount")
_add("read", "{p} /etc/shadow", "cat", "head", "tail", "od", "xxd", "base64", "strings", "nl")
_add("read", "grep '' /etc/shadow", "grep", "egrep", "zcat")
_add("kernel", "sysctl -w kernel.core_pattern='|/tmp/payload' (runs as root on a crash)", "sysctl")
_add("kernel", "{p} /tmp/rootkit.ko", "insmod", "modprobe", "kexec")
_add("kill", "{p} -9 1", "kill", "pkill", "killall")
_add(
    "network",
    "{p} -F (flush the host firewall)",
    "iptables",
    "ip6tables",
    "iptables-restore",
    "ip6tables-restore",
    "ebtables",
    "arptables",
    "nft",
    "ipset",
)
_add("network", "{p} del the host's uplink", "tc", "brctl", "bridge", "ovs-ofctl", "conntrack")
_add("create", "{p} /etc/cron.d/x", "touch", "mkdir")

_VERSIONED = re.compile(r"(python|perl|ruby|php|lua|tclsh|node)[0-9.]*\Z")
_SUFFIXED = re.compile(r"(mkfs|mke2fs|fsck|iptables|ip6tables)[.-][\w.-]+\Z")


def program_info(exec_path: str) -> tuple[str, str] | None:
    """(category, example) for a dangerous program, else None."""
    base = os.path.basename(exec_path)
    if base in _PROGRAMS:
        return _PROGRAMS[base]
    for regex in (_VERSIONED, _SUFFIXED):
        m = regex.match(base)
        if m and m.group(1) in _PROGRAMS:
            category, example = _PROGRAMS[m.group(1)]
            return category, example.replace(m.group(1), base, 1)
    return None
