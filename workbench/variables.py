"""The variable inspector: what the user namespace of a session's kernel holds, without disturbing it.

The kernel evaluates one *user expression* of a silent execute request (``silent=True``,
``store_history=False``): no ``In``/``Out`` entry, no ``execution_count`` change, no ``execute_input``, and
its IOPub messages answer no execution, so no client's socket sees anything.  The expression runs the
inspector below in a fresh dictionary (it binds no name in the user namespace) and returns one JSON string.
It takes its turn in the session's execution queue, so it never runs beside an execution.

It is bounded: at most ``limit`` variables are described; after ``REPR_BUDGET`` seconds the rest get no
``repr`` (only name, type and cheap facts); reprs are cut with ``reprlib``; modules and names starting with
``_`` (and IPython's own) are left out.  The server checks the answer's shape and size (the kernel runs the
user's code: its answer is not trusted).
"""

from __future__ import annotations

import ast
import json
from typing import Any

from workbench.errors import KernelFailed

REPR_CHARS = 120
REPR_BUDGET = 0.5
MAX_REPLY_CHARS = 16 * 1024 * 1024
MAX_COLUMNS = 200

INSPECTOR = r"""
import json as _json, reprlib as _reprlib, sys as _sys, time as _time, types as _types

def _hidden():
    try:
        from IPython import get_ipython
        return set(get_ipython().user_ns_hidden)
    except Exception:
        return set()

def _type_name(t):
    module = getattr(t, "__module__", "") or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return name if module == "builtins" else f"{module}.{name}"

def _describe(value, item, short, with_repr):
    t = type(value)
    module = getattr(t, "__module__", "") or ""
    if module.startswith("pandas") and t.__name__ == "DataFrame":
        item["shape"] = list(value.shape)
        item["columns"] = [{"name": str(c), "dtype": str(d)} for c, d in list(value.dtypes.items())[:COLUMNS]]
        item["size"] = int(value.memory_usage(index=True, deep=False).sum())
        item["repr"] = f"DataFrame: {value.shape[0]} rows x {value.shape[1]} columns"
        return
    if module.startswith("pandas") and t.__name__ == "Series":
        item["shape"] = list(value.shape)
        item["dtype"] = str(value.dtype)
        item["size"] = int(value.memory_usage(index=True, deep=False))
        item["repr"] = f"Series {value.name!r}: {value.shape[0]} values, dtype {value.dtype}"[:CHARS]
        return
    if module == "numpy" and t.__name__ == "ndarray":
        item["shape"] = list(value.shape)
        item["dtype"] = str(value.dtype)
        item["size"] = int(value.nbytes)
        if with_repr:
            item["repr"] = short.repr(value) if value.size <= 20 else f"array {value.shape} {value.dtype}"
        return
    item["size"] = _sys.getsizeof(value)
    if t in (str, bytes, bytearray, list, tuple, dict, set, frozenset):
        item["len"] = len(value)
    if with_repr:
        item["repr"] = short.repr(value)[:CHARS]

def _inspect(ns, limit):
    short = _reprlib.Repr()
    short.maxstring = short.maxother = CHARS
    short.maxlevel = 2
    hidden = _hidden()
    started = _time.monotonic()
    found, total, partial = [], 0, False
    for name in list(ns):
        if not isinstance(name, str) or name.startswith("_") or name in hidden:
            continue
        value = ns.get(name)
        if isinstance(value, _types.ModuleType):
            continue
        total += 1
        if len(found) >= limit:
            continue
        item = {"name": name, "type": _type_name(type(value))}
        with_repr = _time.monotonic() - started < BUDGET
        partial = partial or not with_repr
        try:
            _describe(value, item, short, with_repr)
        except Exception as error:
            item["repr"] = f"<repr failed: {type(error).__name__}>"
        found.append(item)
    return {"variables": found, "count": total, "truncated": total > len(found), "partial": partial}

OUT = _json.dumps(_inspect(NS, LIMIT), ensure_ascii=True, default=str)
"""


def expression(limit: int) -> str:
    """The user expression that runs the inspector on the user namespace and returns its JSON."""
    source = (
        INSPECTOR.replace("CHARS", str(REPR_CHARS))
        .replace("BUDGET", str(REPR_BUDGET))
        .replace("COLUMNS", str(MAX_COLUMNS))
    )
    return (
        "(lambda d: (__import__('builtins').exec(" + repr(source) + ", d), d['OUT'])[1])"
        f"({{'NS': __import__('builtins').globals(), 'LIMIT': {int(limit)}}})"
    )


def parse(reply: dict[str, Any]) -> dict[str, Any]:
    """The inspector's answer out of the kernel's ``execute_reply`` (checked: the kernel is untrusted)."""
    content = reply.get("content", {})
    value = content.get("user_expressions", {}).get("variables", {}) if isinstance(content, dict) else {}
    if not isinstance(value, dict) or value.get("status") != "ok":
        ename = value.get("ename", "error") if isinstance(value, dict) else "error"
        msg = f"the kernel could not list its variables ({str(ename)[:100]})"
        raise KernelFailed(msg, code="variables-failed")
    text = value.get("data", {}).get("text/plain", "")
    if not isinstance(text, str) or len(text) > MAX_REPLY_CHARS:
        msg = "the kernel's answer is too large or malformed"
        raise KernelFailed(msg, code="variables-failed")
    try:
        literal = ast.literal_eval(text)
        data = json.loads(literal) if isinstance(literal, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("variables"), list):
        msg = "the kernel's answer is malformed"
        raise KernelFailed(msg, code="variables-failed")
    return {
        "variables": [_clean(item) for item in data["variables"] if isinstance(item, dict)],
        "count": _int(data.get("count")) or 0,
        "truncated": data.get("truncated") is True,
        "partial": data.get("partial") is True,
    }


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {
        "name": str(item.get("name", ""))[:256],
        "type": str(item.get("type", ""))[:256],
        "repr": None if item.get("repr") is None else str(item["repr"])[: REPR_CHARS + 64],
        "size": _int(item.get("size")),
    }
    if isinstance(item.get("len"), int):
        clean["len"] = item["len"]
    if isinstance(item.get("shape"), list):
        clean["shape"] = [n for n in item["shape"][:32] if isinstance(n, int)]
    if isinstance(item.get("dtype"), str):
        clean["dtype"] = item["dtype"][:100]
    if isinstance(item.get("columns"), list):
        clean["columns"] = [
            {"name": str(c.get("name", ""))[:256], "dtype": str(c.get("dtype", ""))[:100]}
            for c in item["columns"][:MAX_COLUMNS]
            if isinstance(c, dict)
        ]
    return clean


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
