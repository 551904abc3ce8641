"""The policy behind one ``privsepd-rootwrap`` decision: full load or root-owned cache.

Start-up is the product of the shim (it runs under sudo for every command a
service issues), so the policy is read through a root-owned cache when one
is valid: a marshal file per config (marshal is built in: reading it costs
no import, where json cost ~1.5 ms) whose shards list, per ``argv[0]``, the
raw rule columns that can match it. A hit rebuilds only those rules (through the same
filter classes and FilterIndex) instead of parsing every file; the cache is
keyed on (inode, size, mtime, ctime) of the config, every filters directory
and file and every exec_dirs entry, and ``$PATH`` when ``exec_dirs`` is
unset; a hit re-checks their ownership and modes, and is used only when
the cache file and its directory are root-owned and not writable by others.
Commands whose decision could involve rules beyond their own bucket (a
leading ``env``, ``NAME=VALUE``, a chaining filter, the implicit
privsep-helper) always take the full path.

Like the shim, this module imports almost nothing at load time.
"""

from __future__ import annotations

import os

RC_UNAUTHORIZED = 99
RC_NOCOMMAND = 98
RC_BADCONFIG = 97
RC_NOEXECFOUND = 96
RC_CANNOT_EXECUTE = 126
SIGNAL_BASE = 128

