"""Modules imported for a context pass the policy trust check, or never run.

Real files with real owners: a directory owned by an ordinary user on
``sys.path`` holds modules that write a marker file when executed; the
marker's absence is the proof that nothing ran.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import needs_stdlib_extension_modules

from privsepd.errors import PolicyError, UnsafePolicyError
from privsepd.policy.modules import _TrustedLoader, check_loaded, import_trusted

NOBODY = 65534


@pytest.fixture
def syspath(trusted_dir):
    """Directories put first on sys.path; modules imported from them are forgotten after."""
    added: list[str] = []
    before = set(sys.modules)

    def add(path: Path) -> Path:
        sys.path.insert(0, str(path))
        added.append(str(path))
        importlib.invalidate_caches()
        return path

    yield add
    for path in added:
        sys.path.remove(path)
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        if any(str(getattr(module, "__file__", "")).startswith(p) for p in added):
            del sys.modules[name]


@pytest.fixture
def marker(trusted_dir):
    return trusted_dir / "executed"


def write_module(directory: Path, name: str, body: str, owner: int = 0, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def make_dir(path: Path, owner: int = 0, mode: int = 0o755) -> Path:
    path.mkdir()
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


def marking(marker: Path, value: str = "x") -> str:
    # Closed at once: PyPy (no reference counting) would flush it only at some later GC.
    return f"with open({str(marker)!r}, 'a') as f:\n    f.write({value!r})\nVALUE = {value!r}\n"


def test_a_module_in_a_user_owned_directory_is_refused_naming_it(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "userlib", owner=NOBODY))
    path = write_module(lib, "psd_user_a.py", marking(marker), owner=NOBODY)
    with pytest.raises(UnsafePolicyError) as info:
        import_trusted("psd_user_a")
    assert str(path) in str(info.value) and "psd_user_a" in str(info.value)
    assert "owned by an untrusted user" in str(info.value)
    assert not marker.exists()
    assert "psd_user_a" not in sys.modules


def test_a_root_owned_module_in_a_trusted_directory_loads(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    write_module(lib, "psd_root_a.py", marking(marker, "root"))
    module = import_trusted("psd_root_a")
    assert module.VALUE == "root" and marker.read_text() == "root"
    assert isinstance(module.__loader__, _TrustedLoader)


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_group_or_world_writable_module_is_refused(trusted_dir, syspath, marker, mode):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    write_module(lib, "psd_writable.py", marking(marker), mode=mode)
    with pytest.raises(UnsafePolicyError, match="writable"):
        import_trusted("psd_writable")
    assert not marker.exists()


def test_a_package_whose_init_is_user_owned_is_refused(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    package = make_dir(lib / "psd_pkg_a")
    init = write_module(package, "__init__.py", marking(marker, "init"), owner=NOBODY)
    write_module(package, "sub.py", "VALUE = 1\n")
    with pytest.raises(UnsafePolicyError) as info:
        import_trusted("psd_pkg_a.sub")
    assert str(init) in str(info.value)
    assert not marker.exists()


def test_a_submodule_in_a_user_owned_package_directory_is_refused(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    package = make_dir(lib / "psd_pkg_b", owner=NOBODY)
    os.chown(package, NOBODY, NOBODY)
    write_module(package, "__init__.py", "")
    write_module(package, "sub.py", marking(marker))
    with pytest.raises(UnsafePolicyError, match="psd_pkg_b"):
        import_trusted("psd_pkg_b.sub")
    assert not marker.exists()


def test_what_a_trusted_module_imports_is_checked_too(trusted_dir, syspath, marker):
    root_lib = syspath(make_dir(trusted_dir / "rootlib"))
    user_lib = syspath(make_dir(trusted_dir / "userlib", owner=NOBODY))
    evil = write_module(user_lib, "psd_dep.py", marking(marker, "dep"), owner=NOBODY)
    write_module(root_lib, "psd_front.py", "import psd_dep\n")
    with pytest.raises(UnsafePolicyError) as info:
        import_trusted("psd_front")
    assert str(evil) in str(info.value)
    assert not marker.exists()


def test_a_module_imported_earlier_from_an_untrusted_place_is_refused(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "userlib", owner=NOBODY))
    path = write_module(lib, "psd_early.py", "VALUE = 1\n", owner=NOBODY)
    importlib.import_module("psd_early")  # e.g. by the interpreter's start-up
    with pytest.raises(UnsafePolicyError) as info:
        import_trusted("psd_early")
    assert str(path) in str(info.value)


def test_a_symlink_to_a_user_owned_file_is_refused(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    user_dir = make_dir(trusted_dir / "userdir", owner=NOBODY)
    target = write_module(user_dir, "real.py", marking(marker), owner=NOBODY)
    (lib / "psd_link.py").symlink_to(target)
    with pytest.raises(UnsafePolicyError, match="untrusted"):
        import_trusted("psd_link")
    assert not marker.exists()


def _pyc_for(source: Path, code: str) -> bytes:
    """A timestamp .pyc that the import system would accept for ``source``."""
    st = source.stat()
    header = (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )
    return header + marshal.dumps(compile(code, str(source), "exec"))


def test_a_user_owned_pyc_is_never_executed(trusted_dir, syspath, marker):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    source = write_module(lib, "psd_cached.py", "VALUE = 'source'\n")
    cache = Path(importlib.util.cache_from_source(str(source)))
    make_dir(cache.parent)
    cache.write_bytes(_pyc_for(source, marking(marker, "pyc")))
    os.chown(cache, NOBODY, NOBODY)
    module = import_trusted("psd_cached")
    assert module.VALUE == "source"
    assert not marker.exists()


def test_a_trusted_pyc_matching_the_source_is_used(trusted_dir, syspath):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    source = write_module(lib, "psd_cached_ok.py", "VALUE = 'source'\n")
    cache = Path(importlib.util.cache_from_source(str(source)))
    make_dir(cache.parent)
    cache.write_bytes(_pyc_for(source, "VALUE = 'from the cache'\n"))
    cache.chmod(0o644)
    assert import_trusted("psd_cached_ok").VALUE == "from the cache"


def test_a_stale_pyc_is_not_used(trusted_dir, syspath):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    source = write_module(lib, "psd_stale.py", "VALUE = 'source'\n")
    cache = Path(importlib.util.cache_from_source(str(source)))
    make_dir(cache.parent)
    stale = bytearray(_pyc_for(source, "VALUE = 'stale'\n"))
    stale[12] ^= 0xFF  # another source size
    cache.write_bytes(bytes(stale))
    cache.chmod(0o644)
    assert import_trusted("psd_stale").VALUE == "source"


def _unloaded_extension() -> str:
    for name in ("_lsprof", "_crypt", "audioop", "_curses", "xxlimited", "_testbuffer"):
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and str(spec.origin).endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES)
        ):
            return name
    pytest.fail("no stdlib extension module left to import")


@needs_stdlib_extension_modules
def test_an_extension_module_in_a_user_owned_directory_is_refused(trusted_dir, syspath):
    name = _unloaded_extension()
    lib = syspath(make_dir(trusted_dir / "userlib", owner=NOBODY))
    origin = importlib.util.find_spec(name).origin
    copy = lib / os.path.basename(origin)
    shutil.copy(origin, copy)
    os.chown(copy, NOBODY, NOBODY)
    with pytest.raises(UnsafePolicyError) as info:
        import_trusted(name)
    assert str(copy) in str(info.value)
    assert name not in sys.modules


@needs_stdlib_extension_modules
def test_an_extension_module_in_a_trusted_directory_loads(trusted_dir, syspath):
    name = _unloaded_extension()
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    origin = importlib.util.find_spec(name).origin
    shutil.copy(origin, lib / os.path.basename(origin))
    module = import_trusted(name)
    assert module.__file__ == str(lib / os.path.basename(origin))
    del sys.modules[name]


def test_a_missing_module_is_an_import_error():
    with pytest.raises(ImportError):
        import_trusted("psd_no_such_module_anywhere")


def test_check_loaded_accepts_the_interpreters_own_modules():
    import json
    import posix

    check_loaded(posix)  # built-in
    check_loaded(json)  # root-owned stdlib
    with pytest.raises(PolicyError):
        fake = type(sys)("psd_fake")
        fake.__spec__ = importlib.machinery.ModuleSpec("psd_fake", None, origin="zip://x")
        check_loaded(fake)


def test_a_namespace_package_in_a_user_owned_directory_is_refused(trusted_dir, syspath):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    namespace = make_dir(lib / "psd_ns", owner=NOBODY)
    with pytest.raises(UnsafePolicyError, match=str(namespace)):
        import_trusted("psd_ns")


def test_a_namespace_package_in_a_trusted_directory_loads_its_checked_modules(trusted_dir, syspath):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    namespace = make_dir(lib / "psd_ns_ok")
    write_module(namespace, "mod.py", "VALUE = 'ns'\n")
    assert import_trusted("psd_ns_ok.mod").VALUE == "ns"


def test_a_user_owned_namespace_package_imported_by_a_trusted_module_is_refused(
    trusted_dir, syspath, marker
):
    lib = syspath(make_dir(trusted_dir / "rootlib"))
    namespace = make_dir(lib / "psd_ns_dep", owner=NOBODY)
    write_module(lib, "psd_uses_ns.py", "import psd_ns_dep\n" + marking(marker))
    with pytest.raises(UnsafePolicyError, match=str(namespace)):
        import_trusted("psd_uses_ns")
    assert not marker.exists()


# -- privsepd's own package -------------------------------------------------------

_OWN_PACKAGE_PROBE = r"""
import logging, sys
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
from privsepd.policy.modules import install_import_guard
install_import_guard()
import privsepd.context  # its own code, lazily imported by the daemon: loads
assert privsepd.context.__file__.startswith(sys.argv[1]), privsepd.context.__file__
try:
    import planted_beside_privsepd  # same untrusted directory, not privsepd: refused
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
else:
    print("LOADED planted_beside_privsepd")
"""


def test_privsepd_run_from_an_untrusted_checkout_loads_its_own_modules_and_warns(tmp_path):
    """A checkout under /tmp: its own modules are the code already running (they
    load), a module planted beside it is still refused, and the daemon warns."""
    import privsepd

    checkout = tmp_path / "checkout"
    shutil.copytree(
        os.path.dirname(privsepd.__file__),
        checkout / "privsepd",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (checkout / "planted_beside_privsepd.py").write_text("print('PLANTED CODE RAN')\n")
    result = subprocess.run(
        [sys.executable, "-I", "-c", _OWN_PACKAGE_PROBE, str(checkout)],
        cwd=str(checkout),
        env={"PATH": os.defpath},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "PLANTED CODE RAN" not in result.stdout
    assert "REFUSED" in result.stdout and "planted_beside_privsepd" in result.stdout
    assert "privsepd itself is installed where a non-root user may write" in result.stderr
    assert str(tmp_path) in result.stderr or "/tmp" in result.stderr
