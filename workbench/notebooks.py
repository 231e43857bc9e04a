"""A session's history as a Jupyter notebook, notebooks run in a session, and replays of the history.

The exported notebook (nbformat 4, validated) holds one code cell per recorded run, in order, with its
kept outputs; runs made by a replay are left out (they repeat earlier cells), so exporting or replaying
again after a replay gives the same cells once.  Outputs a hostile kernel made unfit for the format are
repaired (bad mime keys dropped, non-text values JSON-encoded) or, failing that, left out of the cell.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from workbench.db.models import ExecutionRow
from workbench.errors import BadRequest, Invalid, TooLarge
from workbench.kernels.execution import Event, ExecutionResult

if TYPE_CHECKING:
    from workbench.sessions import SessionManager

MAX_CELLS = 2000
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
MIME_KEY = re.compile(r"^[a-zA-Z0-9]+/[a-zA-Z0-9\-\+\.]+$")


# ------------------------------------------------------------------------------------------- outputs


def _bundle(data: Any) -> dict[str, Any]:
    """A mime bundle nbformat accepts: mime keys only, text as strings, JSON types as they are."""
    if not isinstance(data, dict):
        return {}
    bundle: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not MIME_KEY.match(key):
            continue
        if key.endswith("json") or isinstance(value, str):
            bundle[key] = value
        else:
            bundle[key] = json.dumps(value, ensure_ascii=False, default=str)
    return bundle


def _output(event: Event, execution_count: int | None) -> Any:
    kind = event.get("type")
    metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    if kind == "stream":
        name = "stderr" if event.get("name") == "stderr" else "stdout"
        return new_output("stream", name=name, text=str(event.get("text", "")))
    if kind == "display_data":
        return new_output("display_data", data=_bundle(event.get("data")), metadata=metadata)
    if kind == "execute_result":
        count = event.get("execution_count")
        return new_output(
            "execute_result",
            data=_bundle(event.get("data")),
            metadata=metadata,
            execution_count=count if isinstance(count, int) else execution_count,
        )
    if kind == "error":
        traceback = event.get("traceback")
        return new_output(
            "error",
            ename=str(event.get("ename", "")),
            evalue=str(event.get("evalue", "")),
            traceback=[str(line) for line in traceback] if isinstance(traceback, list) else [],
        )
    return None


def cell_outputs(events: list[Event], execution_count: int | None) -> list[Any]:
    """The cell outputs of a run's events (``clear_output`` applied, consecutive stream text merged)."""
    outputs: list[Any] = []
    for event in events:
        if event.get("type") == "clear_output":
            outputs = []
            continue
        output = _output(event, execution_count)
        if output is None:
            continue
        last = outputs[-1] if outputs else None
        if output.output_type == "stream" and last is not None and last.get("name") == output.name:
            last.text += output.text
            continue
        outputs.append(output)
    return outputs


def _valid_cell(cell: Any) -> Any:
    """``cell``, or the same cell without outputs when they don't validate."""
    try:
        nbformat.validate(new_notebook(cells=[cell]))
    except nbformat.ValidationError:
        cell.outputs = []
        cell.metadata.setdefault("workbench", {})["outputs_dropped"] = True
    return cell


# -------------------------------------------------------------------------------------------- export


def export(session_id: str, rows: list[ExecutionRow]) -> str:
    """The runs as an ``.ipynb`` document (JSON text, Unicode intact)."""
    cells = []
    for row in rows:
        cell = new_code_cell(
            source=row.code,
            execution_count=row.execution_count,
            outputs=cell_outputs(row.outputs or [], row.execution_count),
            metadata={"workbench": {"n": row.n, "status": row.status, "outputs_cut": row.outputs is None}},
        )
        cells.append(_valid_cell(cell))
    notebook = new_notebook(
        cells=cells,
        metadata={
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python"},
            "workbench": {"session_id": session_id},
        },
    )
    nbformat.validate(notebook)
    return str(nbformat.writes(notebook))


# -------------------------------------------------------------------------------------------- upload


