"""What one session may hold of queued work: code size, pending executes, and the code kept on record.

The same bounds apply to every way in (REST, NDJSON, WebSocket): code larger than ``max_code_kb`` is
refused before it is queued, a session holds at most :data:`MAX_PENDING` executes (queued or running) and
refuses more with ``queue-full`` (429) until some finish, and the code stored with each execution record
is cut to :data:`STORED_CODE_BYTES` with a visible marker.
"""

from __future__ import annotations

from workbench.errors import LimitReached, TooLarge

MAX_PENDING = 64
"""Most executes one session holds at once (queued or running), from all its clients together."""
STORED_CODE_BYTES = 256 * 1024
"""Most bytes of an execution's code kept in the database."""
STORED_CODE_MARKER = "\n# [workbench: {dropped} more bytes of code were run but not stored]\n"


def check_code(code: str, max_code_kb: int) -> None:
    """Refuse code larger than the server's limit (the limit of every route)."""
    if len(code) > max_code_kb * 1024 or len(code.encode("utf-8", "surrogatepass")) > max_code_kb * 1024:
        msg = f"`code` is larger than {max_code_kb} KiB"
        raise TooLarge(msg)


def stored_code(code: str, limit: int = STORED_CODE_BYTES) -> str:
    """``code`` as it goes into the execution record: cut to ``limit`` UTF-8 bytes, with a marker."""
    data = code.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return code
    kept = data[:limit].decode("utf-8", "ignore")
    return kept + STORED_CODE_MARKER.format(dropped=len(data) - len(kept.encode("utf-8", "surrogatepass")))


class Ticket:
    """One admitted execute; :meth:`release` (idempotent) frees its place."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.pending -= 1
            self._admission = None


class Admission:
    """Counts the executes a session holds, and refuses past :data:`MAX_PENDING`."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self.pending = 0

    def admit(self) -> Ticket:
        if self.pending >= self.limit:
            msg = f"this session already holds {self.limit} executes; wait for some to finish"
            raise LimitReached(msg, code="queue-full")
        self.pending += 1
        return Ticket(self)
