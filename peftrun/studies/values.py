"""Config values as a report compares and orders them (mixed None, numbers, text, lists)."""

from __future__ import annotations

import json
from typing import Any


def canon(value: Any) -> str:
    """One text per value, equal for equal values (dict order ignored): for grouping."""
    return json.dumps(value, sort_keys=True, default=str)


def sort_key(value: Any) -> tuple[Any, ...]:
    """Sort key mixing None, numbers and text: None first, numbers by value."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, canon(value))
