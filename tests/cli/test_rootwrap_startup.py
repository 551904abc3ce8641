"""What ``privsepd-rootwrap`` loads and trusts on its fast path (issue 13).

The shim runs under sudo for every command a service issues, so its start-up
is kept lean: a cache hit imports no module beyond what the decision needs,
reads a root-owned marshal cache, and leaves without interpreter
finalization. These tests pin each of those and attack the cache: a file
that is not root's, a swapped or corrupt file, one that holds code, a
leftover of the old format.
"""

from __future__ import annotations

import ast
import json
import marshal
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import cpython_import_set, write_rootwrap_conf

import privsepd
from tests.cli.test_rootwrap_cli import FILTERS, _script, run

# Modules a cache hit of an allowed command must not import: each cost the
# shim from 0.3 to 9 ms of start-up (or belongs to another part of privsepd).
HEAVY = {
    "enum",  # through signal or re: ~4 ms
    "collections",  # through namedtuple, collections.abc or functools: ~2 ms
    "functools",
    "typing",
    "dataclasses",
    "inspect",
    "ast",
    "json",
    "shutil",
    "threading",
    "zlib",
    "logging",
    "configparser",
    "tomllib",
    "tomli",
    "ctypes",
    "msgpack",
    "_cffi_backend",
    "cffi",
    "subprocess",
    "socket",
    "selectors",
    "privsepd.policy.rootwrap",
    "privsepd.policy.native",
    "privsepd.policy.loader",
    "privsepd.context",
    "privsepd.modes",
    "privsepd.helper.kernel",
    "privsepd.paths",  # only for a command with path arguments
    "select",  # C extensions: ~0.35 ms each to load
    "_bisect",
}
#: What re imports: loaded once a rule with a pattern is examined, not before.
RE_FAMILY = {"re", "enum", "collections", "functools"}
HEAVY_PACKAGES = ("privsepd.authoring", "privsepd.channel", "privsepd.compat")


@pytest.fixture
def conf(trusted_dir):
    return write_rootwrap_conf(trusted_dir, FILTERS)


@pytest.fixture
def cache_dir(trusted_dir):
    return str(trusted_dir / "cache")


def _run_child_reporting_modules(conf: str, cache_dir: str, *argv: str):
    """main() in a fresh ``python -I -S``: its exit code, sys.modules, and the policy source.

    Without ``site``: a site hook (a ``.pth`` file) may import re or enum at
    start, which would hide the shim importing them.
    """
    r, w = os.pipe()
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {_PACKAGE_ROOT!r})
        from privsepd.cli import rootwrap
        sources = []
        load = rootwrap.load
        def spy(*args):
            loaded = load(*args)
            sources.append(loaded.source)
            return loaded
        rootwrap.load = spy
        rc = rootwrap.main(["privsepd-rootwrap", "--cache-dir", {cache_dir!r}, {conf!r},
                            *{list(argv)!r}])
        os.write({w}, repr((rc, sorted(sys.modules), sources)).encode())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code], pass_fds=(w,), stdout=subprocess.DEVNULL
    )
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert proc.wait(timeout=60) == 0
    rc, modules, sources = ast.literal_eval(data.decode())
    return rc, set(modules) - _interpreter_start_modules(), sources


_START_MODULES: set[str] = set()
#: The directory privsepd is imported from (a checkout, or site-packages).
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(privsepd.__file__)))


def _interpreter_start_modules() -> set[str]:
    """What ``python -I -S -c pass`` has imported before any privsepd code runs."""
    if not _START_MODULES:
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", "import sys; print(repr(sorted(sys.modules)))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        _START_MODULES.update(ast.literal_eval(out))
    return _START_MODULES


@cpython_import_set
def test_cache_hit_of_an_allowed_command_imports_only_what_the_decision_needs(
    root, conf, cache_dir
):
    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0  # builds
    rc, modules, sources = _run_child_reporting_modules(conf, cache_dir, "true")
    assert (rc, sources) == (0, ["cache"])
    assert sorted(modules & HEAVY) == []
    assert sorted(m for m in modules if m.startswith(HEAVY_PACKAGES)) == []


@cpython_import_set
def test_cache_hit_decided_by_rules_without_patterns_does_not_import_re(root, conf, cache_dir):
    # re (with enum) is ~7 ms of a small VM's start-up; only a pattern needs it.
    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0
    rc, modules, _ = _run_child_reporting_modules(conf, cache_dir, "true")
    assert (rc, sorted(modules & RE_FAMILY)) == (0, [])
    rc, modules, _ = _run_child_reporting_modules(conf, cache_dir, "sh", "-c", "kill -9 $$")
    assert (rc, "re" in modules) == (137, True)  # a RegExpFilter examined: re loaded then


