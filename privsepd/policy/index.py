"""Compile an ordered filter list once into an index for matching.

oslo.rootwrap tries every filter for every command, so matching cost grows
with the number of rules. Almost every filter can only accept a few values
of ``argv[0]`` (its executable's path or basename, ``kill``, ``cat``, ``ip``,
a literal first regexp), so :class:`FilterIndex` buckets filters by those
keys; filters that cannot tell (a first regexp with metacharacters) sit in a
small fallback bucket that is merged into every lookup. EnvFilters are keyed
by the command that follows the ``NAME=VALUE`` words. Candidates are always
examined in policy order, so the first match is oslo's first match.

Matching follows oslo's ``match_filter``: the first filter that accepts and
whose executable exists wins; a chaining filter only accepts if its chained
command is accepted by a non-chaining filter with the same run_as; if some
filter accepted but no executable was found, the outcome is
``not-executable`` (oslo's FilterMatchNotExecutable), else ``no-match``.

One oslo quirk is handled here rather than in the filters: oslo's
EnvFilter pops a leading ``env`` from the argv list it shares with every
filter tried after it. privsepd never mutates argv; instead it refuses what
only that mutation would let through (miss code ``env-argv-mutation``).
"""

from __future__ import annotations

import gc
import os

from privsepd.policy.filters import (
    Candidate,
    Decision,
    EnvFilter,
    Filter,
    Miss,
    env_view,
)

TYPE_CHECKING = False  # no collections.abc at run time (privsepd-rootwrap start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FilterIndex"]

_NO_POSITIONS: tuple[int, ...] = ()


def _encodable(word: str) -> bool:
    """True if word can be an execve() argument (what os.fsencode accepts)."""
    try:
        os.fsencode(word)
    except UnicodeError:
        return False
    return True


def _leading_env(argv: Sequence[str]) -> int:
    n = 0
    for word in argv:
        if word != "env":
            break
        n += 1
    return n


def _env_command(view: Sequence[str]) -> str | None:
    """The word an EnvFilter compares with its command (oslo's quirks kept)."""
    names = set()
    for arg in view:
        if "=" not in arg:
            break
        names.add(arg.partition("=")[0])
    if len(names) < len(view):
        return view[len(names)]
    return None


