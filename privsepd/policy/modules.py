"""Import the modules that policy names, trusting only root-owned files.

``privsepd serve`` and ``privsepd helper`` run as root and import the
modules that policy lists functions from. A module file is code that runs as
root, so it is held to the policy trust rule (:mod:`privsepd.policy.trust`:
root-owned, not group- or world-writable, and so is every directory above
it, up to ``/``), or refused with its path named. A module in a directory an
ordinary user can write (a ``PYTHONPATH`` entry, the current directory) is
never executed.

:class:`ModuleTrustGuard` sits first on ``sys.meta_path`` and stands between
the import system and every other finder: it asks them where a module is,
then

* source (``.py``): opens the file through the checked walk (``O_PATH`` +
  ``O_NOFOLLOW`` one component at a time, then ``fstat`` of the opened
  descriptor) and compiles exactly the bytes read from that descriptor; a
  cached ``.pyc`` is used only when it passes the same check and matches the
  checked source (mtime and size, or hash);
* bytecode-only (``.pyc``): the same, from the checked descriptor;
* extension (``.so``): checked, then ``dlopen``-ed by path (``dlopen``
  takes no descriptor, and ``/proc/self/fd/N`` names collide in the
  loader's cache once a number is reused). The check proved that only root
  can change the file or any directory above it, so nobody else can swap
  it in between;
* namespace packages: every directory on their path must be trusted (their
  modules are then checked one by one like any other);
* built-in and frozen modules are part of the interpreter and pass;
* anything else (zip imports, custom loaders) is refused.

Modules imported before the guard was installed (the interpreter's own
start-up) are checked by :func:`import_trusted` when policy names them or a
package above them.

privsepd's own package is the one exception: its files are trusted as the
code already running. Whoever can write them has already chosen what the
daemon runs, so checking them again would refuse nothing an attacker
needs, and only break a privsepd run from a checkout in an untrusted place
(a clone under ``/tmp``). ``privsepd serve`` and ``privsepd helper`` warn
when their own package fails the trust rule (:func:`own_package_problem`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from privsepd.errors import PolicyError, UnsafePolicyError
from privsepd.policy.trust import ROOT_ONLY, Trust, _check_stat, _os_error, _Walk, check_trusted

__all__ = ["ModuleTrustGuard", "import_trusted", "install_import_guard", "trusted_imports"]

_MAX_MODULE_BYTES = 64 * 1024 * 1024
_SOURCE = tuple(importlib.machinery.SOURCE_SUFFIXES)
_BYTECODE = tuple(importlib.machinery.BYTECODE_SUFFIXES)
_EXTENSION = tuple(importlib.machinery.EXTENSION_SUFFIXES)
_INTERPRETER = ("built-in", "frozen")
_OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _is_own(path: str) -> bool:
    """``path`` is a file of the running privsepd package (see the module docstring)."""
    return os.path.abspath(path).startswith(_OWN_PACKAGE)


def own_package_problem(trust: Trust = ROOT_ONLY) -> str | None:
    """Why privsepd's own package fails the trust rule, or None when it passes."""
    try:
        check_trusted(_OWN_PACKAGE.rstrip(os.sep), trust)
    except PolicyError as exc:
        return str(exc)
    return None


def _untrusted(module: str, exc: PolicyError) -> PolicyError:
    """The trust error, naming the module as well as the offending path."""
    cls = UnsafePolicyError if isinstance(exc, UnsafePolicyError) else PolicyError
    err = cls(f"module {module!r} not loaded: {exc.reason}", path=exc.path)
    for attr in ("offending", "owner", "mode"):
        if hasattr(exc, attr):
            setattr(err, attr, getattr(exc, attr))
    return err


