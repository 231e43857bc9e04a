"""JSON as clients may send it: finite numbers only.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e400`` (as ``inf``), none of which is JSON and all of
which break arithmetic and comparisons further on.  Every request body and WebSocket frame is read here, so
each numeric field of each route is checked once.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_INTEGER_DIGITS = 30


def _no_constant(name: str) -> Any:
    msg = f"{name} is not a JSON number"
    raise ValueError(msg)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"the number {text[:40]} is out of range"
        raise ValueError(msg)
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        msg = f"the number {text[:40]}... is out of range"
        raise ValueError(msg)
    return int(text)


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads`` refusing non-finite and absurdly long numbers (``ValueError``, like bad syntax)."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