class FilterIndex:
    """Filters bucketed by ``argv[0]``; ``match(argv)`` returns a Decision."""

    def __init__(self, filters: Sequence[Filter], exec_dirs: Sequence[str] = ()) -> None:
        enabled = gc.isenabled()
        gc.disable()  # many small acyclic objects: the cyclic GC only costs time
        try:
            self._build(filters, exec_dirs)
        finally:
            if enabled:
                gc.enable()

    def _build(self, filters: Sequence[Filter], exec_dirs: Sequence[str]) -> None:
        self.filters: tuple[Filter, ...] = tuple(filters)
        self.exec_dirs: tuple[str, ...] = tuple(exec_dirs)
        buckets: dict[str, list[int]] = {}
        env_buckets: dict[str, list[int]] = {}
        fallback: list[int] = []
        env_positions: list[int] = []
        env_by_user: dict[str, list[int]] = {}
        default_keys = Filter.index_keys
        for pos, filt in enumerate(self.filters):
            if type(filt).index_keys is default_keys:  # fast path: exec_path / basename
                path = filt.exec_path
                base = path[path.rfind("/") + 1 :]
                buckets.setdefault(path, []).append(pos)
                if base != path:
                    buckets.setdefault(base, []).append(pos)
                continue
            if isinstance(filt, EnvFilter):
                env_positions.append(pos)
                if not filt.chaining:
                    env_by_user.setdefault(filt.run_as, []).append(pos)
                for key in filt.env_keys():
                    env_buckets.setdefault(key, []).append(pos)
                continue
            keys = filt.index_keys()
            if keys is None:
                fallback.append(pos)
                continue
            for key in keys:
                buckets.setdefault(key, []).append(pos)
        self._fallback = tuple(fallback)
        self._raw_buckets = buckets
        # key -> positions merged with the fallback, filled on first lookup
        self._buckets: dict[str, tuple[int, ...]] = {}
        self._env_buckets = {k: tuple(v) for k, v in env_buckets.items()}
        self._env_positions = env_positions
        self._env_by_user = env_by_user

    def __len__(self) -> int:
        return len(self.filters)

    @property
    def fallback(self) -> tuple[Filter, ...]:
        """Filters examined for every command (they cannot be keyed)."""
        return tuple(self.filters[p] for p in self._fallback)

    # -- candidates ----------------------------------------------------------
    def _positions(self, argv: Sequence[str]) -> Sequence[int]:
        first = argv[0]
        if first != "env" and "=" not in first and not first.endswith("\n"):
            merged = self._buckets.get(first)
            if merged is None:
                merged = self._bucket(first)
            return merged
        found: set[int] = set(self._fallback)
        views = [argv]
        if first == "env":
            # oslo may pop one 'env' per EnvFilter tried: every such view
            lead = min(_leading_env(argv), len(self._env_positions))
            views.extend(argv[k:] for k in range(1, lead + 1) if len(argv) > k)
        for view in views:
            word = view[0]
            found.update(self._raw_buckets.get(word, ()))
            if word.endswith("\n"):
                found.update(self._raw_buckets.get(word[:-1], ()))
            command = _env_command(env_view(view))
            if command is not None:
                found.update(self._env_buckets.get(command, ()))
        return sorted(found)

    def _bucket(self, key: str) -> tuple[int, ...]:
        raw = self._raw_buckets.get(key)
        if raw is None:
            return self._fallback  # not cached: keys come from the caller
        merged = tuple(sorted({*raw, *self._fallback})) if self._fallback else tuple(raw)
        self._buckets[key] = merged
        return merged

    def candidates(self, argv: Sequence[str]) -> list[Filter]:
        """Filters that may accept argv, in policy order (for explain tools)."""
        if not argv:
            return []
        return [self.filters[p] for p in self._positions(argv)]

    # -- matching ------------------------------------------------------------
    def match(self, argv: Sequence[str]) -> Decision:
        """Decide argv: oslo's first match, minus its documented holes."""
        argv = tuple(argv)
        for word in argv:
            if type(word) is not str or "\0" in word or not _encodable(word):
                return Decision(argv, "invalid")
        return self._scan(argv, None)

    def _scan(self, argv: tuple[str, ...], leaf_run_as: str | None) -> Decision:
        if not argv:
            return Decision(argv, "no-match")
        filters = self.filters
        if leaf_run_as is None:
            env_positions: Sequence[int] = self._env_positions
        else:
            env_positions = self._env_by_user.get(leaf_run_as, ())
        mutable = argv[0] == "env" and bool(env_positions)
        trace: list[Candidate] = []
        not_executable: Filter | None = None
        for pos in self._positions(argv):
            filt = filters[pos]
            if leaf_run_as is not None and (filt.chaining or filt.run_as != leaf_run_as):
                continue
            miss = filt.check(argv)
            if mutable:
                miss = self._mutation_miss(argv, filt, pos, env_positions, miss)
            chain: Decision | None = None
            if miss is None and filt.chaining:
                miss, chain = self._check_chain(filt, argv)
            if miss is None:
                executable = filt.resolve(self.exec_dirs)
                if not executable:
                    if not_executable is None:
                        not_executable = filt
                    trace.append(
                        Candidate(filt, Miss("not-executable", f"{filt.exec_path!r} not found"))
                    )
                    continue
                trace.append(Candidate(filt, None))
                user = filt.user()
                if user is None:
                    return Decision(
                        argv, "bad-user", filt, executable, run_as=filt.run_as, trace=tuple(trace)
                    )
                return Decision(
                    argv,
                    "allow",
                    filt,
                    executable,
                    tuple(filt.command(argv, executable)),
                    filt.run_as,
                    user[0],
                    user[1],
                    filt.environment(argv),
                    tuple(trace),
                    chain,
                )
            trace.append(Candidate(filt, miss))
        if not_executable is not None:
            return Decision(argv, "not-executable", not_executable, trace=tuple(trace))
        return Decision(argv, "no-match", trace=tuple(trace))

    @staticmethod
    def _mutation_miss(
        argv: tuple[str, ...],
        filt: Filter,
        pos: int,
        env_positions: Sequence[int],
        miss: Miss | None,
    ) -> Miss | None:
        """Refuse what depends on oslo having popped 'env' off the shared argv."""
        from bisect import bisect_left  # here: a C extension privsepd-rootwrap rarely needs

        popped = min(bisect_left(env_positions, pos), _leading_env(argv))
        if popped == 0:
            return miss
        is_env = isinstance(filt, EnvFilter)
        if is_env and popped < 2 and (len(argv) < 2 or argv[1] != "env"):
            return miss  # oslo's view equals privsepd's
        oslo_view = argv[popped:]
        oslo_accepts = bool(oslo_view) and filt.check(oslo_view, strict=False) is None
        if oslo_accepts or miss is None:
            return Miss(
                "env-argv-mutation",
                f"oslo would judge {list(oslo_view)!r}: an earlier EnvFilter popped "
                "'env' from the shared argv",
            )
        return miss

    def _check_chain(
        self, filt: Filter, argv: tuple[str, ...]
    ) -> tuple[Miss | None, Decision | None]:
        chained = tuple(filt.chained(argv))
        if not chained:
            return Miss("chain-empty", "no command to chain to"), None
        oslo_view = (os.path.basename(chained[0]), *chained[1:])
        if not self._oslo_leaf_accepts(list(oslo_view), filt.run_as):
            return (
                Miss("chain-leaf", f"chained {list(oslo_view)!r} is not allowed as {filt.run_as}"),
                None,
            )
        leaf = self._scan(chained, filt.run_as)
        if leaf.outcome in ("allow", "bad-user"):
            return None, leaf
        if oslo_view[0] != chained[0]:
            return (
                Miss(
                    "chain-path",
                    f"chained command {chained[0]!r} is a path; oslo only checked "
                    f"its basename {oslo_view[0]!r}",
                ),
                leaf,
            )
        devs = leaf.deviations
        if devs:
            return Miss(devs[0].miss.code, f"chained command: {devs[0].miss.detail}"), leaf
        return Miss("chain-leaf", f"chained {list(chained)!r} is not allowed"), leaf

    def _oslo_leaf_accepts(self, args: list[str], run_as: str) -> bool:
        """oslo's recursive match_filter on the chained command (argv mutation included)."""
        if args[0] == "env":
            positions: Sequence[int] = range(len(self.filters))
        else:
            positions = self._positions(args)
        for pos in positions:
            filt = self.filters[pos]
            if filt.chaining or filt.run_as != run_as:
                continue
            if not args:
                return False
            accepted = filt.check(args, strict=False) is None
            if isinstance(filt, EnvFilter) and args[0] == "env":
                args = args[1:]
            if accepted and filt.resolve(self.exec_dirs):
                return True
        return False
