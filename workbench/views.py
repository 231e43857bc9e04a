"""JSON-ready views the handlers send that do not come from the session manager's answers."""

from __future__ import annotations

from workbench.kernels.execution import Event, ExecutionResult


def failed_done_event(request_id: str, message: str) -> Event:
    """The ``done`` event of an execution that could not run at all."""
    result = ExecutionResult(
        status="error",
        execution_count=None,
        stdout="",
        stderr="",
        outputs=[],
        error={"ename": "WorkbenchError", "evalue": message, "traceback": []},
        duration_ms=0,
        reason=message,
    )
    return {"type": "done", "id": request_id, **result.to_json()}
