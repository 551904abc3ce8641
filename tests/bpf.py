"""A classic-BPF interpreter for the subset privsepd's seccomp programs use.

Tests run the generated programs through it to check every branch without
installing a filter (the kernel-level tests install them for real).
"""

from __future__ import annotations

from privsepd.helper import kernel


def run_bpf(prog: list[tuple], nr: int, arch: int, arg0: int = 0) -> int:
    """The action ``prog`` returns for syscall ``nr`` on ``arch`` with args[0] = ``arg0``."""
    data = {0: nr, 4: arch, 16: arg0 & 0xFFFFFFFF, 20: arg0 >> 32}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == kernel.BPF_LD_W_ABS:
            acc = data[k]
        elif code == kernel.BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == kernel.BPF_JGE_K:
            pc += jt if acc >= k else jf
        elif code == kernel.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
