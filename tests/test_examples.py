"""The runnable examples of docs/walkthrough.md, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(server: Server, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_URL": server.url, "WORKBENCH_TOKEN": server.token}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, env=env, timeout=600
    )


def zip_members(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def test_the_walkthrough_makes_and_downloads_every_file(server: Server, tmp_path: Path) -> None:
    done = run_example(server, "walkthrough.py", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "清洗后 236 行" in done.stdout  # blank row, duplicates and empty amounts removed
    downloads = tmp_path / "下载"
    assert "[Content_Types].xml" in zip_members(downloads / "销售数据2023.xlsx")
    assert (downloads / "销售数据2023.xlsx").read_bytes() == (tmp_path / "销售数据2023.xlsx").read_bytes()
    csv_lines = (downloads / "清洗后销售数据.csv").read_text(encoding="utf-8-sig").splitlines()
    assert csv_lines[0] == "日期,地区,产品,销售额"
    assert len(csv_lines) == 237
    report = json.loads((downloads / "销售分析报告.json").read_text(encoding="utf-8"))
    assert len(report["月度销售额"]) == 12
    assert report["最佳月份"] in report["月度销售额"]
    assert (downloads / "月度销售额趋势.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    docx = zip_members(downloads / "销售分析报告.docx")
    assert "word/document.xml" in docx
    assert any(name.startswith("word/media/") for name in docx)  # the chart is in the report
    assert (downloads / "销售预测模型.joblib").stat().st_size > 1000


def test_the_agent_tool_answers_compact_summaries(server: Server, tmp_path: Path) -> None:
    done = run_example(server, "agent_tool.py", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    answers = done.stdout.split(">>> run_python")[1:]
    assert len(answers) == 4
    assert "status: ok" in answers[0]
    assert "result:" in answers[0]
    assert "0.129" in answers[1]
    assert "display: image/png" in answers[2]
    assert "files created or changed in /data: 月度销售额.png" in answers[2]
    assert "error: KeyError: 5" in answers[3]
    assert "\x1b[" not in answers[3]
    assert "月度销售额.csv" in answers[3]
    # the change-set told the tool which files to hand to the user
    assert (tmp_path / "月度销售额.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "月度销售额.csv").read_text(encoding="utf-8").startswith("月份,销售额")
