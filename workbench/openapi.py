"""The OpenAPI 3.1 description of the whole v1 API (docs/API.md), served at ``GET /api/v1/openapi.json``.

The document is plain data built by small functions.  Shared pieces are defined once under
``components`` and referenced: the error answer of each status, the path parameters, the schemas of a
session, an execution result and a file entry.  ``tests/test_openapi.py`` keeps the document in step
with the routes the application registers; ``tests/test_fuzz.py`` fuzzes the live server with it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from workbench import __version__
from workbench.workspace import MAX_LIST_LIMIT

JSON = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
SESSION_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
SESSION_STATUSES = ("starting", "ready", "stopped", "expired", "deleted", "failed")
KERNEL_STATES = ("starting", "idle", "busy", "restarting", "dead", "stopped")
EXECUTION_STATUSES = ("ok", "error", "timeout", "aborted")
EVENT_TYPES = (
    "stream",
    "display_data",
    "execute_result",
    "error",
    "clear_output",
    "input_request",
    "done",
    "kernel",
)
ERROR_STATUSES: dict[int, str] = {
    400: "Bad input: malformed JSON, a bad parameter, or a path outside the workspace.",
    401: "No token, or a wrong one.",
    403: "Not allowed with this token.",
    404: "No such session (or not the caller's), or no such file.",
    409: "Conflict with the current state, e.g. the target exists.",
    413: "Too large: the body, an upload, or the workspace quota.",
    415: "Upload refused: the extension is not allowed, or the content does not match it.",
    416: "The requested range is not satisfiable.",
    422: "Well-formed but invalid.",
    429: "A limit was reached; retry after `Retry-After` seconds.",
    503: "The Docker engine (or the kernel) is unavailable.",
}
UPLOAD_ERRORS = (400, 404, 409, 413, 415)
BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}
TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, ending in `Z`."}

# -------------------------------------------------------------------------------------------- helpers


def ref(section: str, name: str) -> JSON:
    return {"$ref": f"#/components/{section}/{name}"}


def schema(name: str) -> JSON:
    return ref("schemas", name)


def obj(properties: JSON, *, required: Iterable[str] = (), closed: bool = False, **extra: Any) -> JSON:
    """A JSON object schema; ``closed`` refuses properties not listed."""
    result: JSON = {"type": "object", "properties": properties, **extra}
    if required:
        result["required"] = list(required)
    if closed:
        result["additionalProperties"] = False
    return result


def json_content(body: JSON) -> JSON:
    return {"application/json": {"schema": body}}


def answer(description: str, content: JSON | None = None, headers: JSON | None = None) -> JSON:
    result: JSON = {"description": description}
    if content is not None:
        result["content"] = content
    if headers is not None:
        result["headers"] = headers
    return result


def header(description: str, **extra: Any) -> JSON:
    return {"description": description, "schema": {"type": "string", **extra}}


def parameter(name: str, where: str, description: str, body: JSON, **extra: Any) -> JSON:
    return {"name": name, "in": where, "description": description, "schema": body, **extra}


def nullable(kind: str, minimum: float, description: str) -> JSON:
    """A limit a request may give, or leave to the server with ``null``."""
    return {"type": [kind, "null"], "minimum": minimum, "description": f"{description} `null`: the default."}


def json_request(body: JSON, *, required: bool = True) -> JSON:
    return {"required": required, "content": json_content(body)}


def operation(
    operation_id: str,
    summary: str,
    answers: JSON,
    *,
    tag: str,
    errors: Iterable[int] = (),
    public: bool = False,
    description: str | None = None,
    parameters: Iterable[JSON] = (),
    body: JSON | None = None,
    security: list[JSON] | None = None,
) -> JSON:
    """One operation; every error status it lists (and 401 unless it is public) is the shared error answer."""
    statuses = set(errors) if public else {401, *errors}
    result: JSON = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {
            **answers,
            **{str(status): ref("responses", f"Error{status}") for status in sorted(statuses)},
        },
    }
    if description:
        result["description"] = description
    if parameters:
        result["parameters"] = list(parameters)
    if body is not None:
        result["requestBody"] = body
    if public:
        result["security"] = []
    elif security is not None:
        result["security"] = security
    return result


def session_item(**operations: JSON) -> JSON:
    """A path item under one session: the ``session_id`` path parameter is declared once, here."""
    return {"parameters": [ref("parameters", "SessionId")], **operations}


# -------------------------------------------------------------------------------------------- schemas


def error_schema() -> JSON:
    detail = obj(
        {
            "code": {"type": "string", "minLength": 1, "description": "A short machine-readable slug."},
            "message": {"type": "string", "description": "Human text; never a traceback or a host path."},
        },
        required=("code", "message"),
    )
    return obj({"error": detail}, required=("error",), closed=True)


def session_schemas() -> JSON:
    limits = obj(
        {"memory_mb": {"type": "integer"}, "cpus": {"type": "number"}, "idle_timeout": {"type": "integer"}},
        required=("memory_mb", "cpus", "idle_timeout"),
    )
    session = obj(
        {
            "id": {"type": "string", "pattern": SESSION_ID_PATTERN},
            "status": {"enum": list(SESSION_STATUSES)},
            "created_at": TIMESTAMP,
            "last_activity_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "kernel": obj({"state": {"enum": list(KERNEL_STATES)}}, required=("state",)),
            "limits": limits,
            "metadata": {"type": "object"},
        },
        required=(
            "id",
            "status",
            "created_at",
            "last_activity_at",
            "expires_at",
            "kernel",
            "limits",
            "metadata",
        ),
    )
    create = obj(
        {
            "idle_timeout": nullable("integer", 1, "Seconds; capped by the server."),
            "memory_mb": nullable("integer", 64, "MiB; capped by the server."),
            "cpus": nullable("number", 0.1, "CPUs; capped by the server."),
            "metadata": {"type": "object", "description": "Free-form, up to 16 KiB."},
        },
        closed=True,
    )
    listing = obj({"sessions": {"type": "array", "items": schema("Session")}}, required=("sessions",))
    return {"Session": session, "SessionCreate": create, "SessionList": listing}


def execution_schemas() -> JSON:
    request = obj(
        {
            "code": {"type": "string", "description": "Python source (up to 1 MiB by default)."},
            "timeout": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "description": "Seconds; capped by the server; `null`: the server's default.",
            },
            "files": {"type": "boolean", "default": True, "description": "`false`: no file change-set."},
        },
        required=("code",),
    )
    error = obj(
        {
            "ename": {"type": "string"},
            "evalue": {"type": "string"},
            "traceback": {"type": "array", "items": {"type": "string"}},
        },
        required=("ename", "evalue", "traceback"),
    )
    result = obj(
        {
            "status": {"enum": list(EXECUTION_STATUSES)},
            "execution_count": {"type": ["integer", "null"]},
            "stdout": {"type": "string"},
            "stderr": {"type": "string"},
            "outputs": {"type": "array", "items": schema("Event")},
            "error": {"oneOf": [{"type": "null"}, error]},
            "duration_ms": {"type": "integer", "minimum": 0},
            "truncated": {"type": "boolean", "description": "Output beyond the server's limit was cut."},
            "reason": {"type": ["string", "null"], "description": "Why the status was set by the server."},
            "files": {"oneOf": [{"type": "null"}, schema("ChangeSet")]},
            "resources": {"oneOf": [{"type": "null"}, schema("Resources")]},
            "n": {"type": ["integer", "null"], "description": "The run's number in the session's history."},
        },
        required=("status", "execution_count", "stdout", "stderr", "outputs", "error", "duration_ms"),
    )
    event = obj(
        {
            "type": {"enum": list(EVENT_TYPES)},
            "id": {"type": "string", "description": "The execute request's id (absent on `kernel` events)."},
        },
        required=("type",),
        description="One event of an execution (the fields of each type: see the WebSocket operation). "
        "`done` carries the execution result's fields and is always the last event of an execute.",
    )
    return {"ExecuteRequest": request, "ExecutionResult": result, "Event": event}


def file_schemas() -> JSON:
    entry = obj(
        {
            "name": {"type": "string"},
            "path": {"type": "string", "description": "Relative to the workspace, `/`-separated."},
            "type": {"enum": ["file", "directory", "symlink", "other"]},
            "size": {"type": "integer", "minimum": 0},
            "modified": TIMESTAMP,
            "mime": {"type": ["string", "null"]},
        },
        required=("name", "path", "type", "size", "modified", "mime"),
    )
    files = obj({"files": {"type": "array", "items": schema("FileEntry")}}, required=("files",))
    count = {"type": "integer", "minimum": 0}
    page = obj(
        {
            "files": {"type": "array", "items": schema("FileEntry")},
            "total": count,
            "offset": count,
            "limit": count,
        },
        required=("files", "total", "offset", "limit"),
    )
    rename = obj({"new_path": {"type": "string", "minLength": 1}}, required=("new_path",))
    upload = obj(
        {
            "file": {"type": "array", "items": BINARY, "minItems": 1},
            "path": {"type": "string", "description": "Target folder in the workspace (default: its root)."},
        },
        required=("file",),
    )
    compat = obj(
        {
            "name": {"type": "string"},
            "session_id": {"type": "string"},
            "size": {"type": "integer"},
            "modified": TIMESTAMP,
        },
        required=("name", "session_id", "size", "modified"),
    )
    return {
        "FileEntry": entry,
        "FileList": files,
        "FilePage": page,
        "Rename": rename,
        "Upload": upload,
        "CompatFileEntry": compat,
    }


def server_schemas() -> JSON:
    health = obj(
        {
            "status": {"enum": ["ok", "degraded"]},
            "docker": {"type": "boolean"},
            "database": {"type": "boolean"},
            "version": {"type": "string"},
        },
        required=("status", "docker", "database", "version"),
    )
    ports = {
        name: {"type": "integer"}
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    }
    connection = obj(
        {
            "transport": {"enum": ["ipc", "tcp"]},
            "ip": {"type": "string"},
            "key": {"type": "string"},
            "signature_scheme": {"type": "string"},
            "kernel_name": {"type": "string"},
            **ports,
        },
        required=("transport", "ip", "key", "signature_scheme", *ports),
    )
    return {"Health": health, "Connection": connection}


# ------------------------------------------------------------------------------------------ components


def parameters() -> JSON:
    return {
        "SessionId": parameter(
            "session_id",
            "path",
            "The session's opaque id.",
            {"type": "string", "pattern": SESSION_ID_PATTERN},
            required=True,
            example="session_0b9c7e5e-4d6f-4bde-9d3c-2f9a1f0e8a11",
        ),
        "FilePath": parameter(
            "path",
            "path",
            "A path relative to the workspace, any Unicode, percent-encoded; its `/` separators are sent as "
            "they are (an encoded `%2F` is refused).",
            {"type": "string", "minLength": 1},
            required=True,
            example="部门预算报告2023.csv",
        ),
        "Recursive": parameter(
            "recursive", "query", "Descend into folders.", {"type": "boolean", "default": False}
        ),
    }


def error_responses() -> JSON:
    return {
        f"Error{status}": answer(text, json_content(schema("Error")))
        for status, text in ERROR_STATUSES.items()
    }


def security_schemes() -> JSON:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>` (`Authorization: token <token>` works too): the "
            "admin token or a tenant's token.",
        },
        "queryToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "For browsers, on WebSocket URLs only.",
        },
    }


# ------------------------------------------------------------------------------------------------ paths


def server_paths() -> JSON:
    op = functools.partial(operation, tag="server", public=True)
    health = json_content(schema("Health"))
    metrics = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/api/v1/health": {
            "get": op(
                "health",
                "Is the engine reachable, is the database reachable",
                {
                    "200": answer("Healthy.", health),
                    "503": answer("Degraded (`status` is `degraded`).", health),
                },
            )
        },
        "/metrics": {
            "get": op("metrics", "Prometheus metrics", {"200": answer("Prometheus text format.", metrics)})
        },
        "/api/v1/openapi.json": {
            "get": op(
                "openapi", "This document", {"200": answer("OpenAPI 3.1.", json_content({"type": "object"}))}
            )
        },
    }


def session_paths() -> JSON:
    op = functools.partial(operation, tag="sessions")
    session = json_content(schema("Session"))
    created = answer(
        "The new session, its kernel ready.", session, {"Location": header("The session's URL.")}
    )
    return {
        "/api/v1/sessions": {
            "post": op(
                "createSession",
                "Create a session",
                {"201": created},
                errors=(400, 413, 422, 429, 503),
                body=json_request(schema("SessionCreate"), required=False),
            ),
            "get": op(
                "listSessions",
                "The caller's sessions",
                {"200": answer("Sessions.", json_content(schema("SessionList")))},
            ),
        },
        "/api/v1/sessions/{session_id}": session_item(
            get=op("getSession", "A session", {"200": answer("The session.", session)}, errors=(404,)),
            delete=op(
                "deleteSession",
                "Remove the kernel and wipe the workspace",
                {"204": answer("Deleted.")},
                errors=(404, 503),
            ),
        ),
        "/api/v1/sessions/{session_id}/interrupt": session_item(
            post=op(
                "interruptSession",
                "Interrupt the running code",
                {"204": answer("Interrupted.")},
                errors=(404, 503),
            ),
        ),
        "/api/v1/sessions/{session_id}/restart": session_item(
            post=op(
                "restartSession",
                "A fresh kernel: variables gone, files kept",
                {"200": answer("The session.", session)},
                errors=(404, 503),
            ),
        ),
    }


def execute_paths() -> JSON:
    result = answer(
        "The execution result, after the code finished; with `Accept: application/x-ndjson`, the execution's "
        "events as they happen, one JSON object per line, `done` last.",
        {
            "application/json": {"schema": schema("ExecutionResult")},
            "application/x-ndjson": {"schema": schema("Event")},
        },
    )
    execute = operation(
        "execute",
        "Run code in the session's kernel",
        {"200": result},
        tag="execution",
        errors=(400, 404, 413, 422, 429, 503),
        body=json_request(schema("ExecuteRequest")),
        description="On `timeout` the kernel was interrupted (and restarted if the interrupt did not land); "
        "the session stays usable.",
    )
    return {"/api/v1/sessions/{session_id}/execute": session_item(post=execute)}


WEBSOCKET_DESCRIPTION = """\
A WebSocket (`Upgrade: websocket`); text frames, one JSON object each.

