"""The Python client of the Workbench API: ``Workbench`` (blocking) and ``AsyncWorkbench`` (asyncio).

::

    from workbench.client import Workbench

    with Workbench("http://127.0.0.1:8765", token) as wb, wb.create_session(memory_mb=1024) as session:
        session.upload("部门预算报告2023.xlsx")
        result = session.run("import pandas as pd; pd.read_excel('部门预算报告2023.xlsx').shape",
                             on_output=print)
        print(result.status, result.outputs)

Both flavours speak the API through the same request builders (``_Call``), response parsers, execute
protocol (``_Run``) and file helpers; they differ only in the transport: ``httpx.Client`` and
``websockets.sync`` for the blocking one, ``httpx.AsyncClient`` and ``websockets.asyncio`` for the other.
Every error answer raises a ``WorkbenchAPIError`` subclass chosen by the HTTP status, carrying the API's
error ``code``; network failures raise httpx's or websockets' own exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar
from urllib.parse import quote

import httpx
import websockets.asyncio.client
import websockets.sync.client
from tqdm import tqdm
from websockets.exceptions import InvalidStatus

__all__ = [
    "AsyncLibrary",
    "AsyncSession",
    "AsyncWorkbench",
    "BadRequest",
    "Conflict",
    "EngineUnavailable",
    "Execution",
    "FileEntry",
    "Forbidden",
    "Invalid",
    "Library",
    "LimitReached",
    "NotFound",
    "Session",
    "SessionInfo",
    "TooLarge",
    "Unauthorized",
    "UnsupportedType",
    "Workbench",
    "WorkbenchAPIError",
    "default_token",
    "default_url",
]

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_STATE_DIR = "~/.local/state/workbench"
API = "/api/v1"
CHUNK_BYTES = 1024 * 1024
MAX_FRAME_BYTES = 256 * 1024 * 1024
HTTP_TIMEOUT = httpx.Timeout(300.0, connect=10.0)

Event = dict[str, Any]
OutputHandler = Callable[[Event], object]
InputHandler = Callable[[str, bool], str]
T = TypeVar("T")


# Where the server is


def default_url() -> str:
    """``$WORKBENCH_URL``, else the server's default address."""
    return os.environ.get("WORKBENCH_URL") or DEFAULT_URL


def default_token() -> str | None:
    """``$WORKBENCH_TOKEN``, else the admin token a local server saved in its state directory, if readable."""
    token = os.environ.get("WORKBENCH_TOKEN")
    if token:
        return token
    state_dir = Path(os.environ.get("WORKBENCH_STATE_DIR") or DEFAULT_STATE_DIR).expanduser()
    try:
        return (state_dir / "admin-token").read_text().strip() or None
    except OSError:
        return None


# Errors


class WorkbenchAPIError(Exception):
    """An error answer of the API: its HTTP status, its machine-readable ``code`` and the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequest(WorkbenchAPIError):
    """400: the request is malformed (bad JSON, a path outside the workspace, ...)."""


class Unauthorized(WorkbenchAPIError):
    """401: no token, or a wrong one."""


class Forbidden(WorkbenchAPIError):
    """403: the token may not do this (e.g. attach without the admin token)."""


class NotFound(WorkbenchAPIError):
    """404: no such session (or it expired), or no such file."""


class Conflict(WorkbenchAPIError):
    """409: e.g. renaming onto an existing file."""


class TooLarge(WorkbenchAPIError):
    """413: a file, a workspace quota or a piece of code is too large."""


class UnsupportedType(WorkbenchAPIError):
    """415: an upload's extension or content is refused."""


class Invalid(WorkbenchAPIError):
    """422: well-formed but invalid (an unknown limit, a negative timeout, ...)."""


class LimitReached(WorkbenchAPIError):
    """429: the server runs as many sessions as it may."""


class EngineUnavailable(WorkbenchAPIError):
    """503: the container engine or the kernel is unavailable."""


