"""What several benchmarks share: the machine description and a trusted base directory.

Imported by the ``bench_*.py`` scripts, which run as ``python bench/NAME.py``
(so ``bench/`` is on sys.path).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(*packages: str) -> dict[str, str]:
    """Date, kernel, CPUs, load at start, interpreter and each package's version.

    Results on a shared VM mean little without the load they were taken at.
    """
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": " ".join(platform.uname()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    info.update((package, version(package)) for package in packages)
    return info


def trusted_base(prefix: str = "privsepd-bench-") -> str:
    """A fresh root-owned 0755 directory whose chain passes the policy trust check.

    (Not under /tmp: world-writable, so privsepd refuses policy below it.)
    """
    for parent in ("/run", "/var/lib", "/root"):
        st = os.stat(parent)
        if st.st_uid == 0 and not st.st_mode & 0o022:
            path = tempfile.mkdtemp(prefix=prefix, dir=parent)
            os.chmod(path, 0o755)
            return path
    raise SystemExit("no root-owned, non-writable base directory")


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own CPU, reaped children's CPU) of ``pid`` in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, (int(fields[13]) + int(fields[14])) / _TICK


def thread_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all of ``pid``'s live threads.

    A thread that ended takes its count with it: a slight undercount at worst.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total