def open_checked(path: str, trust: Trust = ROOT_ONLY) -> tuple[int, os.stat_result]:
    """An O_RDONLY descriptor of the trusted regular file ``path``, and its stat.

    The file is opened relative to its already-checked directory with
    ``O_NOFOLLOW`` and the descriptor itself is checked (same inode as the
    walk saw, trusted owner and mode), so what is read is what was judged.
    """
    walk = _Walk(path, trust)
    try:
        walk.run()
        _, real, st = walk.chain[-1]
        if not stat.S_ISREG(st.st_mode):
            raise PolicyError(f"{real} is not a regular file", path=path)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(real.rsplit("/", 1)[1], flags, dir_fd=walk.chain[-2][0])
        except OSError as exc:
            raise _os_error(path, real, exc) from None
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise PolicyError(f"{real} changed while it was being checked", path=path)
            _check_stat(path, real, opened, trust)
        except BaseException:
            os.close(fd)
            raise
        return fd, opened
    finally:
        walk.close()


def _read_checked(path: str, trust: Trust) -> tuple[bytes, os.stat_result]:
    fd, st = open_checked(path, trust)
    try:
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_MODULE_BYTES:
                raise PolicyError(f"larger than {_MAX_MODULE_BYTES} bytes", path=path)
        return b"".join(chunks), st
    finally:
        os.close(fd)


class _TrustedLoader(importlib.abc.Loader):
    """Executes a module from the bytes of a descriptor that passed the trust check."""

    def __init__(self, fullname: str, path: str, kind: str, trust: Trust) -> None:
        self.name = fullname
        self.path = path
        self.kind = kind
        self.trust = trust

    def create_module(self, spec: Any) -> ModuleType | None:
        if self.kind != "extension":
            return None
        fd, _ = self._open()
        os.close(fd)
        return importlib.machinery.ExtensionFileLoader(spec.name, self.path).create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self.kind == "extension":
            importlib.machinery.ExtensionFileLoader(self.name, self.path).exec_module(module)
            return
        code = self.get_code(module.__name__)
        exec(code, module.__dict__)  # noqa: S102 -- the checked module's own code

    def _open(self) -> tuple[int, os.stat_result]:
        try:
            return open_checked(self.path, self.trust)
        except PolicyError as exc:
            raise _untrusted(self.name, exc) from None

    def _read(self, path: str) -> tuple[bytes, os.stat_result]:
        try:
            return _read_checked(path, self.trust)
        except PolicyError as exc:
            raise _untrusted(self.name, exc) from None

    def get_code(self, fullname: str) -> Any:
        data, st = self._read(self.path)
        if self.kind == "bytecode":
            if data[:4] != importlib.util.MAGIC_NUMBER or len(data) < 16:
                raise ImportError(f"{self.path}: not bytecode for this Python", name=fullname)
            return marshal.loads(data[16:])
        code = self._cached_code(data, st)
        if code is None:
            code = compile(data, self.path, "exec", dont_inherit=True)
        return code

    def _cached_code(self, source: bytes, st: os.stat_result) -> Any:
        """The __pycache__ code object, if it is trusted and matches the checked source."""
        try:
            cache = importlib.util.cache_from_source(self.path)
            data, _ = _read_checked(cache, self.trust)
        except (PolicyError, NotImplementedError, ValueError, OSError):
            return None
        if len(data) < 16 or data[:4] != importlib.util.MAGIC_NUMBER:
            return None
        flags = int.from_bytes(data[4:8], "little")
        if flags & 0b1:
            if data[8:16] != importlib.util.source_hash(source):
                return None
        elif (
            int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF
        ):
            return None
        try:
            return marshal.loads(data[16:])
        except (ValueError, EOFError, TypeError):
            return None

    def get_source(self, fullname: str) -> str | None:
        if self.kind != "source":
            return None
        return importlib.util.decode_source(self._read(self.path)[0])

    def is_package(self, fullname: str) -> bool:
        return os.path.basename(self.path).startswith("__init__.")

    def get_filename(self, fullname: str) -> str:
        return self.path


def _kind_of(path: str) -> str | None:
    if path.endswith(_SOURCE):
        return "source"
    if path.endswith(_BYTECODE):
        return "bytecode"
    if path.endswith(_EXTENSION):
        return "extension"
    return None