@cpython_import_set
def test_cache_hit_of_a_denied_command_imports_no_heavy_module_either(root, conf, cache_dir):
    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0
    rc, modules, sources = _run_child_reporting_modules(conf, cache_dir, "ls", "-la")
    assert (rc, sources) == (99, ["cache"])
    assert sorted(modules & (HEAVY - RE_FAMILY)) == []  # ls's rules have patterns


# -- the console script --------------------------------------------------------------


def test_installed_script_imports_only_sys_and_the_shim():
    # pip's wrapper for a console_scripts entry point imports re (and enum,
    # ~7 ms) before any privsepd code runs: privsepd-rootwrap ships as a
    # plain script instead. Read statically: a site hook may import re in
    # every interpreter here, which would hide it at run time.
    with open(_script("privsepd-rootwrap")) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update(f"{node.module}:{alias.name}" for alias in node.names)
    assert imported == {"sys", "privsepd.cli.rootwrap:console_main"}


@pytest.mark.parametrize(
    ("argv", "rc"),
    [(["true"], 0), (["ls", "-la"], 99), (["sh", "-c", "kill -9 $$"], 137), ([], 98)],
    ids=["allowed", "denied", "signalled", "no-command"],
)
def test_console_script_exits_with_mains_code(root, conf, cache_dir, argv, rc):
    result = run(conf, *argv, options=("--cache-dir", cache_dir))
    assert result.returncode == rc


def test_console_script_output_is_complete_through_a_pipe(root, conf, cache_dir):
    # stdout is a pipe (block-buffered): the fast exit must flush it first.
    result = run(conf, "true", options=("--explain",))
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "command:  ['true']" and lines[-1] == "exit:     0"
    result = run(conf, "cat", "/proc/self/status", options=("--cache-dir", cache_dir))
    assert result.returncode == 0 and b"\nUid:\t0\t0\t0\t0\n" in result.stdout


def _console_main(prelude: str, conf: str, cache_dir: str, *argv: str):
    code = textwrap.dedent(
        f"""
        import sys
        {prelude}
        from privsepd.cli.rootwrap import console_main
        sys.argv = ["privsepd-rootwrap", "--cache-dir", {cache_dir!r}, {conf!r}, *{list(argv)!r}]
        sys.exit(console_main())
        """
    )
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=60)


def test_console_main_flushes_what_python_buffered_before_leaving(root, conf, cache_dir):
    _built(conf, cache_dir)  # a cache hit: the path that leaves with os._exit
    result = _console_main("sys.stdout.write('buffered, no newline')", conf, cache_dir, "true")
    assert result.returncode == 0
    assert result.stdout == b"buffered, no newline"


def test_console_main_exits_normally_when_an_atexit_hook_is_registered(root, conf, cache_dir):
    _built(conf, cache_dir)
    hook = "import atexit; atexit.register(lambda: sys.stdout.write('hook ran'))"
    result = _console_main(hook, conf, cache_dir, "ls", "-la")
    assert result.returncode == 99
    assert result.stdout == b"hook ran"


# -- the cache: trust and invalidation -------------------------------------------------


def _cache_files(cache_dir: str, conf: str) -> tuple[str, str]:
    from privsepd.cli.rootwrap_policy import CACHE_SUFFIX, _cache_path, _shard

    manifest = _cache_path(cache_dir, conf)
    with open(manifest, "rb") as f:
        generation = marshal.load(f)["generation"]
    return manifest, f"{manifest[: -len(CACHE_SUFFIX)]}.{generation}/{_shard('true')}"


def _built(conf: str, cache_dir: str) -> None:
    from privsepd.cli.rootwrap_policy import load_cached

    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0
    assert load_cached(cache_dir, conf, "true") is not None


@pytest.mark.parametrize("which", ["manifest", "shard"])
def test_cache_file_not_owned_by_root_is_not_used(root, conf, cache_dir, which):
    from privsepd.cli.rootwrap_policy import load_cached

    _built(conf, cache_dir)
    manifest, shard = _cache_files(cache_dir, conf)
    os.chown(manifest if which == "manifest" else shard, 65534, 65534)
    assert load_cached(cache_dir, conf, "true") is None
    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0