_ERRORS_BY_STATUS: dict[int, type[WorkbenchAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedType,
    422: Invalid,
    429: LimitReached,
    503: EngineUnavailable,
}


def api_error(status: int, body: bytes) -> WorkbenchAPIError:
    """The typed exception for an error answer (``{"error": {"code", "message"}}``, or anything else)."""
    code, message = f"http-{status}", body.decode(errors="replace").strip()[:500]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    return _ERRORS_BY_STATUS.get(status, WorkbenchAPIError)(status, code, message)


def _checked(response: httpx.Response) -> httpx.Response:
    """``response`` itself, or the typed exception for it (its body must have been read)."""
    if response.is_error:
        raise api_error(response.status_code, response.content)
    return response


def _websocket_error(error: InvalidStatus) -> WorkbenchAPIError:
    return api_error(error.response.status_code, bytes(error.response.body or b""))


# What the API answers


@dataclasses.dataclass(frozen=True)
class Execution:
    """The outcome of one ``run``: ``status`` is ``ok``, ``error``, ``timeout`` or ``aborted``.

    ``outputs`` holds the rich events (``display_data``, ``execute_result``, ``error``) as the API sends
    them (images base64 under ``data["image/png"]``); ``error`` is ``{"ename", "evalue", "traceback"}``.
    ``files`` is the run's change-set of ``/data`` (``{"created", "modified", "deleted"}``, each a list of
    ``{"path", "size", "mime", "sha256"?}``; ``None`` when skipped), ``resources`` its
    ``{"peak_memory_mb", "cpu_seconds", "memory_limit_mb"}``, ``n`` its number in the session's history.
    """

    status: str
    stdout: str
    stderr: str
    outputs: list[Event]
    error: dict[str, Any] | None
    execution_count: int | None
    duration_ms: int
    truncated: bool = False
    reason: str | None = None
    files: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    n: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def created_files(self) -> list[str]:
        """Paths (in ``/data``) the run created or modified, from its change-set."""
        if not self.files:
            return []
        return [entry["path"] for kind in ("created", "modified") for entry in self.files.get(kind, [])]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Execution:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """A session as the API last described it; ``raw`` is the whole JSON object."""

    id: str
    status: str
    kernel_state: str
    created_at: str
    last_activity_at: str
    expires_at: str | None
    limits: dict[str, Any]
    metadata: dict[str, Any]
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionInfo:
        return cls(
            id=data["id"],
            status=data["status"],
            kernel_state=data.get("kernel", {}).get("state", "unknown"),
            created_at=data.get("created_at", ""),
            last_activity_at=data.get("last_activity_at", ""),
            expires_at=data.get("expires_at"),
            limits=data.get("limits", {}),
            metadata=data.get("metadata", {}),
            raw=data,
        )


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One file or directory of a session's workspace; ``path`` is relative to ``/data``."""

    name: str
    path: str
    type: str
    size: int
    modified: str
    mime: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(
            name=data["name"],
            path=data.get("path", data["name"]),
            type=data.get("type", "file"),
            size=int(data.get("size") or 0),
            modified=data.get("modified", ""),
            mime=data.get("mime"),
        )


# Requests: built once, sent by either transport


@dataclasses.dataclass(frozen=True)
class _Call(Generic[T]):
    """One REST request and how to read its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None


def _nothing(response: httpx.Response) -> None:
    return None


def _session(response: httpx.Response) -> SessionInfo:
    return SessionInfo.from_json(response.json())


def _sessions(response: httpx.Response) -> list[SessionInfo]:
    return [SessionInfo.from_json(item) for item in response.json()["sessions"]]


def _entry(response: httpx.Response) -> FileEntry:
    return FileEntry.from_json(response.json())


def _entries(response: httpx.Response) -> list[FileEntry]:
    return [FileEntry.from_json(item) for item in response.json()["files"]]


def _object(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def _session_path(session_id: str, action: str = "") -> str:
    return f"{API}/sessions/{quote(session_id, safe='')}{action}"


def _file_path(session_id: str, path: str) -> str:
    """The URL path of one workspace file: ``/``-separated, each part percent-encoded (UTF-8)."""
    return _session_path(session_id, "/files/" + quote(path.strip("/"), safe="/"))


def _text(response: httpx.Response) -> str:
    return response.text


def _history_call(session_id: str, limit: int, before: int | None) -> _Call[list[dict[str, Any]]]:
    params = {"limit": str(limit)} | ({"before": str(before)} if before is not None else {})
    return _Call(
        "GET", _session_path(session_id, "/executions"), lambda r: list(r.json()["executions"]), params=params
    )


def _variables_call(session_id: str, wait: float | None) -> _Call[dict[str, Any]]:
    params = {"wait": str(int(wait))} if wait is not None else None
    return _Call("GET", _session_path(session_id, "/variables"), _object, params=params)


def _notebook_run_call(
    session_id: str, notebook: dict[str, Any] | str, allow_errors: bool, timeout: float | None
) -> _Call[dict[str, Any]]:
    body = json.loads(notebook) if isinstance(notebook, str) else notebook
    params = {"allow_errors": "true" if allow_errors else "false"}
    if timeout is not None:
        params["timeout"] = str(int(timeout))
    return _Call("POST", _session_path(session_id, "/notebook/run"), _object, json=body, params=params)


def _replay_body(start: int, restart: bool, timeout: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"from": start, "restart": restart}
    if timeout is not None:
        body["timeout"] = timeout
    return body


def _replay_line(line: str, on_output: OutputHandler | None) -> Event | None:
    """One NDJSON line of a replay: handed to ``on_output``; the closing summary is returned."""
    if not line.strip():
        return None
    event: Event = json.loads(line)
    if on_output is not None:
        on_output(event)
    return event if event.get("type") == "replay_done" else None


NDJSON_HEADERS = {"Accept": "application/x-ndjson"}


def _create_call(limits: dict[str, Any]) -> _Call[SessionInfo]:
    body = {name: value for name, value in limits.items() if value is not None}
    return _Call("POST", f"{API}/sessions", _session, json=body)


def _get_call(session_id: str) -> _Call[SessionInfo]:
    return _Call("GET", _session_path(session_id), _session)


def _list_call() -> _Call[list[SessionInfo]]:
    return _Call("GET", f"{API}/sessions", _sessions)


def _files_call(session_id: str, path: str, recursive: bool) -> _Call[list[FileEntry]]:
    params = {"path": path.strip("/"), "recursive": "true" if recursive else "false"}
    return _Call("GET", _session_path(session_id, "/files"), _entries, params=params)


def _remove_call(session_id: str, path: str, recursive: bool) -> _Call[None]:
    params = {"recursive": "true"} if recursive else None
    return _Call("DELETE", _file_path(session_id, path), _nothing, params=params)


def _put_call(url: str, size: int) -> _Call[FileEntry]:
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    return _Call("PUT", url, _entry, headers=headers)


def _library_path(path: str = "") -> str:
    """The URL path of the library (``""``) or of one of its files."""
    return f"{API}/library" + (f"/{quote(path.strip('/'), safe='/')}" if path.strip("/") else "")


def _library_files_call(path: str, recursive: bool) -> _Call[list[FileEntry]]:
    params = {"path": path.strip("/"), "recursive": "true" if recursive else "false"}
    return _Call("GET", _library_path(), _entries, params=params)


def _library_rename_call(path: str, new_path: str) -> _Call[FileEntry]:
    return _Call("PATCH", _library_path(path), _entry, json={"new_path": new_path})


def _library_remove_call(path: str, recursive: bool) -> _Call[None]:
    params = {"recursive": "true"} if recursive else None
    return _Call("DELETE", _library_path(path), _nothing, params=params)


def _publish_call(session_id: str, path: str, target: str | None) -> _Call[FileEntry]:
    body = {"from_session": session_id, "path": path}
    return _Call("POST", _library_path(target or path.rsplit("/", 1)[-1]), _entry, json=body)


def _archive_upload_call(session_id: str, path: str, size: int) -> _Call[dict[str, Any]]:
    headers = {"Content-Length": str(size), "Content-Type": "application/zip"}
    params = {"path": path.strip("/")}
    return _Call("POST", _session_path(session_id, "/archive"), _object, params=params, headers=headers)


def _archive_name(session_id: str, path: str) -> str:
    return "-".join((session_id, *[part for part in path.strip("/").split("/")[-1:] if part])) + ".zip"


# Files: streamed from and to disk


def _progress_bar(total: int | None, enabled: bool, label: str) -> tqdm[NoReturn]:
    """A byte-counting bar on stderr (shown only after half a second, so small transfers stay quiet)."""
    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not enabled, delay=0.5
    )


def _read_chunks(path: Path, bar: tqdm[NoReturn]) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            bar.update(len(chunk))
            yield chunk


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """An async view of a blocking iterator, each step run in a worker thread."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


def _download_target(remote: str, local: str | os.PathLike[str] | None) -> Path:
    """Where a download goes: ``local``, inside it when it is a directory, else the remote name here."""
    name = remote.rstrip("/").rsplit("/", 1)[-1]
    if local is None:
        return Path(name)
    target = Path(local)
    return target / name if target.is_dir() else target


class _Sink:
    """A download being written next to its target, renamed into place only once it is complete."""

    def __init__(self, target: Path, response: httpx.Response, progress: bool) -> None:
        self.target = target
        self.partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        length = response.headers.get("Content-Length")
        self.bar = _progress_bar(int(length) if length else None, progress, target.name)
        self.stream = self.partial.open("xb")

    def write(self, chunk: bytes) -> None:
        self.stream.write(chunk)
        self.bar.update(len(chunk))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        self.stream.close()
        self.bar.close()
        if kind is None:
            self.partial.replace(self.target)
        else:
            self.partial.unlink(missing_ok=True)


# Execution over the WebSocket


class _Run:
    """One execute request over the session's WebSocket: the frame to send and the events answering it.

    Only this request's events and the kernel's lifecycle news (``kernel`` events) reach ``on_output``;
    other clients' executions on the same session are skipped.
    """

    def __init__(
        self,
        code: str,
        timeout: float | None,
        on_output: OutputHandler | None,
        on_input: InputHandler | None,
        files: bool = True,
    ) -> None:
        self.id = uuid.uuid4().hex
        frame: Event = {"type": "execute", "id": self.id, "code": code}
        if timeout is not None:
            frame["timeout"] = timeout
        if not files:
            frame["files"] = False
        self.frame = json.dumps(frame)
        self.on_output = on_output
        self.on_input = on_input
        self._result: Execution | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def result(self) -> Execution:
        if self._result is None:
            msg = "the execution has not finished"
            raise RuntimeError(msg)
        return self._result

    def feed(self, message: str | bytes) -> str | None:
        """Take one event from the server; returns a frame to send back (an ``input_reply``) if one is due."""
        event: Event = json.loads(message)
        if event.get("id") != self.id and event.get("type") != "kernel":
            return None
        if self.on_output is not None:
            self.on_output(event)
        if event["type"] == "done":
            self._result = Execution.from_json(event)
        elif event["type"] == "input_request":
            return self._input_reply(event)
        return None

    def _input_reply(self, request: Event) -> str:
        prompt, password = request.get("prompt", ""), bool(request.get("password"))
        value = self.on_input(prompt, password) if self.on_input is not None else ""
        return json.dumps({"type": "input_reply", "id": self.id, "value": value})


def _websocket_url(base_url: str, session_id: str) -> str:
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{_session_path(session_id, '/ws')}"


class _Base:
    """Where the server is and how to authenticate; shared by both flavours."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = (url or default_url()).rstrip("/")
        token = token or default_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def websocket_url(self, session_id: str) -> str:
        return _websocket_url(self.url, session_id)


W = TypeVar("W", bound=_Base)


class _SessionBase(Generic[W]):
    def __init__(self, workbench: W, info: SessionInfo) -> None:
        self.workbench = workbench
        self.id = info.id
        self.info = info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.info.status}>"


# The blocking client


class Workbench(_Base):
    """A blocking client.  ``url`` and ``token`` default to ``$WORKBENCH_URL`` and ``$WORKBENCH_TOKEN``
    (else the admin token a server on this host saved in ``$WORKBENCH_STATE_DIR/admin-token``)."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        super().__init__(url, token)
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=HTTP_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, call: _Call[T], content: Iterator[bytes] | None = None) -> T:
        response = self.http.request(
            call.method, call.path, json=call.json, params=call.params, headers=call.headers, content=content
        )
        return call.parse(_checked(response))

    def create_session(self, **limits: Any) -> Session:
        """A new session (``memory_mb``, ``cpus``, ``idle_timeout``, ``metadata``); its kernel is ready."""
        return Session(self, self._send(_create_call(limits)))

    def session(self, session_id: str) -> Session:
        """An existing session (``NotFound`` if there is none by that id)."""
        return Session(self, self._send(_get_call(session_id)))

    def sessions(self) -> list[Session]:
        return [Session(self, info) for info in self._send(_list_call())]

    @property
    def library(self) -> Library:
        """The caller's tenant file library (``/library`` in every session's kernel)."""
        return Library(self)

    def _upload(
        self, call_for: Callable[[int], _Call[T]], local: str | os.PathLike[str], progress: bool
    ) -> T:
        """Stream the local file ``local`` as the body of ``call_for(its size)``."""
        source = Path(local)
        size = source.stat().st_size
        with _progress_bar(size, progress, source.name) as bar:
            return self._send(call_for(size), content=_read_chunks(source, bar))

    def _download(self, url: str, target: Path, progress: bool, params: dict[str, str] | None = None) -> Path:
        with self.http.stream("GET", url, params=params) as response:
            if response.is_error:
                response.read()
                _checked(response)
            with _Sink(target, response, progress) as sink:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    sink.write(chunk)
        return target