def read(body: bytes, max_code_bytes: int) -> Any:
    """An uploaded notebook, checked: JSON (400), a valid notebook (422), not too large (413)."""
    try:
        text = body.decode("utf-8")
        notebook = nbformat.reads(text, as_version=4)
    except (UnicodeDecodeError, ValueError) as exc:
        msg = f"the body is not a JSON notebook: {str(exc)[:200]}"
        raise BadRequest(msg, code="bad-json") from None
    except Exception as exc:  # nbformat raises assorted errors for JSON that is not a notebook
        msg = f"not a Jupyter notebook: {str(exc)[:200]}"
        raise Invalid(msg, code="bad-notebook") from None
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as exc:
        msg = f"not a valid nbformat 4 notebook: {str(exc.message)[:300]}"
        raise Invalid(msg, code="bad-notebook") from None
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if len(cells) > MAX_CELLS:
        msg = f"the notebook has more than {MAX_CELLS} code cells"
        raise TooLarge(msg)
    if any(len(cell.source.encode()) > max_code_bytes for cell in cells):
        msg = "a code cell is larger than the server's code limit"
        raise TooLarge(msg)
    return notebook


async def _events_of(manager: SessionManager, session_id: str, result: ExecutionResult) -> list[Event]:
    """A run's events in order, from the history (or rebuilt from its result if they were cut)."""
    row = await manager.history.get(session_id, result.n) if result.n is not None else None
    if row is not None and row.outputs is not None:
        return row.outputs
    streams = [
        {"type": "stream", "name": name, "text": text}
        for name, text in (("stdout", result.stdout), ("stderr", result.stderr))
        if text
    ]
    return [*streams, *result.outputs]


async def run(
    manager: SessionManager, session_id: str, notebook: Any, *, timeout: float | None, allow_errors: bool
) -> str:
    """Run the notebook's code cells in order in the session; the executed notebook as JSON text.

    A failing cell stops the run unless ``allow_errors``; cells after it keep no outputs.
    """
    executed, status, failed = 0, "ok", None
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if (status != "ok" and not allow_errors) or not cell.source.strip():
            continue
        result = await manager.execute(session_id, cell.source, timeout=timeout, source="notebook")
        executed += 1
        cell.execution_count = result.execution_count
        cell.outputs = cell_outputs(await _events_of(manager, session_id, result), result.execution_count)
        _valid_cell(cell)
        if result.status != "ok" and status == "ok":
            status, failed = "error", index
    notebook.metadata["workbench"] = {
        "session_id": session_id,
        "status": status,
        "executed": executed,
        "failed_cell": failed,
    }
    nbformat.validate(notebook)
    return str(nbformat.writes(notebook))


# -------------------------------------------------------------------------------------------- replay


async def replay(
    manager: SessionManager,
    session_id: str,
    *,
    start: int,
    timeout: float | None,
    restart: bool,
    prefix: str,
) -> Event:
    """Run the session's successful runs numbered ``start`` or more again, in order (after a restart,
    with ``restart``); stops at the first that fails.  Each run's request id is ``prefix`` + its number.
    Answers the summary event (``replay_done``), with every result under ``results``."""
    rows = [row for row in await manager.history.lineage(session_id) if row.status == "ok"]
    rows = [row for row in rows if row.n is not None and row.n >= start]
    if restart:
        await manager.restart(session_id)
    results: list[dict[str, Any]] = []
    summary: Event = {
        "type": "replay_done",
        "status": "ok",
        "replayed": 0,
        "total": len(rows),
        "failed": None,
    }
    for row in rows:
        request_id = f"{prefix}{row.n}"
        manager.notify(session_id, {"type": "replay_start", "id": request_id, "replay_of": row.n})
        result = await manager.execute(
            session_id, row.code, timeout=timeout, request_id=request_id, source="replay"
        )
        summary["replayed"] += 1
        results.append({"replay_of": row.n, **result.to_json()})
        if result.status != "ok":
            summary.update(status="error", failed=row.n)
            break
    summary["results"] = results
    return summary