Client -> server:
- `{"type": "execute", "id": "<client-chosen id>", "code": "...", "timeout": seconds (optional)}`: queued.
- `{"type": "interrupt"}`
- `{"type": "input_reply", "id": "...", "value": "..."}` answers an `input_request`.

Server -> client (`id` = the execute request's id):
- `{"type": "stream", "id", "name": "stdout|stderr", "text"}`
- `{"type": "display_data", "id", "data": {mime: value}, "metadata": {}}` (binary mimes base64)
- `{"type": "execute_result", "id", "execution_count", "data": {...}, "metadata": {}}`
- `{"type": "error", "id", "ename", "evalue", "traceback": [...]}`
- `{"type": "input_request", "id", "prompt", "password": false}`
- `{"type": "done", "id", ...execution result fields...}`: always the last event of an execute.
- `{"type": "kernel", "state": "busy|idle|restarting|dead", "reason": "..."}`: lifecycle news, e.g. `oom`.
- `{"type": "error", "code", "message"}` without `id` for a bad frame (the socket stays open).

Every client connected to the same session sees every execution's events (shared view).

Browsers, which cannot send `Authorization` on a WebSocket, may offer the subprotocols `workbench.v1` and
`workbench.bearer.<the token in unpadded base64url>` (the server answers `workbench.v1`) instead of `?token=`.
Pages of this server connect from any origin it is reached by; other origins need `WORKBENCH_ALLOWED_ORIGINS`.
"""


def websocket_paths() -> JSON:
    socket = operation(
        "sessionWebSocket",
        "Streaming execution over a WebSocket",
        {"101": answer("Switching Protocols: the WebSocket is open.")},
        tag="execution",
        errors=(400, 403, 404),
        description=WEBSOCKET_DESCRIPTION,
        security=[{"bearer": []}, {"queryToken": []}],
    )
    return {"/api/v1/sessions/{session_id}/ws": session_item(get=socket)}


def file_paths() -> JSON:
    op = functools.partial(operation, tag="files")
    entry = json_content(schema("FileEntry"))
    listing = [
        parameter(
            "path", "query", "The folder to list (or one file); default: the root.", {"type": "string"}
        ),
        ref("parameters", "Recursive"),
        parameter(
            "limit",
            "query",
            "Page size.",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
        ),
        parameter("offset", "query", "Entries to skip.", {"type": "integer", "minimum": 0, "default": 0}),
    ]
    raw = {
        "description": "The file's bytes (none: an empty file).",
        "required": False,
        "content": {"application/octet-stream": {"schema": BINARY}},
    }
    return {
        "/api/v1/sessions/{session_id}/files": session_item(
            get=op(
                "listFiles",
                "List the workspace",
                {"200": answer("Entries by path.", json_content(schema("FilePage")))},
                errors=(400, 404, 413),
                parameters=listing,
            ),
            post=op(
                "uploadFiles",
                "Upload files (multipart)",
                {"201": answer("The stored files.", json_content(schema("FileList")))},
                errors=UPLOAD_ERRORS,
                body=multipart_request(),
            ),
        ),
        "/api/v1/sessions/{session_id}/files/{path}": {
            "parameters": [ref("parameters", "SessionId"), ref("parameters", "FilePath")],
            "get": download_operation("downloadFile", "files"),
            "head": download_operation("fileHeaders", "files", head=True),
            "put": op(
                "putFile",
                "Upload one file (raw bytes; parents created)",
                {"201": answer("The stored file.", entry, {"Location": header("The file's URL.")})},
                errors=UPLOAD_ERRORS,
                body=raw,
            ),
            "patch": op(
                "renameFile",
                "Rename or move a file or folder",
                {"200": answer("The moved entry.", entry)},
                errors=(400, 404, 409, 413, 422),
                body=json_request(schema("Rename")),
            ),
            "delete": op(
                "deleteFile",
                "Delete a file (a folder needs recursive=true)",
                {"204": answer("Deleted.")},
                errors=(400, 404, 409),
                parameters=[ref("parameters", "Recursive")],
            ),
        },
    }


def multipart_request() -> JSON:
    encoding = {"file": {"contentType": "application/octet-stream"}}
    form = {"schema": schema("Upload"), "encoding": encoding}
    return {"required": True, "content": {"multipart/form-data": form}}


def download_operation(operation_id: str, tag: str, *, head: bool = False) -> JSON:
    """``GET`` (or ``HEAD``: the same headers, no body) of a workspace file, with ranges and validators."""
    headers = {
        "Content-Disposition": header("`attachment` with an RFC 5987 `filename*`."),
        "ETag": header("The file's version."),
        "X-Content-Type-Options": header("`nosniff`."),
    }
    content = None if head else {"*/*": {"schema": BINARY}}
    ranged = {**headers, "Content-Range": header("The bytes sent, e.g. `bytes 0-99/1000`.")}
    answers = {
        "200": answer("The file.", content, headers),
        "206": answer("The requested range.", content, ranged),
        "304": answer("Not modified (`If-None-Match` matched)."),
    }
    conditions = [
        parameter("Range", "header", "One byte range, e.g. `bytes=0-99`.", {"type": "string"}),
        parameter("If-Range", "header", "Honour `Range` only for this ETag.", {"type": "string"}),
        parameter("If-None-Match", "header", "ETags the client has.", {"type": "string"}),
    ]
    summary = "The headers of a download" if head else "Download a file"
    return operation(operation_id, summary, answers, tag=tag, errors=(400, 404, 416), parameters=conditions)


def compat_paths() -> JSON:
    op = functools.partial(operation, tag="compat")
    filename = parameter(
        "filename",
        "path",
        "A file name at the top of the workspace.",
        {"type": "string", "minLength": 1},
        required=True,
        example="部门预算报告2023.xlsx",
    )
    listing = json_content({"type": "array", "items": schema("CompatFileEntry")})
    return {
        "/api/v1/files/list/{session_id}": session_item(
            get=op(
                "compatListFiles",
                "The files at the top of the workspace",
                {"200": answer("Files.", listing)},
                errors=(404, 413),
            ),
        ),
        "/api/v1/files/download/{session_id}/{filename}": {
            "parameters": [ref("parameters", "SessionId"), filename],
            "get": download_operation("compatDownloadFile", "compat"),
        },
        "/api/v1/files/upload/{session_id}": session_item(
            post=op(
                "compatUploadFile",
                "Upload one file (multipart `file`) to the top of the workspace",
                {"200": answer("The stored file.", json_content(schema("CompatFileEntry")))},
                errors=UPLOAD_ERRORS,
                body=multipart_request(),
            ),
        ),
    }


def library_paths() -> JSON:
    """The tenant's file library: the v1 routes and the original service's "global" ones."""
    op = functools.partial(operation, tag="library")
    entry = json_content(schema("FileEntry"))
    created = {"201": answer("The stored file.", entry, {"Location": header("The file's URL.")})}
    plain_entry = schema("GlobalFileEntry")
    plain = json_content(plain_entry)
    listing = file_paths()["/api/v1/sessions/{session_id}/files"]["get"]["parameters"]
    raw = {"required": False, "content": {"application/octet-stream": {"schema": BINARY}}}
    path = {**ref("parameters", "FilePath"), "description": "A path relative to the library."}
    filename = ref("parameters", "LibraryFilename")
    deleted = obj({"name": {"type": "string"}, "deleted": {"const": True}}, required=("name", "deleted"))
    return {
        "/api/v1/library": {
            "get": op(
                "listLibrary",
                "List the library",
                {"200": answer("Entries by path.", json_content(schema("FilePage")))},
                errors=(400, 404, 413),
                parameters=listing,
            ),
            "post": op(
                "uploadLibraryFiles",
                "Upload files to the library (multipart)",
                {"201": answer("The stored files.", json_content(schema("FileList")))},
                errors=UPLOAD_ERRORS,
                body=multipart_request(),
            ),
        },
        "/api/v1/library/{path}": {
            "parameters": [path],
            "get": download_operation("downloadLibraryFile", "library"),
            "head": download_operation("libraryFileHeaders", "library", head=True),
            "put": op(
                "putLibraryFile", "Upload one file (raw bytes)", created, errors=UPLOAD_ERRORS, body=raw
            ),
            "post": op(
                "publishToLibrary",
                "Copy a file of one of the caller's sessions into the library",
                created,
                errors=(*UPLOAD_ERRORS, 422),
                body=json_request(schema("Publish")),
            ),
            "patch": op(
                "renameLibraryFile",
                "Rename or move",
                {"200": answer("The moved entry.", entry)},
                errors=(400, 404, 409, 413, 422),
                body=json_request(schema("Rename")),
            ),
            "delete": op(
                "deleteLibraryFile",
                "Delete (a folder needs recursive=true)",
                {"204": answer("Deleted.")},
                errors=(400, 404, 409),
                parameters=[ref("parameters", "Recursive")],
            ),
        },
        "/api/v1/files/global/list": {
            "get": op(
                "globalList",
                "The files at the top of the library",
                {
                    "200": answer(
                        "Files.", json_content({"type": "array", "items": schema("GlobalFileEntry")})
                    )
                },
                errors=(404, 413),
            ),
        },
        "/api/v1/files/global/upload": {
            "post": op(
                "globalUpload",
                "Upload one file (multipart `file`) to the top of the library",
                {"200": answer("The stored file.", plain)},
                errors=UPLOAD_ERRORS,
                body=multipart_request(),
            ),
        },
        "/api/v1/files/global/download/{filename}": {
            "parameters": [filename],
            "get": download_operation("globalDownload", "library"),
        },
        "/api/v1/files/global/rename/{filename}": {
            "parameters": [filename],
            "patch": op(
                "globalRename",
                "Rename a file (409 if the new name is taken)",
                {"200": answer("The renamed file.", plain)},
                errors=(400, 404, 409, 413, 422),
                body=json_request(schema("GlobalRename")),
            ),
        },
        "/api/v1/files/global/delete/{filename}": {
            "parameters": [filename],
            "delete": op(
                "globalDelete",
                "Delete a file",
                {"200": answer("Deleted.", json_content(deleted))},
                errors=(400, 404, 409),
            ),
        },
    }


def archive_paths() -> JSON:
    """Whole-workspace zip archives."""
    folder = parameter("path", "query", "A folder of the workspace; default: all of it.", {"type": "string"})
    placed = obj(
        {
            "files": {"type": "array", "items": schema("FileEntry")},
            "count": {"type": "integer", "minimum": 0, "description": "Files extracted."},
            "bytes": {"type": "integer", "minimum": 0},
        },
        required=("files", "count", "bytes"),
    )
    zipped = {"application/zip": {"schema": BINARY}}
    download = operation(
        "downloadArchive",
        "The workspace (or a folder) as a zip, streamed; links and special files left out",
        {"200": answer("The zip.", zipped, {"Content-Disposition": header("`attachment`.")})},
        tag="files",
        errors=(400, 404, 409),
        parameters=[folder],
    )
    upload = operation(
        "uploadArchive",
        "Extract a zip into the workspace (or a folder), all or nothing",
        {"201": answer("The top-level entries placed.", json_content(placed))},
        tag="files",
        errors=(400, 404, 409, 413),
        parameters=[folder],
        body={
            "description": "A zip archive (any `Content-Type`).",
            "required": True,
            "content": {"application/octet-stream": {"schema": BINARY}},
        },
    )
    return {"/api/v1/sessions/{session_id}/archive": session_item(get=download, post=upload)}


def library_components() -> tuple[JSON, JSON]:
    """The schemas and parameters of :func:`library_paths`."""
    string = {"type": "string", "minLength": 1}
    schemas = {
        "GlobalFileEntry": obj(
            {"name": {"type": "string"}, "size": {"type": "integer"}, "modified": TIMESTAMP},
            required=("name", "size", "modified"),
        ),
        "GlobalRename": obj({"new_filename": string}, required=("new_filename",)),
        "Publish": obj(
            {
                "from_session": {"type": "string", "pattern": SESSION_ID_PATTERN},
                "path": {**string, "description": "The file in that session's workspace."},
            },
            required=("from_session", "path"),
        ),
    }
    filename = parameter(
        "filename",
        "path",
        "A file name at the top of the library (no `/`).",
        string,
        required=True,
        example="预算模板.xlsx",
    )
    return schemas, {"LibraryFilename": filename}


def connection_paths() -> JSON:
    connection = operation(
        "getConnection",
        "The kernel's Jupyter connection info (admin token only)",
        {
            "200": answer(
                "As seen from the server host (IPC socket paths).", json_content(schema("Connection"))
            )
        },
        tag="debug",
        errors=(403, 404, 503),
        description="For `workbench attach` or `jupyter console --existing` on the server host.",
    )
    return {"/api/v1/sessions/{session_id}/connection": session_item(get=connection)}


def page_paths() -> JSON:
    op = functools.partial(operation, tag="page", public=True)
    text = {"schema": {"type": "string"}}
    name = parameter(
        "name",
        "path",
        "A file of the page (a JavaScript module or a stylesheet).",
        {"type": "string", "minLength": 1},
        required=True,
        example="main.js",
    )
    asset = {
        "200": answer(
            "The file.",
            {"text/javascript": text, "text/css": text, "text/html": text},
            {"ETag": header("Its version.")},
        ),
        "304": answer("Not modified (`If-None-Match` matched)."),
    }
    return {
        "/": {"get": op("page", "The built-in web page", {"200": answer("The page.", {"text/html": text})})},
        "/static/{name}": {
            "parameters": [name],
            "get": op("pageFile", "A file of the built-in web page", asset, errors=(404,)),
        },
    }


# ------------------------------------------------------------------------------------ runs and state


def run_schemas() -> JSON:
    nullable_number = {"type": ["number", "null"]}
    change = obj(
        {
            "path": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "mime": {"type": ["string", "null"]},
            "sha256": {"type": "string", "description": "For files up to `WORKBENCH_CHANGES_HASH_KB`."},
        },
        required=("path", "size", "mime"),
    )
    entries = {"type": "array", "items": change}
    change_set = obj(
        {
            "created": entries,
            "modified": entries,
            "deleted": entries,
            "truncated": {"type": "boolean", "description": "More entries than listed; see `counts`."},
            "counts": {"type": ["object", "null"]},
            "reason": {"type": "string", "description": "Why the workspace was not scanned."},
        },
        required=("created", "modified", "deleted", "truncated"),
        description="Regular files of `/data` the run created, modified or deleted (links not followed).",
    )
    resources = obj(
        {
            "peak_memory_mb": nullable_number,
            "cpu_seconds": nullable_number,
            "memory_limit_mb": {"type": ["integer", "null"]},
            "peak_scope": {"enum": ["run", "kernel", None]},
        },
        required=("peak_memory_mb", "cpu_seconds", "memory_limit_mb"),
    )
    summary = obj(
        {
            "n": {"type": "integer"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "code": {"type": "string"},
            "status": {"enum": list(EXECUTION_STATUSES)},
            "reason": {"type": ["string", "null"]},
            "execution_count": {"type": ["integer", "null"]},
            "started_at": TIMESTAMP,
            "finished_at": {"type": ["string", "null"]},
            "duration_ms": {"type": ["integer", "null"]},
            "output_bytes": {"type": "integer"},
            "truncated": {"type": "boolean"},
            "error": {"type": ["object", "null"]},
            "files": {"oneOf": [{"type": "null"}, schema("ChangeSet")]},
            "resources": {"oneOf": [{"type": "null"}, schema("Resources")]},
            "outputs_kept": {"type": "boolean"},
        },
        required=("n", "code", "status", "started_at", "duration_ms", "output_bytes", "files"),
    )
    page = obj(
        {
            "executions": {"type": "array", "items": schema("ExecutionSummary")},
            "next": {"type": ["integer", "null"], "description": "Pass as `before` for the next page."},
        },
        required=("executions", "next"),
    )
    detail = {
        "allOf": [
            schema("ExecutionSummary"),
            obj(
                {
                    "stdout": {"type": "string"},
                    "stderr": {"type": "string"},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "events": {"type": "array", "items": {"type": "object"}},
                    "outputs_cut": {"type": "boolean", "description": "The outputs were not (all) kept."},
                },
                required=("stdout", "stderr", "outputs", "outputs_cut"),
            ),
        ]
    }
    variable = obj(
        {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "repr": {"type": ["string", "null"]},
            "size": {"type": ["integer", "null"]},
            "len": {"type": "integer"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "dtype": {"type": "string"},
            "columns": {"type": "array", "items": {"type": "object"}},
        },
        required=("name", "type", "repr", "size"),
    )
    variables = obj(
        {
            "variables": {"type": "array", "items": variable},
            "count": {"type": "integer"},
            "truncated": {"type": "boolean"},
            "partial": {"type": "boolean", "description": "Some variables got no `repr` (time budget)."},
            "execution_count": {"type": ["integer", "null"]},
        },
        required=("variables", "count", "truncated"),
    )
    replay = obj(
        {
            "from": {"type": "integer", "minimum": 1, "description": "First execution number to replay."},
            "restart": {"type": "boolean", "default": False, "description": "Restart the kernel first."},
            "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
        },
        closed=True,
    )
    return {
        "ChangeSet": change_set,
        "Resources": resources,
        "ExecutionSummary": summary,
        "ExecutionPage": page,
        "ExecutionDetail": detail,
        "Variables": variables,
        "ReplayRequest": replay,
    }


def run_paths() -> JSON:
    op = functools.partial(operation, tag="runs")
    notebook = {"application/x-ipynb+json": {"schema": {"type": "object"}}}
    number = parameter(
        "n", "path", "The run's number in the session.", {"type": "integer", "minimum": 1}, required=True,
        example="1",
    )  # fmt: skip
    paging = [
        parameter("limit", "query", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200}),
        parameter("before", "query", "Only runs numbered below this.", {"type": "integer", "minimum": 1}),
    ]
    replayed = answer(
        "The replayed runs' results; with `Accept: application/x-ndjson`, their events as they happen "
        "(`replay_start`, then each run's events and `done`), ending with `replay_done`.",
        {
            "application/json": {"schema": {"type": "object"}},
            "application/x-ndjson": {"schema": schema("Event")},
        },
    )
    run_parameters = [
        parameter("timeout", "query", "Seconds per cell.", {"type": "integer", "minimum": 1}),
        parameter("allow_errors", "query", "Go on after a failing cell.", {"type": "boolean"}),
    ]
    inspect_parameters = [
        parameter(
            "limit", "query", "Most variables listed.", {"type": "integer", "minimum": 1, "maximum": 10000}
        ),
        parameter(
            "wait", "query", "Seconds to wait for a running execution.", {"type": "integer", "minimum": 0}
        ),
    ]
    return {
        "/api/v1/sessions/{session_id}/executions": session_item(
            get=op(
                "listExecutions",
                "The session's runs, newest first",
                {"200": answer("A page of runs.", json_content(schema("ExecutionPage")))},
                errors=(400, 404),
                parameters=paging,
            )
        ),
        "/api/v1/sessions/{session_id}/executions/{n}": {
            "parameters": [ref("parameters", "SessionId"), number],
            "get": op(
                "getExecution",
                "One run with its kept outputs",
                {"200": answer("The run.", json_content(schema("ExecutionDetail")))},
                errors=(404,),
            ),
        },
        "/api/v1/sessions/{session_id}/notebook": session_item(
            get=op(
                "exportNotebook",
                "The session's history as a notebook (nbformat 4)",
                {"200": answer("The .ipynb document.", notebook)},
                errors=(404,),
            )
        ),
        "/api/v1/sessions/{session_id}/notebook/run": session_item(
            post=op(
                "runNotebook",
                "Run a notebook's code cells in order; answers the executed notebook",
                {"200": answer("The executed notebook.", notebook)},
                errors=(400, 404, 413, 422, 503),
                parameters=run_parameters,
                body={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            )
        ),
        "/api/v1/sessions/{session_id}/replay": session_item(
            post=op(
                "replayExecutions",
                "Run the session's successful runs again, in order",
                {"200": replayed},
                errors=(400, 404, 422, 503),
                body=json_request(schema("ReplayRequest"), required=False),
            )
        ),
        "/api/v1/sessions/{session_id}/variables": session_item(
            get=op(
                "listVariables",
                "The kernel's variables (no trace in the session)",
                {"200": answer("The user namespace.", json_content(schema("Variables")))},
                errors=(400, 404, 409, 503),
                parameters=inspect_parameters,
            )
        ),
    }


GATEWAY_PREFIX = "/gateway/{token}"
GATEWAY_DESCRIPTION = (
    "Jupyter gateway protocol (what jupyter_server's gateway client calls): a kernel is a session, its id "
    "the session id. Every route is also served under `/gateway/{token}`, where the path segment "
    "authenticates like the header (for clients that send none)."
)


def gateway_paths() -> JSON:
    """The Jupyter gateway routes (``handlers/gateway.py``), as they are and under ``/gateway/{token}``."""
    kernel_id = parameter("kernel_id", "path", "The kernel's id: the session id.",
                          {"type": "string", "pattern": SESSION_ID_PATTERN}, required=True,
                          example="session_0b9c7e5e-4d6f-4bde-9d3c-2f9a1f0e8a11")  # fmt: skip
    name = parameter("name", "path", "A kernelspec name (`python3`).", {"type": "string"}, required=True,
                     example="python3")  # fmt: skip
    resource = parameter("resource", "path", "A kernelspec resource such as a logo (there are none).",
                         {"type": "string"}, required=True, example="logo-64x64.png")  # fmt: skip
    token = parameter("token", "path", "An API token, in place of the `Authorization` header.",
                      {"type": "string", "minLength": 1}, required=True, example="wbt_example")  # fmt: skip
    model = json_content(schema("GatewayKernel"))
    op = functools.partial(operation, tag="jupyter-gateway", description=GATEWAY_DESCRIPTION)
    items: dict[str, tuple[list[JSON], JSON]] = {
        "/api": ([], {"get": op("gatewayApi", "Server version", {"200": answer("Version.", json_content(
            obj({"version": {"type": "string"}}, required=("version",))))})}),
        "/api/kernelspecs": ([], {"get": op("gatewayKernelspecs", "Kernelspecs", {"200": answer(
            "The one kernelspec, `python3`, and the default.", json_content(obj(
                {"default": {"type": "string"}, "kernelspecs": {"type": "object"}},
                required=("default", "kernelspecs"))))})}),
        "/api/kernelspecs/{name}": ([name], {"get": op("gatewayKernelspec", "One kernelspec", {"200": answer(
            "The kernelspec.", json_content(obj({"name": {"type": "string"}, "spec": {"type": "object"},
                                                 "resources": {"type": "object"}})))}, errors=(404,))}),
        "/kernelspecs/{name}/{resource}": ([name, resource], {"get": op(
            "gatewayKernelspecResource", "A kernelspec resource (none: always 404)", {}, errors=(404,))}),
        "/api/kernels": ([], {
            "get": op("gatewayKernels", "The caller's kernels (sessions)", {"200": answer(
                "Kernel models.", json_content({"type": "array", "items": schema("GatewayKernel")}))}),
            "post": op("gatewayStartKernel", "Start a kernel (create a session)",
                       {"201": answer("The new kernel, ready.", model)}, errors=(400, 404, 422, 429, 503),
                       body=json_request(schema("GatewayKernelStart"), required=False)),
        }),
        "/api/kernels/{kernel_id}": ([kernel_id], {
            "get": op("gatewayKernel", "A kernel model", {"200": answer("The kernel.", model)},
                      errors=(404,)),
            "delete": op("gatewayDeleteKernel", "Shut a kernel down: the session is deleted, files and all",
                         {"204": answer("Deleted.")}, errors=(404,)),
        }),
        "/api/kernels/{kernel_id}/interrupt": ([kernel_id], {"post": op(
            "gatewayInterrupt", "Interrupt the kernel", {"204": answer("Interrupted.")}, errors=(404,))}),
        "/api/kernels/{kernel_id}/restart": ([kernel_id], {"post": op(
            "gatewayRestart", "Restart the kernel (variables gone, files kept)",
            {"200": answer("The kernel.", model)}, errors=(404, 503))}),
        "/api/kernels/{kernel_id}/channels": ([kernel_id], {"get": op(
            "gatewayChannels", "Jupyter messages over a WebSocket (legacy framing or "
            "`v1.kernel.websocket.jupyter.org`)", {"101": answer("Switching Protocols.")},
            errors=(400, 403, 404), security=[{"bearer": []}, {"queryToken": []}])}),
    }  # fmt: skip
    paths: JSON = {}
    for path, (params, operations) in items.items():
        paths[path] = {"parameters": params, **operations} if params else dict(operations)
        prefixed = {
            method: {**body, "operationId": body["operationId"] + "ViaPath", "security": [{"bearer": []}, {}]}
            for method, body in operations.items()
        }
        paths[GATEWAY_PREFIX + path] = {"parameters": [token, *params], **prefixed}
    return paths


def gateway_schemas() -> JSON:
    kernel = obj(
        {
            "id": {"type": "string", "pattern": SESSION_ID_PATTERN},
            "name": {"type": "string"},
            "last_activity": {"type": "string", "description": "`%Y-%m-%dT%H:%M:%S.%fZ` (UTC)."},
            "execution_state": {"enum": ["starting", "idle", "busy", "restarting", "dead"]},
            "connections": {"type": "integer", "minimum": 0},
        },
        required=("id", "name", "last_activity", "execution_state", "connections"),
    )
    start = obj(
        {
            "name": {"type": ["string", "null"], "description": "`python3` (the default)."},
            "env": {
                "type": ["object", "null"],
                "description": "`KERNEL_MEMORY_MB`, `KERNEL_MEMORY` (`512M`, `2Gi`), `KERNEL_CPUS`, "
                "`KERNEL_IDLE_TIMEOUT` become limits (capped); `KERNEL_USERNAME` goes to the metadata; "
                "the rest is ignored.",
            },
        }
    )
    return {"GatewayKernel": kernel, "GatewayKernelStart": start}


# ---------------------------------------------------------------------------------------------- document


@functools.cache
def document() -> JSON:
    """The whole document (built once; treat it as read-only)."""
    paths: JSON = {}
    for part in (
        server_paths,
        session_paths,
        execute_paths,
        websocket_paths,
        file_paths,
        compat_paths,
        connection_paths,
        library_paths,
        archive_paths,
        page_paths,
        run_paths,
        gateway_paths,
    ):
        paths.update(part())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Workbench",
            "version": __version__,
            "description": "Long-lived IPython kernels in locked-down containers, each with a workspace. "
            'Every error answer is JSON: `{"error": {"code", "message"}}`.',
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": error_schema(),
                **session_schemas(),
                **execution_schemas(),
                **file_schemas(),
                **server_schemas(),
                **library_components()[0],
                **run_schemas(),
                **gateway_schemas(),
            },
            "parameters": {**parameters(), **library_components()[1]},
            "responses": error_responses(),
            "securitySchemes": security_schemes(),
        },
    }
