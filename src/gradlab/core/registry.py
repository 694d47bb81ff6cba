"""One lookup for every name → factory table, so an unknown name always lists the valid ones."""

from collections.abc import Mapping
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
