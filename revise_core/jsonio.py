"""JSON that every reader accepts: non-finite floats become null (Python writes a bare NaN otherwise)."""

from __future__ import annotations

import json
import math


def finite(value: object) -> object:
    """A copy of `value` with every NaN / ±inf float (also in nested dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: object, **kwargs) -> str:
    """json.dumps after `finite`; refuses (ValueError) anything that would still not be standard JSON."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
