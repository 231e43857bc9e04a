"""Reading cgroups (v1 and v2 layouts, faked in a folder), the variable inspector's untrusted answer, and
notebooks built from hostile outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from workbench import notebooks, variables
from workbench.errors import BadRequest, Invalid, KernelFailed, TooLarge
from workbench.kernels.resources import CgroupMeter, unmeasured

CID = "a" * 64
MB = 1024 * 1024


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_peak_is_reset_per_run_and_cpu_is_a_difference(tmp_path: Path) -> None:
    memory, cpu = tmp_path / "memory" / "docker" / CID, tmp_path / "cpuacct" / "docker" / CID
    write(memory / "memory.max_usage_in_bytes", str(900 * MB))
    write(memory / "memory.limit_in_bytes", str(512 * MB))
    write(cpu / "cpuacct.usage", "1000000000")
    meter = CgroupMeter.find(CID, root=tmp_path)
    assert meter is not None
    assert meter.version == 1
    reading = meter.begin()
    assert (memory / "memory.max_usage_in_bytes").read_text() == "0"
    write(memory / "memory.max_usage_in_bytes", str(320 * MB))
    write(cpu / "cpuacct.usage", "3500000000")
    assert meter.end(reading) == {
        "peak_memory_mb": 320.0, "cpu_seconds": 2.5, "memory_limit_mb": 512, "peak_scope": "run",
    }  # fmt: skip


def test_cgroup_v2_under_systemd(tmp_path: Path) -> None:
    place = tmp_path / "system.slice" / f"docker-{CID}.scope"
    write(tmp_path / "cgroup.controllers", "cpu memory")
    write(place / "memory.current", "0")
    write(place / "memory.peak", str(100 * MB))
    write(place / "memory.max", "max")
    write(place / "cpu.stat", "usage_usec 1000\nuser_usec 800\n")
    meter = CgroupMeter.find(CID, root=tmp_path)
    assert meter is not None
    assert meter.version == 2
    reading = meter.begin()
    write(place / "cpu.stat", "usage_usec 501000\n")
    write(place / "memory.peak", str(64 * MB))  # read through the file opened (and reset) at the start
    report = meter.end(reading, fallback_limit_mb=256)
    assert report["cpu_seconds"] == 0.5
    assert report["memory_limit_mb"] == 256  # "max": the session's configured limit
    assert report["peak_memory_mb"] == 64.0


def test_no_cgroup_no_meter(tmp_path: Path) -> None:
    assert CgroupMeter.find(CID, root=tmp_path) is None
    assert CgroupMeter.find("../../etc", root=tmp_path) is None
    assert unmeasured("oom", 512)["peak_memory_mb"] == 512.0
    assert unmeasured("died", 512)["peak_memory_mb"] is None


def reply(text: Any, status: str = "ok") -> dict[str, Any]:
    value = {"status": status, "data": {"text/plain": text}} if status == "ok" else {"status": status}
    return {"content": {"status": "ok", "user_expressions": {"variables": value}}}


def test_the_inspector_answer_is_checked() -> None:
    good = {"variables": [{"name": "df", "type": "pandas.core.frame.DataFrame", "repr": "x", "size": 10,
                           "shape": [3, 2], "columns": [{"name": "部门", "dtype": "object"}], "evil": 1}],
            "count": 1, "truncated": False, "partial": False}  # fmt: skip
    parsed = variables.parse(reply(repr(json.dumps(good))))
    assert parsed["variables"] == [
        {"name": "df", "type": "pandas.core.frame.DataFrame", "repr": "x", "size": 10, "shape": [3, 2],
         "columns": [{"name": "部门", "dtype": "object"}]}
    ]  # fmt: skip
    for bad in (
        reply("__import__('os')"),
        reply("'not json'"),
        reply(repr("[1]")),
        reply(7),
        reply("", "error"),
    ):
        with pytest.raises(KernelFailed):
            variables.parse(bad)
    with pytest.raises(KernelFailed):
        variables.parse({"content": "garbage"})


def test_the_inspector_expression_binds_nothing() -> None:
    namespace: dict[str, Any] = {"a": 1, "s": "数据" * 1000, "_private": 2, "json": json}
    namespace.update({f"v{i}": i for i in range(50)})
    before = set(namespace)
    answer = json.loads(eval(variables.expression(20), namespace))  # noqa: S307 (our own expression)
    assert set(namespace) - before <= {"__builtins__"}
    assert answer["count"] == 52
    assert answer["truncated"] is True
    assert len(answer["variables"]) == 20
    text = next(v for v in answer["variables"] if v["name"] == "s")
    assert text["len"] == 2000
    assert len(text["repr"]) <= variables.REPR_CHARS


def test_notebooks_repair_hostile_outputs_and_keep_chinese() -> None:
    row = type("Row", (), {})()
    row.code, row.execution_count, row.n, row.status = "print('分析完成')", 1, 1, "ok"
    row.outputs = [
        {"type": "stream", "name": "stdout", "text": "分析"},
        {"type": "stream", "name": "stdout", "text": "完成\n"},
        {"type": "display_data", "data": {"text/plain": 5, "bad key": "x", "application/json": {"a": 1}}},
        {"type": "clear_output", "wait": False},
        {"type": "execute_result", "execution_count": "NaN", "data": {"text/html": ["<b>", 3]}},
        {"type": "error", "ename": 1, "evalue": None, "traceback": "not a list"},
        {"type": "nonsense"},
    ]
    text = notebooks.export("session-x", [row])
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert "分析完成" in text
    outputs = notebook.cells[0].outputs
    assert [o.output_type for o in outputs] == ["execute_result", "error"]  # cleared, then two


def test_uploaded_notebooks_are_checked() -> None:
    with pytest.raises(BadRequest):
        notebooks.read(b"{not json", 1024)
    with pytest.raises(Invalid):
        notebooks.read(b'{"cells": "no"}', 1024)
    big = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x" * 2000)])
    with pytest.raises(TooLarge):
        notebooks.read(nbformat.writes(big).encode(), 1024)
