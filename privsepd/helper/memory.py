"""Give the memory of a large call back to the kernel.

glibc's malloc raises its mmap threshold each time a large mmapped block is
freed (up to 32 MiB), so after one large call the next big buffers come from
the heap, and freed heap memory mostly stays with the process: a helper that
returned 50 MB once kept 30 MB for good. The helper therefore fixes the
threshold (large blocks are always mmapped, so freeing unmaps them) and trims
the heap after every call whose request or reply was large (the server's
``on_large``). Where libc has neither call (not glibc), both are no-ops.
"""

from __future__ import annotations

import cffi

_M_MMAP_THRESHOLD = -3
# glibc's own starting value; fixing it turns the dynamic increase off.
MMAP_THRESHOLD = 128 * 1024

_ffi = cffi.FFI()
_ffi.cdef("int mallopt(int param, int value); int malloc_trim(size_t pad);")
_libc = _ffi.dlopen(None)


def configure() -> bool:
    """Pin the mmap threshold; True if libc took it."""
    try:
        return bool(_libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except AttributeError:  # pragma: no cover - not glibc
        return False


def release() -> None:
    """Return free heap pages of every arena to the kernel."""
    try:
        _libc.malloc_trim(0)
    except AttributeError:  # pragma: no cover - not glibc
        pass