class ModuleTrustGuard(importlib.abc.MetaPathFinder):
    """A meta path finder that lets only trust-checked module files execute."""

    def __init__(self, trust: Trust = ROOT_ONLY) -> None:
        self.trust = trust

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        for finder in list(sys.meta_path):
            if isinstance(finder, ModuleTrustGuard):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return self._checked(fullname, spec)
        return None

    def _checked(self, fullname: str, spec: Any) -> Any:
        if spec.origin in _INTERPRETER:
            return spec
        if spec.origin and spec.has_location and _is_own(spec.origin):
            return spec
        if spec.origin is None or not spec.has_location:
            locations = spec.submodule_search_locations
            if spec.origin is None and locations is not None:
                for directory in list(locations):
                    self._check(fullname, directory)
                return spec
            raise ImportError(
                f"module {fullname!r}: found by {type(spec.loader).__name__} at "
                f"{spec.origin!r}, which privsepd cannot trust-check",
                name=fullname,
            )
        origin = spec.origin
        kind = _kind_of(origin)
        if kind is None:
            raise ImportError(
                f"module {fullname!r}: {origin} is not a Python source, bytecode or extension file",
                name=fullname,
            )
        # The loader checks the file on the very descriptor it executes from.
        return importlib.util.spec_from_file_location(
            fullname,
            origin,
            loader=_TrustedLoader(fullname, origin, kind, self.trust),
            submodule_search_locations=spec.submodule_search_locations,
        )

    def _check(self, fullname: str, path: str) -> None:
        try:
            check_trusted(path, self.trust)
        except PolicyError as exc:
            raise _untrusted(fullname, exc) from None


def install_import_guard(trust: Trust = ROOT_ONLY) -> ModuleTrustGuard:
    """Put a guard first on ``sys.meta_path`` for the rest of the process.

    Warns (logger ``privsepd.daemon``) when privsepd's own package fails the
    trust rule: it is then the operator's install, not policy, that decides
    what runs as root.
    """
    for finder in sys.meta_path:
        if isinstance(finder, ModuleTrustGuard):
            return finder
    problem = own_package_problem(trust)
    if problem is not None:
        import logging

        logging.getLogger("privsepd.daemon").warning(
            "privsepd itself is installed where a non-root user may write: %s", problem
        )
    guard = ModuleTrustGuard(trust)
    sys.meta_path.insert(0, guard)
    return guard


@contextlib.contextmanager
def trusted_imports(trust: Trust = ROOT_ONLY) -> Iterator[ModuleTrustGuard]:
    """Guard imports for the duration of the block (unless a guard is already installed)."""
    for finder in sys.meta_path:
        if isinstance(finder, ModuleTrustGuard):
            yield finder
            return
    guard = ModuleTrustGuard(trust)
    sys.meta_path.insert(0, guard)
    try:
        yield guard
    finally:
        sys.meta_path.remove(guard)


def check_loaded(module: ModuleType, trust: Trust = ROOT_ONLY) -> None:
    """Raise PolicyError unless an already-imported module came from trusted files."""
    name = module.__name__
    if isinstance(getattr(module, "__loader__", None), _TrustedLoader):
        return
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if origin in _INTERPRETER:
        return
    if origin and getattr(spec, "has_location", False) and _is_own(origin):
        return
    paths: list[str] = []
    if origin is None or not getattr(spec, "has_location", False):
        locations = getattr(module, "__path__", None)
        if origin is None and locations is not None:
            paths.extend(list(locations))
        else:
            raise PolicyError(
                f"module {name!r} was loaded from {origin!r}, which cannot be checked"
            )
    else:
        paths.append(origin)
        cached = getattr(module, "__cached__", None)
        if cached and os.path.exists(cached):
            paths.append(cached)  # what the import system ran, if it was fresh
    for path in paths:
        try:
            check_trusted(path, trust)
        except PolicyError as exc:
            raise _untrusted(name, exc) from None


def import_trusted(name: str, trust: Trust = ROOT_ONLY) -> ModuleType:
    """Import ``name`` (and its packages) from trust-checked files only.

    Raises PolicyError (UnsafePolicyError for ownership and mode) naming the
    module and the offending path; ImportError if it does not exist.
    """
    with trusted_imports(trust):
        module = importlib.import_module(name)
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        check_loaded(sys.modules[".".join(parts[:i])], trust)
    return module
