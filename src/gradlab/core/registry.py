"""One lookup and one way to add for every name → entry table: an unknown name always lists the
valid ones, and a name is registered once."""

from collections.abc import Mapping, MutableMapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``table[name]``, or raise a ``ValueError`` that lists the valid names.

    Args:
        table: A registry, e.g. ``ACTIVATIONS``.
        name: The name asked for, exactly as written in ``parameters_*.yml``.
        kind: What the table holds, for the message (``"activation"``).
    Returns:
        The registered value.
    """
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(table)}") from None


def register(table: MutableMapping[str, T], name: str, entry: T, kind: str) -> T:
    """Add ``entry`` to ``table`` under ``name``; a ``ValueError`` if the name is taken.

    Args:
        table: A registry, e.g. ``ACTIVATIONS``.
        name: The entry's name, as ``parameters_*.yml`` will write it.
        entry: What the name stands for.
        kind: What the table holds, for the message (``"activation"``).
    Returns:
        ``entry``.
    """
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = entry
    return entry
