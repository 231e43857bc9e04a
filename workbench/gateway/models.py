"""What the Jupyter REST API says about Workbench sessions: kernel models, the kernelspec, start requests."""

from __future__ import annotations

import re
from typing import Any

from workbench.db.models import SessionRow
from workbench.errors import Invalid, NotFound
from workbench.sessions import SessionManager

KERNEL_NAME = "python3"
DISPLAY_NAME = "Python 3 (Workbench sandbox)"
# A stopped (idle-culled) session comes back on its next use: it is "idle" to a front end.
EXECUTION_STATES = {"stopped": "idle"}
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?", re.IGNORECASE)
_UNITS = {"": 1 / 2**20, "k": 1e3 / 2**20, "ki": 1 / 2**10, "m": 1e6 / 2**20, "mi": 1.0,
          "g": 1e9 / 2**20, "gi": 2**10, "t": 1e12 / 2**20, "ti": 2**20}  # fmt: skip
MAX_USERNAME = 200


def kernel_model(manager: SessionManager, row: SessionRow) -> dict[str, Any]:
    """The kernel model of jupyter_server's REST API (the fields JupyterLab and culling read)."""
    state = manager.to_json(row)["kernel"]["state"]
    kernel = manager.kernels.get(row.id)
    return {
        "id": row.id,
        "name": KERNEL_NAME,
        "last_activity": row.last_activity_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "execution_state": EXECUTION_STATES.get(state, state),
        "connections": len(kernel.raw_listeners) if kernel is not None else 0,
    }


def kernelspec() -> dict[str, Any]:
    return {
        "name": KERNEL_NAME,
        "spec": {
            "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": DISPLAY_NAME,
            "language": "python",
            "interrupt_mode": "signal",
            "env": {},
            "metadata": {
                "workbench": {
                    "sandbox": "a locked-down container: no network, read-only root, limits",
                    "workspace": "/data",
                }
            },
        },
        "resources": {},
    }


def check_kernel_name(name: Any) -> None:
    if name not in (None, "", KERNEL_NAME):
        msg = f"no kernelspec {str(name)[:64]!r} (Workbench offers {KERNEL_NAME!r})"
        raise NotFound(msg, code="kernelspec-not-found")


def session_request(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/kernels``'s ``{"name", "env"}`` as a session create request.

    The ``KERNEL_*`` keys with a safe meaning become limits (the server's and the tenant's caps still
    apply): ``KERNEL_MEMORY_MB`` or ``KERNEL_MEMORY`` (``512M``, ``2Gi``...), ``KERNEL_CPUS``,
    ``KERNEL_IDLE_TIMEOUT`` (seconds); ``KERNEL_USERNAME`` is kept in the metadata.  Other keys are ignored:
    nothing reaches the kernel's environment.
    """
    check_kernel_name(body.get("name"))
    env = body.get("env")
    env = {} if env is None else env
    if not isinstance(env, dict):
        msg = "env must be an object"
        raise Invalid(msg)
    request: dict[str, Any] = {"metadata": {"source": "jupyter-gateway"}}
    if "KERNEL_MEMORY_MB" in env:
        request["memory_mb"] = _number(env, "KERNEL_MEMORY_MB", integer=True)
    elif "KERNEL_MEMORY" in env:
        request["memory_mb"] = _memory(env["KERNEL_MEMORY"])
    if "KERNEL_CPUS" in env:
        request["cpus"] = _number(env, "KERNEL_CPUS")
    if "KERNEL_IDLE_TIMEOUT" in env:
        request["idle_timeout"] = _number(env, "KERNEL_IDLE_TIMEOUT", integer=True)
    username = env.get("KERNEL_USERNAME")
    if isinstance(username, str) and username:
        request["metadata"]["username"] = username[:MAX_USERNAME]
    return request


def _number(env: dict[str, Any], key: str, *, integer: bool = False) -> float:
    value = env[key]
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")) or (integer and number != int(number)):
        msg = f"{key} must be {'an integer' if integer else 'a number'}"
        raise Invalid(msg)
    return int(number) if integer else number


def _memory(value: Any) -> int:
    match = _QUANTITY.fullmatch(str(value).strip()) if isinstance(value, str | int) else None
    if match is None:
        msg = "KERNEL_MEMORY must be a size such as 512M, 2G or 2Gi"
        raise Invalid(msg)
    megabytes = float(match[1]) * _UNITS[(match[2] or "").lower()]
    if not 0 < megabytes < 2**40:
        msg = "KERNEL_MEMORY is out of range"
        raise Invalid(msg)
    return max(1, int(megabytes))