def test_cache_directory_others_can_write_is_not_used(root, conf, cache_dir):
    from privsepd.cli.rootwrap_policy import load_cached

    _built(conf, cache_dir)
    os.chmod(cache_dir, 0o777)
    assert load_cached(cache_dir, conf, "true") is None


def test_manifest_swapped_for_another_configs_is_not_used(root, conf, cache_dir, trusted_dir):
    from privsepd.cli.rootwrap_policy import _cache_path, load_cached

    other = trusted_dir / "other.conf"
    other.write_text(open(conf).read())
    other.chmod(0o644)
    _built(conf, cache_dir)
    _built(str(other), cache_dir)
    os.replace(_cache_path(cache_dir, str(other)), _cache_path(cache_dir, conf))
    assert load_cached(cache_dir, conf, "true") is None


def test_shard_of_another_build_is_not_used(root, conf, cache_dir, trusted_dir):
    from privsepd.cli.rootwrap_policy import load_cached

    other = trusted_dir / "other.conf"
    other.write_text(open(conf).read().replace("/bin,/usr/bin", "/usr/bin,/bin"))
    other.chmod(0o644)
    _built(conf, cache_dir)
    _built(str(other), cache_dir)
    _, shard = _cache_files(cache_dir, conf)
    _, other_shard = _cache_files(cache_dir, str(other))
    os.replace(other_shard, shard)  # same argv[0], same rules: only the build differs
    assert load_cached(cache_dir, conf, "true") is None


def test_argv0_holding_nul_takes_the_full_path(root, conf, cache_dir):
    from privsepd.cli import rootwrap
    from privsepd.cli.rootwrap_policy import load

    _built(conf, cache_dir)
    assert load(conf, "\0generation", cache_dir).source == "full"
    assert rootwrap.main(["privsepd-rootwrap", "--cache-dir", cache_dir, conf, "\0x"]) == 99


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\x00garbage",
        marshal.dumps(["not", "a", "map"]),
        marshal.dumps(compile("import os; os.system('id')", "x", "exec")),
        json.dumps({"version": 3}).encode(),
    ],
    ids=["empty", "garbage", "list", "code-object", "json"],
)
@pytest.mark.parametrize("which", ["manifest", "shard"])
def test_corrupt_cache_file_is_a_miss_and_the_decision_is_still_right(
    root, conf, cache_dir, content, which
):
    from privsepd.cli.rootwrap_policy import load_cached

    _built(conf, cache_dir)
    manifest, shard = _cache_files(cache_dir, conf)
    with open(manifest if which == "manifest" else shard, "wb") as f:
        f.write(content)
    assert load_cached(cache_dir, conf, "true") is None
    assert run(conf, "true", options=("--cache-dir", cache_dir)).returncode == 0
    assert run(conf, "ls", "-la", options=("--cache-dir", cache_dir)).returncode == 99
    assert load_cached(cache_dir, conf, "true") is not None  # rebuilt


def test_cache_is_invalidated_when_a_filters_file_is_added(root, conf, cache_dir):
    from privsepd.cli.rootwrap_policy import load_cached

    _built(conf, cache_dir)
    extra = os.path.join(os.path.dirname(conf), "filters.d", "extra.filters")
    with open(extra, "w") as f:
        f.write("[Filters]\nid: CommandFilter, /usr/bin/id, root\n")
    os.chmod(extra, 0o644)
    assert load_cached(cache_dir, conf, "true") is None
    assert run(conf, "id", options=("--cache-dir", cache_dir)).returncode == 0


def test_version_3_json_manifest_is_ignored_and_removed(root, conf, cache_dir):
    from privsepd.cli.rootwrap_policy import CACHE_SUFFIX, _cache_path

    os.makedirs(cache_dir, mode=0o700)
    old = _cache_path(cache_dir, conf)[: -len(CACHE_SUFFIX)] + ".json"
    with open(old, "w") as f:
        json.dump({"version": 3}, f)
    os.chmod(old, 0o600)
    _built(conf, cache_dir)
    assert not os.path.exists(old)


def test_shard_of_a_command_does_not_depend_on_hash_randomization():
    code = "from privsepd.cli.rootwrap_policy import _shard; print(_shard('true'), _shard('ip'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, PYTHONHASHSEED=seed),
            capture_output=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(seen) == 1


def test_installed_console_script_is_found():
    assert os.access(_script("privsepd-rootwrap"), os.X_OK)
