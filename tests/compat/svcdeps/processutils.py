"""Like oslo_concurrency.processutils: run a command, raise on failure."""

from __future__ import annotations

import subprocess


class ProcessExecutionError(Exception):
    def __init__(self, stdout=None, stderr=None, exit_code=None, cmd=None, description=None):
        super().__init__(stdout, stderr, exit_code, cmd, description)
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout
        self.cmd = cmd
        self.description = description

    def __str__(self) -> str:
        return (
            f"{self.description or 'Unexpected error while running command.'}\n"
            f"Command: {self.cmd}\nExit code: {self.exit_code}\n"
            f"Stdout: {self.stdout!r}\nStderr: {self.stderr!r}"
        )


def execute(*cmd: str) -> tuple[str, str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProcessExecutionError(proc.stdout, proc.stderr, proc.returncode, " ".join(cmd))
    return proc.stdout, proc.stderr
