"""One execute request: its kernel messages turned into API events, and its result.

Events go out as they come (to every listener of the session); what is kept for the ``done`` event and
the REST answer is capped, with a visible notice when output was cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from workbench.kernels.client import Message
from workbench.kernels.frames import CUT_KEY

Event = dict[str, Any]
Publish = Callable[[Event], None]

TRUNCATION_NOTICE = (
    "\n[workbench: output truncated: {dropped} bytes beyond the {limit} KiB kept per execution]\n"
)


@dataclasses.dataclass
class ExecutionResult:
    status: str
    execution_count: int | None
    stdout: str
    stderr: str
    outputs: list[Event]
    error: dict[str, Any] | None
    duration_ms: int
    truncated: bool = False
    reason: str | None = None
    files: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    n: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def event_from_message(request_id: str, message: Message) -> Event | None:
    """The API event for one IOPub message, or ``None`` for messages clients don't see."""
    kind = message["header"]["msg_type"]
    content = message.get("content", {})
    if kind == "stream":
        return {
            "type": "stream",
            "id": request_id,
            "name": content.get("name", "stdout"),
            "text": content.get("text", ""),
        }
    if kind in ("display_data", "update_display_data"):
        return {
            "type": "display_data",
            "id": request_id,
            "data": content.get("data", {}),
            "metadata": content.get("metadata", {}),
        }
    if kind == "execute_result":
        return {
            "type": "execute_result",
            "id": request_id,
            "execution_count": content.get("execution_count"),
            "data": content.get("data", {}),
            "metadata": content.get("metadata", {}),
        }
    if kind == "error":
        return {
            "type": "error",
            "id": request_id,
            "ename": content.get("ename", ""),
            "evalue": content.get("evalue", ""),
            "traceback": content.get("traceback", []),
        }
    if kind == "clear_output":
        return {"type": "clear_output", "id": request_id, "wait": bool(content.get("wait"))}
    return None


class Execution:
    """Collects the events and the outcome of one execute request."""

    def __init__(self, request_id: str, code: str, *, max_output_bytes: int, publish: Publish) -> None:
        self.request_id = request_id
        self.code = code
        self.msg_id: str | None = None
        self.publish = publish
        self.max_output_bytes = max_output_bytes
        self.started = time.monotonic()
        self.finished = asyncio.Event()
        self.output_bytes = 0
        self._kept_bytes = 0
        self._dropped_bytes = 0
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._outputs: list[Event] = []
        self.kept: list[Event] = []  # every kept event, streams included, in order (for the history)
        self._error: dict[str, Any] | None = None
        self._execution_count: int | None = None
        self._reply_status: str | None = None
        self._idle = False
        self.result: ExecutionResult | None = None

    # messages from the kernel

    def on_iopub(self, message: Message) -> None:
        kind = message["header"]["msg_type"]
        if kind == "status":
            if message["content"].get("execution_state") == "idle":
                self._idle = True
                self._check_finished()
            return
        if kind == "execute_input":
            self._execution_count = message["content"].get("execution_count", self._execution_count)
            return
        event = event_from_message(self.request_id, message)
        if event is None:
            return
        self._dropped_bytes += message.get(CUT_KEY, 0)  # cut at the source: the result says so
        self._keep(event)
        self.publish(event)

    def on_reply(self, message: Message) -> None:
        content = message.get("content", {})
        self._reply_status = content.get("status", "error")
        self._execution_count = content.get("execution_count", self._execution_count)
        self._check_finished()

    def on_reply_future(self, future: asyncio.Future[Message]) -> None:
        if not future.cancelled():
            self.on_reply(future.result())

    def on_input_request(self, message: Message) -> None:
        content = message.get("content", {})
        self.publish(
            {
                "type": "input_request",
                "id": self.request_id,
                "prompt": content.get("prompt", ""),
                "password": bool(content.get("password")),
            }
        )

    def _check_finished(self) -> None:
        if self._idle and self._reply_status is not None:
            self.finished.set()

    def _keep(self, event: Event) -> None:
        if event["type"] == "error":
            self._error = {key: event[key] for key in ("ename", "evalue", "traceback")}
        size = len(event["text"].encode()) if event["type"] == "stream" else len(json.dumps(event))
        self.output_bytes += size
        if self._kept_bytes + size > self.max_output_bytes:
            self._dropped_bytes += size
            return
        self._kept_bytes += size
        self.kept.append(event)
        if event["type"] == "stream":
            (self._stderr if event["name"] == "stderr" else self._stdout).append(event["text"])
        else:
            self._outputs.append(event)

    # the outcome

    def complete(
        self, status: str | None = None, reason: str | None = None, error: dict[str, Any] | None = None
    ) -> ExecutionResult:
        """The result: the kernel's own status, unless ``status`` overrides it (timeout, death)."""
        if self.result is not None:
            return self.result
        final = status or self._reply_status or "aborted"
        stdout = "".join(self._stdout)
        if self._dropped_bytes:
            stdout += TRUNCATION_NOTICE.format(
                dropped=self._dropped_bytes, limit=self.max_output_bytes // 1024
            )
        self.result = ExecutionResult(
            status=final,
            execution_count=self._execution_count,
            stdout=stdout,
            stderr="".join(self._stderr),
            outputs=self._outputs,
            error=error or self._error,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            truncated=bool(self._dropped_bytes),
            reason=reason,
        )
        self.finished.set()
        return self.result

    def done_event(self) -> Event:
        assert self.result is not None
        return {"type": "done", "id": self.request_id, **self.result.to_json()}


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
