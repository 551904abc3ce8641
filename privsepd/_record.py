"""Immutable records with named fields: the part of namedtuple privsepd uses.

``privsepd-rootwrap`` imports the modules that define these records on
every run, and importing collections (with keyword, operator, reprlib and
heapq) cost its start-up ~2 ms. A record is a tuple (equal to and unpacked
like one) whose fields are read-only properties; it has ``_fields``,
``_replace`` and namedtuple's repr, and pickles.
"""

from __future__ import annotations

try:
    from _operator import itemgetter  # what operator.itemgetter is, without operator.py
except ImportError:  # pragma: no cover -- an interpreter without it
    from operator import itemgetter

TYPE_CHECKING = False  # no typing at run time (see the module docstring)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["record"]


def record(typename: str, fields: tuple[str, ...]) -> type:
    """A tuple subclass named ``typename`` whose items are ``fields``, in order.

    Subclass it with ``__slots__ = ()`` to add methods, as with namedtuple.
    """
    count = len(fields)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        if kwargs:
            args += tuple(kwargs.pop(name) for name in fields[len(args) :] if name in kwargs)
            if kwargs:
                raise TypeError(f"{typename}() got unexpected field(s) {sorted(kwargs)}")
        if len(args) != count:
            raise TypeError(f"{typename}() takes {count} fields {fields}, got {len(args)}")
        return tuple.__new__(cls, args)

    def _replace(self: tuple, **changes: Any) -> Any:
        values = [changes.pop(name, value) for name, value in zip(fields, self)]
        if changes:
            raise TypeError(f"{typename} has no field(s) {sorted(changes)}")
        return type(self)(*values)

    def __repr__(self: tuple) -> str:  # noqa: N807
        body = ", ".join(f"{name}={value!r}" for name, value in zip(fields, self))
        return f"{type(self).__name__}({body})"

    def __getnewargs__(self: tuple) -> tuple:  # noqa: N807 -- pickle: __new__'s arguments
        return tuple(self)

    namespace: dict[str, Any] = {
        "__slots__": (),
        "__doc__": f"{typename}({', '.join(fields)})",
        "_fields": fields,
        "__new__": __new__,
        "_replace": _replace,
        "__repr__": __repr__,
        "__getnewargs__": __getnewargs__,
    }
    for index, name in enumerate(fields):
        namespace[name] = property(itemgetter(index), doc=f"field {index}: {name}")
    return type(typename, (tuple,), namespace)