class Session(_SessionBase["Workbench"]):
    """One session of a ``Workbench``; as a context manager, it is deleted on exit."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def run(
        self,
        code: str,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
        on_input: InputHandler | None = None,
        files: bool = True,
    ) -> Execution:
        """Run ``code`` in the kernel and wait for it; every event goes to ``on_output`` as it arrives.

        ``timeout`` (seconds) is enforced by the server, which interrupts the code and answers ``timeout``.
        ``on_input(prompt, password)`` answers ``input()`` calls (without it they read an empty line).
        ``files=False`` skips the run's file change-set (``Execution.files`` is then ``None``).
        """
        run = _Run(code, timeout, on_output, on_input, files)
        try:
            socket = websockets.sync.client.connect(
                self.workbench.websocket_url(self.id),
                additional_headers=self.workbench.headers,
                max_size=MAX_FRAME_BYTES,
            )
        except InvalidStatus as error:
            raise _websocket_error(error) from None
        with socket:
            socket.send(run.frame)
            while not run.done:
                reply = run.feed(socket.recv())
                if reply is not None:
                    socket.send(reply)
        return run.result()

    def refresh(self) -> SessionInfo:
        """Fetch the session's current state into ``info``."""
        self.info = self.workbench._send(_get_call(self.id))
        return self.info

    def interrupt(self) -> None:
        """Interrupt the running code (``KeyboardInterrupt`` in the kernel)."""
        self.workbench._send(_Call("POST", _session_path(self.id, "/interrupt"), _nothing))

    def restart(self) -> SessionInfo:
        """A fresh kernel: variables are gone, files are kept."""
        self.info = self.workbench._send(_Call("POST", _session_path(self.id, "/restart"), _session))
        return self.info

    def delete(self) -> None:
        """Remove the kernel and wipe the workspace."""
        self.workbench._send(_Call("DELETE", _session_path(self.id), _nothing))

    def connection_info(self) -> dict[str, Any]:
        """The kernel's Jupyter connection info as seen from the server host (admin token only)."""
        return self.workbench._send(_Call("GET", _session_path(self.id, "/connection"), _object))

    def files(self, path: str = "", recursive: bool = False) -> list[FileEntry]:
        """The entries of a workspace directory (``""`` is ``/data`` itself)."""
        return self.workbench._send(_files_call(self.id, path, recursive))

    def upload(
        self, local: str | os.PathLike[str], remote: str | None = None, progress: bool = False
    ) -> FileEntry:
        """Stream the local file ``local`` to ``remote`` (default: its name) in the workspace."""
        url = _file_path(self.id, remote or Path(local).name)
        return self.workbench._upload(functools.partial(_put_call, url), local, progress)

    def download(
        self, remote: str, local: str | os.PathLike[str] | None = None, progress: bool = False
    ) -> Path:
        """Stream the workspace file ``remote`` to disk (``local``: a file or a directory; default: here)."""
        return self.workbench._download(
            _file_path(self.id, remote), _download_target(remote, local), progress
        )

    def remove(self, path: str, recursive: bool = False) -> None:
        """Delete a workspace file (a directory needs ``recursive=True``)."""
        self.workbench._send(_remove_call(self.id, path, recursive))

    def archive(
        self, local: str | os.PathLike[str] | None = None, path: str = "", progress: bool = False
    ) -> Path:
        """Save the workspace (or its folder ``path``) as a zip (``local``: a file or a directory)."""
        target = _download_target(_archive_name(self.id, path), local)
        url = _session_path(self.id, "/archive")
        return self.workbench._download(url, target, progress, params={"path": path.strip("/")})

    def upload_archive(
        self, local: str | os.PathLike[str], path: str = "", progress: bool = False
    ) -> dict[str, Any]:
        """Extract a local zip into the workspace (or its folder ``path``), all or nothing."""
        return self.workbench._upload(functools.partial(_archive_upload_call, self.id, path), local, progress)

    def publish(self, path: str, target: str | None = None) -> FileEntry:
        """Copy the workspace file ``path`` into the tenant's library (as ``target``; default: its name)."""
        return self.workbench._send(_publish_call(self.id, path, target))

    def history(self, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        """The session's runs, newest first (code, status, timings, change-set, resources); ``before``
        pages back from a run number."""
        return self.workbench._send(_history_call(self.id, limit, before))

    def execution(self, n: int) -> dict[str, Any]:
        """Run number ``n`` with its kept outputs."""
        return self.workbench._send(_Call("GET", _session_path(self.id, f"/executions/{int(n)}"), _object))

    def notebook(self) -> str:
        """The history as a Jupyter notebook (``.ipynb`` JSON text)."""
        return self.workbench._send(_Call("GET", _session_path(self.id, "/notebook"), _text))

    def run_notebook(
        self, notebook: dict[str, Any] | str, allow_errors: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run a notebook's code cells in order in this session; the executed notebook."""
        return self.workbench._send(_notebook_run_call(self.id, notebook, allow_errors, timeout))

    def replay(
        self,
        start: int = 1,
        restart: bool = False,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
    ) -> dict[str, Any]:
        """Run the session's successful runs (numbered ``start`` on) again, in order, e.g. in a fresh kernel
        after a cull or a crash (``restart=True`` restarts first).  Every event goes to ``on_output``;
        answers the ``replay_done`` summary (``status``, ``replayed``, ``total``, ``failed``)."""
        body = _replay_body(start, restart, timeout)
        path = _session_path(self.id, "/replay")
        with self.workbench.http.stream("POST", path, json=body, headers=NDJSON_HEADERS) as response:
            if response.is_error:
                response.read()
                _checked(response)
            summary: Event = {}
            for line in response.iter_lines():
                summary = _replay_line(line, on_output) or summary
        return summary

    def variables(self, wait: float | None = None) -> dict[str, Any]:
        """The kernel's variables (name, type, repr, size, shape, dtypes), leaving no trace in the session;
        waits up to ``wait`` seconds for a running execution (``Conflict`` after that)."""
        return self.workbench._send(_variables_call(self.id, wait))


# The asyncio client


class Library:
    """The tenant's file library (``wb.library``); every session of the tenant reads it at ``/library``."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench

    def files(self, path: str = "", recursive: bool = False) -> list[FileEntry]:
        return self.workbench._send(_library_files_call(path, recursive))

    def upload(
        self, local: str | os.PathLike[str], remote: str | None = None, progress: bool = False
    ) -> FileEntry:
        url = _library_path(remote or Path(local).name)
        return self.workbench._upload(functools.partial(_put_call, url), local, progress)

    def download(
        self, remote: str, local: str | os.PathLike[str] | None = None, progress: bool = False
    ) -> Path:
        return self.workbench._download(_library_path(remote), _download_target(remote, local), progress)

    def rename(self, path: str, new_path: str) -> FileEntry:
        return self.workbench._send(_library_rename_call(path, new_path))

    def remove(self, path: str, recursive: bool = False) -> None:
        self.workbench._send(_library_remove_call(path, recursive))

    def publish(self, session_id: str, path: str, target: str | None = None) -> FileEntry:
        """Copy the file ``path`` of one of the caller's sessions here (as ``target``; default: its name)."""
        return self.workbench._send(_publish_call(session_id, path, target))


class AsyncWorkbench(_Base):
    """The asyncio twin of ``Workbench``; use it as ``async with AsyncWorkbench(url, token) as wb:``."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        super().__init__(url, token)
        self.http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=HTTP_TIMEOUT)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(self, call: _Call[T], content: AsyncIterator[bytes] | None = None) -> T:
        response = await self.http.request(
            call.method, call.path, json=call.json, params=call.params, headers=call.headers, content=content
        )
        return call.parse(_checked(response))

    async def create_session(self, **limits: Any) -> AsyncSession:
        """See ``Workbench.create_session``."""
        return AsyncSession(self, await self._send(_create_call(limits)))

    async def session(self, session_id: str) -> AsyncSession:
        return AsyncSession(self, await self._send(_get_call(session_id)))

    async def sessions(self) -> list[AsyncSession]:
        return [AsyncSession(self, info) for info in await self._send(_list_call())]

    @property
    def library(self) -> AsyncLibrary:
        """See ``Workbench.library``."""
        return AsyncLibrary(self)

    async def _upload(
        self, call_for: Callable[[int], _Call[T]], local: str | os.PathLike[str], progress: bool
    ) -> T:
        """See ``Workbench._upload``; the file is read in a worker thread, chunk by chunk."""
        source = Path(local)
        size = (await asyncio.to_thread(source.stat)).st_size
        with _progress_bar(size, progress, source.name) as bar:
            return await self._send(call_for(size), content=_in_thread(_read_chunks(source, bar)))

    async def _download(
        self, url: str, target: Path, progress: bool, params: dict[str, str] | None = None
    ) -> Path:
        """See ``Workbench._download``; chunks are written in a worker thread."""
        async with self.http.stream("GET", url, params=params) as response:
            if response.is_error:
                await response.aread()
                _checked(response)
            with _Sink(target, response, progress) as sink:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    await asyncio.to_thread(sink.write, chunk)
        return target


class AsyncSession(_SessionBase["AsyncWorkbench"]):
    """One session of an ``AsyncWorkbench``; the methods are those of ``Session``, awaitable.

    As an async context manager, the session is deleted on exit.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.delete()

    async def run(
        self,
        code: str,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
        on_input: InputHandler | None = None,
        files: bool = True,
    ) -> Execution:
        """See ``Session.run``; ``on_output`` and ``on_input`` are plain (not async) callables."""
        run = _Run(code, timeout, on_output, on_input, files)
        try:
            socket = await websockets.asyncio.client.connect(
                self.workbench.websocket_url(self.id),
                additional_headers=self.workbench.headers,
                max_size=MAX_FRAME_BYTES,
            )
        except InvalidStatus as error:
            raise _websocket_error(error) from None
        async with socket:
            await socket.send(run.frame)
            while not run.done:
                reply = run.feed(await socket.recv())
                if reply is not None:
                    await socket.send(reply)
        return run.result()

    async def refresh(self) -> SessionInfo:
        self.info = await self.workbench._send(_get_call(self.id))
        return self.info

    async def interrupt(self) -> None:
        await self.workbench._send(_Call("POST", _session_path(self.id, "/interrupt"), _nothing))

    async def restart(self) -> SessionInfo:
        self.info = await self.workbench._send(_Call("POST", _session_path(self.id, "/restart"), _session))
        return self.info

    async def delete(self) -> None:
        await self.workbench._send(_Call("DELETE", _session_path(self.id), _nothing))

    async def connection_info(self) -> dict[str, Any]:
        return await self.workbench._send(_Call("GET", _session_path(self.id, "/connection"), _object))

    async def files(self, path: str = "", recursive: bool = False) -> list[FileEntry]:
        return await self.workbench._send(_files_call(self.id, path, recursive))

    async def upload(
        self, local: str | os.PathLike[str], remote: str | None = None, progress: bool = False
    ) -> FileEntry:
        """See ``Session.upload``; the file is read in a worker thread, chunk by chunk."""
        url = _file_path(self.id, remote or Path(local).name)
        return await self.workbench._upload(functools.partial(_put_call, url), local, progress)

    async def download(
        self, remote: str, local: str | os.PathLike[str] | None = None, progress: bool = False
    ) -> Path:
        """See ``Session.download``; chunks are written in a worker thread."""
        target = _download_target(remote, local)
        return await self.workbench._download(_file_path(self.id, remote), target, progress)

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self.workbench._send(_remove_call(self.id, path, recursive))

    async def archive(
        self, local: str | os.PathLike[str] | None = None, path: str = "", progress: bool = False
    ) -> Path:
        """See ``Session.archive``."""
        target = _download_target(_archive_name(self.id, path), local)
        url = _session_path(self.id, "/archive")
        return await self.workbench._download(url, target, progress, params={"path": path.strip("/")})

    async def upload_archive(
        self, local: str | os.PathLike[str], path: str = "", progress: bool = False
    ) -> dict[str, Any]:
        """See ``Session.upload_archive``."""
        call_for = functools.partial(_archive_upload_call, self.id, path)
        return await self.workbench._upload(call_for, local, progress)

    async def publish(self, path: str, target: str | None = None) -> FileEntry:
        """See ``Session.publish``."""
        return await self.workbench._send(_publish_call(self.id, path, target))

    async def history(self, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        return await self.workbench._send(_history_call(self.id, limit, before))

    async def execution(self, n: int) -> dict[str, Any]:
        return await self.workbench._send(
            _Call("GET", _session_path(self.id, f"/executions/{int(n)}"), _object)
        )

    async def notebook(self) -> str:
        return await self.workbench._send(_Call("GET", _session_path(self.id, "/notebook"), _text))

    async def run_notebook(
        self, notebook: dict[str, Any] | str, allow_errors: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        return await self.workbench._send(_notebook_run_call(self.id, notebook, allow_errors, timeout))

    async def replay(
        self,
        start: int = 1,
        restart: bool = False,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
    ) -> dict[str, Any]:
        """See ``Session.replay``."""
        body = _replay_body(start, restart, timeout)
        path = _session_path(self.id, "/replay")
        async with self.workbench.http.stream("POST", path, json=body, headers=NDJSON_HEADERS) as response:
            if response.is_error:
                await response.aread()
                _checked(response)
            summary: Event = {}
            async for line in response.aiter_lines():
                summary = _replay_line(line, on_output) or summary
        return summary

    async def variables(self, wait: float | None = None) -> dict[str, Any]:
        return await self.workbench._send(_variables_call(self.id, wait))


class AsyncLibrary:
    """The asyncio twin of ``Library`` (``wb.library`` of an ``AsyncWorkbench``)."""

    def __init__(self, workbench: AsyncWorkbench) -> None:
        self.workbench = workbench

    async def files(self, path: str = "", recursive: bool = False) -> list[FileEntry]:
        return await self.workbench._send(_library_files_call(path, recursive))

    async def upload(
        self, local: str | os.PathLike[str], remote: str | None = None, progress: bool = False
    ) -> FileEntry:
        url = _library_path(remote or Path(local).name)
        return await self.workbench._upload(functools.partial(_put_call, url), local, progress)

    async def download(
        self, remote: str, local: str | os.PathLike[str] | None = None, progress: bool = False
    ) -> Path:
        target = _download_target(remote, local)
        return await self.workbench._download(_library_path(remote), target, progress)

    async def rename(self, path: str, new_path: str) -> FileEntry:
        return await self.workbench._send(_library_rename_call(path, new_path))

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self.workbench._send(_library_remove_call(path, recursive))

    async def publish(self, session_id: str, path: str, target: str | None = None) -> FileEntry:
        return await self.workbench._send(_publish_call(session_id, path, target))
