"""The outcome of matching one argv: :class:`Decision` and its :class:`Candidate` trace.

Shared by every front end (``ctx.execute``, ``privsepd-rootwrap``,
``privsepd filters explain``); :mod:`privsepd.policy.filters` re-exports
both names. Plain classes, not a dataclass or typing.NamedTuple:
privsepd-rootwrap imports this on every run, and dataclasses (with inspect,
ast, dis) and typing cost it ~12 ms of start-up.
"""

from __future__ import annotations

from privsepd._record import record

#: oslo-rootwrap's exit codes for the two refusals a match can end in.
RC_UNAUTHORIZED = 99
RC_NOEXECFOUND = 96

TYPE_CHECKING = False  # the type checker treats this name as true
if TYPE_CHECKING:
    from typing import NamedTuple

    from privsepd.policy.filters import Filter, Miss

    class _CandidateFields(NamedTuple):
        filter: Filter
        miss: Miss | None

else:
    _CandidateFields = record("Candidate", ("filter", "miss"))

__all__ = ["RC_NOEXECFOUND", "RC_UNAUTHORIZED", "Candidate", "Decision"]


class Candidate(_CandidateFields):
    """One filter examined for a command, and why it did not win (None: it did)."""

    __slots__ = ()


class Decision:
    """The outcome of matching one argv against a policy.

    ``outcome`` is ``allow``, ``no-match`` (oslo: NoFilterMatched, rc 99),
    ``invalid`` (argv holds NUL or unencodable text: no execve could carry it),
    ``not-executable`` (oslo: FilterMatchNotExecutable, rc 96; ``filter`` is
    the first such match) or ``bad-user`` (run_as unknown; oslo crashes).
    ``env`` holds only the variables to add; ``uid``/``gid`` are the run-as
    user's and its primary group (the executor also drops supplementary
    groups, which oslo never does). ``trace`` lists every candidate examined
    in policy order; ``chain`` is the decision for the chained command of a
    chaining filter.

    Immutable; a plain class for start-up time (see the module docstring).
    """

    __slots__ = (
        "argv",
        "outcome",
        "filter",
        "executable",
        "command",
        "run_as",
        "uid",
        "gid",
        "env",
        "trace",
        "chain",
    )
    argv: tuple[str, ...]
    outcome: str
    filter: Filter | None
    executable: str | None
    command: tuple[str, ...] | None
    run_as: str | None
    uid: int | None
    gid: int | None
    env: dict[str, str]
    trace: tuple[Candidate, ...]
    chain: Decision | None

    def __init__(
        self,
        argv: tuple[str, ...],
        outcome: str,
        filter: Filter | None = None,  # noqa: A002 -- the field's name
        executable: str | None = None,
        command: tuple[str, ...] | None = None,
        run_as: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        env: dict[str, str] | None = None,
        trace: tuple[Candidate, ...] = (),
        chain: Decision | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "argv", argv)
        init(self, "outcome", outcome)
        init(self, "filter", filter)
        init(self, "executable", executable)
        init(self, "command", command)
        init(self, "run_as", run_as)
        init(self, "uid", uid)
        init(self, "gid", gid)
        init(self, "env", {} if env is None else env)
        init(self, "trace", trace)
        init(self, "chain", chain)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Decision is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Decision is immutable: cannot delete {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in Decision.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Decision:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())  # TypeError: env is a dict (as with the dataclass)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in Decision.__slots__)
        return f"Decision({fields})"

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    @property
    def rc(self) -> int | None:
        """oslo-rootwrap's exit code for a refusal, None when allowed."""
        if self.outcome == "allow":
            return None
        if self.outcome == "not-executable":
            return RC_NOEXECFOUND
        return RC_UNAUTHORIZED

    @property
    def path_arguments(self) -> dict[int, tuple[str, bool]]:
        """Positions in ``command`` that hold path arguments: (base, must_exist).

        Every filter along a chain contributes its own; a chained command's
        argv is the tail of the final command, word for word. Here rather
        than in :mod:`privsepd.paths`, so privsepd-rootwrap imports that only
        for a command that has path arguments.
        """
        out: dict[int, tuple[str, bool]] = {}
        d: Decision | None = self
        offset = 0
        while d is not None and d.filter is not None:
            spots = getattr(d.filter, "path_arguments", None)
            if spots is not None:
                for i, spec in spots(d.argv).items():
                    out[offset + i] = spec
            if d.chain is None:
                break
            offset += len(d.argv) - len(d.chain.argv)
            d = d.chain
        return out

    @property
    def deviations(self) -> tuple[Candidate, ...]:
        """Candidates refused only by privsepd's security fixes."""
        return tuple(c for c in self.trace if c.miss is not None and c.miss.deviation)

    @property
    def reason(self) -> str:
        """One line saying why (for logs and audit)."""
        if self.outcome == "allow" and self.filter is not None:
            return f"allowed by {self.filter.kind} {self.filter.source}"
        if self.outcome == "bad-user" and self.filter is not None:
            return f"{self.filter.source}: run_as user {self.filter.run_as!r} does not exist"
        if self.outcome == "not-executable" and self.filter is not None:
            return f"{self.filter.source}: executable {self.filter.exec_path!r} not found"
        if self.outcome == "invalid":
            return "argv contains NUL or characters that cannot be encoded"
        devs = self.deviations
        if devs:
            c = devs[0]
            return f"no filter matched ({c.filter.source} refused: {c.miss})"
        broken = self._broken()
        return f"no filter matched; {broken}" if broken else "no filter matched"

    def _broken(self) -> str | None:
        """Why a candidate rule could not be used at all (a pattern compile_regex refused)."""
        misses = (c.miss for c in self.trace if c.miss is not None)
        return next((m.detail for m in misses if ": invalid regex " in m.detail), None)

    @property
    def message(self) -> str:
        """oslo-rootwrap's stderr message (without the 'execname: ' prefix)."""
        if self.outcome == "allow":
            return ""
        if self.outcome == "not-executable" and self.filter is not None:
            return (
                f"Executable not found: {self.filter.exec_path} (filter match = {self.filter.name})"
            )
        if self.outcome == "bad-user" and self.filter is not None:
            return (
                f"Unauthorized command: {' '.join(self.argv)} "
                f"(run_as user {self.filter.run_as!r} does not exist)"
            )
        broken = self._broken()  # oslo denies such a rule too (or crashes): say which and why
        why = f"no filter matched; {broken}" if broken else "no filter matched"
        return f"Unauthorized command: {' '.join(self.argv)} ({why})"