DEFAULT_CACHE_DIR = "/var/cache/privsepd/rootwrap"
CACHE_VERSION = 4  # 3: exec_dirs are watched (and trust-checked on a hit); 4: marshal
NSHARDS = 256
CACHE_SUFFIX = ".marshal"
#: Each shard names the build it belongs to under this key (NUL: never an argv[0]).
_GENERATION_KEY = "\0generation"
#: marshal format 4 is read by every supported Python (3.4 onwards); a file
#: from another interpreter version that cannot be read is just a miss.
MARSHAL_FORMAT = 4
#: exec_dirs of a native (TOML) policy, which has no rootwrap.conf.
NATIVE_EXEC_DIRS = ("/sbin", "/usr/sbin", "/bin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


class _Exit(Exception):
    def __init__(self, code: int, message: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


# -- policy loading ---------------------------------------------------------------


class Loaded:
    """What one decision needs: a FilterIndex, the config (or None) and how it was read."""

    def __init__(self, index, config, native: bool, source: str) -> None:  # noqa: ANN001
        self.index = index
        self.config = config
        self.native = native
        self.source = source  # "full" | "cache"


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cache_path(cache_dir: str, conf: str) -> str:
    name = os.path.abspath(conf).replace("!", "!!").replace("/", "!")
    return os.path.join(cache_dir, name + CACHE_SUFFIX)


def _bad_config(conf: str, exc: Exception) -> _Exit:
    from privsepd.policy.rootwrap import ConfigValueError

    if isinstance(exc, ConfigValueError):
        return _Exit(RC_BADCONFIG, f"Incorrect value in {conf}: {exc.reason}", str(exc))
    return _Exit(RC_BADCONFIG, f"Incorrect configuration file: {conf}", str(exc))


def load_full(conf: str) -> Loaded:
    """Parse every policy file (the reference path; also builds the cache)."""
    from privsepd.errors import PolicyError

    try:
        if conf.endswith(".toml") or os.path.isdir(conf):
            from privsepd.policy.loader import load_policy as load_native

            policy = load_native([conf])
            return Loaded(policy.index(None, NATIVE_EXEC_DIRS), None, True, "full")
        from privsepd.policy.rootwrap import load_policy

        policy = load_policy(conf)
    except (PolicyError, OSError) as exc:
        raise _bad_config(conf, exc) from None
    loaded = Loaded(policy.index, policy.config, False, "full")
    loaded.warnings = policy.warnings  # type: ignore[attr-defined]
    return loaded


def _files_of(config) -> list[str]:  # noqa: ANN001
    """Every path whose change must invalidate the cache, in a fixed order.

    The (trusted) exec_dirs are among them: a cache hit re-checks their
    ownership and modes, so one made writable since is not searched.
    """
    paths = [config.path]
    for directory in config.filters_path:
        if not os.path.isdir(directory):
            paths.append(directory)  # absent: its creation must invalidate too
            continue
        paths.append(directory)
        for name in sorted(os.listdir(directory)):
            full = os.path.join(directory, name)
            if not name.startswith(".") and os.path.isfile(full):
                paths.append(full)
    paths.extend(d for d in config.exec_dirs if d not in paths)
    return paths


def _stamps(paths: list[str]) -> list:
    out = []
    for p in paths:
        try:
            out.append(_stat_key(p))
        except OSError:
            out.append(None)
    return out


def _raw_columns(lines_of: dict, filt) -> list[str] | None:  # noqa: ANN001
    """The INI columns of a filter, re-read from its source line (None: cannot)."""
    path, line, _name = filt.source
    lines = lines_of.get(path)
    if lines is None:
        with open(path, encoding="utf-8") as f:
            lines = lines_of[path] = f.read().splitlines()
    if not 0 < line <= len(lines):
        return None
    text = lines[line - 1].strip()
    if line < len(lines) and lines[line][:1].isspace() and lines[line].strip():
        return None  # continuation line: not worth reproducing configparser here
    eq, colon = text.find("="), text.find(":")
    delim = colon if eq < 0 or (0 <= colon < eq) else eq
    if delim < 0:
        return None
    if text[:delim].strip() != _name:
        # The line no longer defines this rule (edited, commented out,
        # removed): the parsed policy is not what is on disk now.
        return None
    return [c.strip() for c in text[delim + 1 :].strip().split(",")]


def _same(a, b) -> bool:  # noqa: ANN001
    skip = {"_resolved", "_user"}
    va = {k: v for k, v in vars(a).items() if k not in skip}
    vb = {k: v for k, v in vars(b).items() if k not in skip}
    return type(a) is type(b) and va == vb


def build_cache(loaded: Loaded) -> dict | None:
    """The cache document for a fully loaded rootwrap policy, or None if unsafe.

    Every rule is rebuilt from its columns and compared with the parsed one:
    anything the rebuild does not reproduce exactly disables the cache.
    """
    if loaded.native:
        return None
    for w in getattr(loaded, "warnings", ()):
        if w.code in ("duplicate-name", "default-section"):
            return None  # rule order no longer follows line order
    try:
        return _build_cache(loaded)
    except OSError:
        return None  # a policy file vanished or changed under us: no cache


def _build_cache(loaded: Loaded) -> dict | None:
    from privsepd.policy.filters import FILTER_CLASSES, EnvFilter

    index = loaded.index
    config = loaded.config
    # Stamps taken before the rules are re-read and compared with the parsed
    # ones, and again after: any edit in between (or since the parse, which
    # the comparison itself catches) means no cache is written.
    watched = _files_of(config)
    before = _stamps(watched)
    lines_of: dict = {}
    rules: list = []
    keys: dict[str, list[int]] = {}
    fallback: list[int] = []
    for filt in index.filters:
        path = filt.source.path
        if path == "<implicit>":
            continue  # privsep-helper: its argv[0] takes the full path
        cols = _raw_columns(lines_of, filt)
        cls = FILTER_CLASSES.get(cols[0]) if cols else None
        if cls is None or cls.kind != filt.kind:
            return None
        if not _same(cls(*cols[1:], source=filt.source), filt):
            return None
        rules.append([path, filt.source.line, filt.source.name, cols, filt.chaining])
        rule_id = len(rules) - 1
        if isinstance(filt, EnvFilter):
            continue  # only candidates for 'env ...' / 'NAME=...': full path
        ks = filt.index_keys()
        if ks is None:
            fallback.append(rule_id)
            continue
        for k in ks:
            keys.setdefault(k, []).append(rule_id)
    shards: list[dict[str, list]] = [{} for _ in range(NSHARDS)]
    for key, ids in keys.items():
        merged = sorted({*ids, *fallback})
        shards[_shard(key)][key] = [rules[i] for i in merged]
    if _files_of(config) != watched or _stamps(watched) != before:
        return None
    manifest = {
        "version": CACHE_VERSION,
        "conf": os.path.abspath(config.path),
        "path_env": os.environ.get("PATH") if _from_path(config.exec_dirs) else None,
        "filters_path": list(config.filters_path),
        "exec_dirs": list(config.exec_dirs),
        "watched": watched,
        "stamps": before,
        "fallback": [rules[i] for i in fallback],
        "config": {name: getattr(config, name) for name in _CONFIG_FIELDS},
    }
    return {"manifest": manifest, "shards": shards}


def _from_path(exec_dirs) -> bool:  # noqa: ANN001
    """exec_dirs may come from $PATH (no exec_dirs option): then $PATH is part of the key."""
    path = os.environ.get("PATH")
    return path is not None and list(exec_dirs) == [e for e in path.split(":") if e[:1] == "/"]


def _shard(key: str) -> int:
    """32-bit FNV-1a of the key's bytes, mod NSHARDS (stable across runs; no zlib import)."""
    h = 0x811C9DC5
    for byte in key.encode("utf-8", "surrogateescape"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % NSHARDS


def write_cache(cache_dir: str, conf: str, doc: dict) -> None:
    """Write shards then the manifest (atomically, last), all root-owned 0600.

    One writer at a time (flock); a busy lock or any error just skips the
    refresh: the cache is an optimisation, the full load is always right.
    """
    import fcntl
    import shutil

    if os.geteuid() != 0:
        return
    base = _cache_path(cache_dir, conf)[: -len(CACHE_SUFFIX)]
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        from privsepd.policy.trust import check_trusted

        check_trusted(cache_dir)
        lock = os.open(base + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except Exception:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        gen = f"{os.getpid()}-{time_ns()}"
        gen_dir = f"{base}.{gen}"
        os.mkdir(gen_dir, 0o700)
        for n, shard in enumerate(doc["shards"]):
            _write_marshal(os.path.join(gen_dir, str(n)), dict(shard, **{_GENERATION_KEY: gen}))
        manifest = dict(doc["manifest"], generation=gen)
        _write_marshal(base + CACHE_SUFFIX, manifest)
        prefix = os.path.basename(base) + "."
        for name in os.listdir(cache_dir):  # older generations, a version 3 manifest
            old = os.path.join(cache_dir, name)
            if name.startswith(prefix) and name != prefix + gen and os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            elif name == prefix + "json":
                os.unlink(old)
    except Exception:
        return
    finally:
        os.close(lock)


def time_ns() -> int:
    import time

    return time.time_ns()


def _write_marshal(path: str, value: dict) -> None:
    import marshal

    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(marshal.dumps(value, MARSHAL_FORMAT))
    os.replace(tmp, path)


def _loads(data: bytes) -> dict:
    """A cache file's value: plain data only (marshal can also hold code objects)."""
    import marshal

    value = marshal.loads(data)
    if type(value) is not dict:
        raise ValueError("cache file does not hold a map")
    return value


def _read_root_file(path: str) -> bytes | None:
    """Contents of a root-owned, not group/world-writable regular file, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != 0 or st.st_mode & 0o022 or not (st.st_mode & 0o170000 == 0o100000):
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _normal_key(word: str) -> bool:
    return (
        word != "env"
        and "=" not in word
        and "\0" not in word
        and not word.endswith("\n")
        and word != ("privsep-helper")
    )


def load_cached(cache_dir: str, conf: str, argv0: str) -> Loaded | None:
    """A FilterIndex of just the rules that can match argv0, from a valid cache."""
    if not _normal_key(argv0):
        return None
    base = _cache_path(cache_dir, conf)[: -len(CACHE_SUFFIX)]
    data = _read_root_file(base + CACHE_SUFFIX)
    if data is None:
        return None
    from privsepd.errors import PolicyError
    from privsepd.policy.trust import check_trusted

    try:
        check_trusted(cache_dir)
        doc = _loads(data)
        if doc.get("version") != CACHE_VERSION or doc["conf"] != os.path.abspath(conf):
            return None
        if doc["path_env"] is not None and doc["path_env"] != os.environ.get("PATH"):
            return None
        watched = doc["watched"]
        if _stamps(watched) != doc["stamps"]:
            return None
        for p in watched:  # ownership and modes along the chain (ctime covers the files)
            if os.path.exists(p):
                check_trusted(p)
        shard = _read_root_file(f"{base}.{doc['generation']}/{_shard(argv0)}")
        if shard is None:
            return None
        shard_doc = _loads(shard)
        if shard_doc.get(_GENERATION_KEY) != doc["generation"]:
            return None  # a shard of another build (or config) put in place of this one's
        rules = shard_doc.get(argv0, doc["fallback"])
    except (PolicyError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    if any(rule[4] for rule in rules):
        return None  # chaining: the chained command may need any rule
    from privsepd.policy.filters import FILTER_CLASSES, Source
    from privsepd.policy.index import FilterIndex

    filters = [
        FILTER_CLASSES[cols[0]](*cols[1:], source=Source(path, line, name))
        for path, line, name, cols, _chaining in rules
    ]
    return Loaded(FilterIndex(filters, doc["exec_dirs"]), _CachedConfig(doc), False, "cache")


_CONFIG_FIELDS = ("use_syslog", "syslog_log_facility", "syslog_log_level", "rlimit_nofile")


class _CachedConfig:
    """The rootwrap.conf options the shim uses, as recorded in the cache."""

    def __init__(self, doc: dict) -> None:
        self.path = doc["conf"]
        self.filters_path = tuple(doc["filters_path"])
        self.exec_dirs = tuple(doc["exec_dirs"])
        for name in _CONFIG_FIELDS:
            setattr(self, name, doc["config"][name])


def load(conf: str, argv0: str, cache_dir: str | None) -> Loaded:
    """The policy for one decision: cache hit if valid, else full load (+ refresh)."""
    if cache_dir is not None and not (conf.endswith(".toml") or os.path.isdir(conf)):
        hit = load_cached(cache_dir, conf, argv0)
        if hit is not None:
            return hit
    loaded = load_full(conf)
    if cache_dir is not None and not loaded.native:
        doc = build_cache(loaded)
        if doc is not None:
            write_cache(cache_dir, conf, doc)
    return loaded
