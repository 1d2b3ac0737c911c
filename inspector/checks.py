"""Field checks for the JSON files inspector reads back (clean references, scan reports): they come from outside,
so every field a workflow uses is checked for its type and range first, and a wrong one is named."""

from __future__ import annotations

import math
from typing import Any

from inspector.errors import shown


def number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(value: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require(ok: bool, field_name: str, value: Any, wanted: str) -> None:
    """ValueError naming ``field_name``, its value cut short and what it should be, unless ``ok``."""
    if not ok:
        raise ValueError(f"{field_name} {shown(value)} is not {wanted}")


def rates(field_name: str, values: Any, names: list[str], low: float = 0.0, high: float = 1.0) -> None:
    """A {class: number} record over exactly ``names`` (the classes measured), each number in [low, high]."""
    require(isinstance(values, dict) and set(values) == set(names), field_name, values,
            "a record of every measured class")
    bad = next((c for c, v in values.items() if not (number(v) and low <= v <= high)), None)
    if bad is not None:
        raise ValueError(f"{field_name}[{shown(bad)}] {shown(values[bad])} is not a number from {low:g} to {high:g}")
