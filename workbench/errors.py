"""One error hierarchy, mapped to one JSON shape: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations


class WorkbenchError(Exception):
    """An error the API reports to the caller, with its HTTP status and a short machine-readable code."""

    status = 500
    code = "internal-error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(WorkbenchError):
    status = 400
    code = "bad-request"


class Unauthorized(WorkbenchError):
    status = 401
    code = "unauthorized"


class Forbidden(WorkbenchError):
    status = 403
    code = "forbidden"


class NotFound(WorkbenchError):
    status = 404
    code = "not-found"


class Conflict(WorkbenchError):
    status = 409
    code = "conflict"


class TooLarge(WorkbenchError):
    status = 413
    code = "too-large"


class UnsupportedType(WorkbenchError):
    status = 415
    code = "unsupported-type"


class Invalid(WorkbenchError):
    status = 422
    code = "invalid"


class LimitReached(WorkbenchError):
    status = 429
    code = "limit-reached"


class EngineUnavailable(WorkbenchError):
    status = 503
    code = "engine-unavailable"


class DatabaseUnavailable(WorkbenchError):
    """The database did not answer in time."""

    status = 503
    code = "database-unavailable"


class KernelFailed(WorkbenchError):
    """The kernel could not be started or reached."""

    status = 503
    code = "kernel-failed"
