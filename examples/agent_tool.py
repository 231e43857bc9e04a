"""``Session.run`` as a tool for an LLM agent: a function schema, and a function answering a compact text.

An agent does better with a short, predictable summary than with raw Jupyter messages: the status, the
printed output (head and tail when long), the value of the last expression, a note for each image, the
last lines of a traceback, and which workspace files the code created or changed.

    python examples/agent_tool.py [--url URL] [--token TOKEN]

runs a few calls as an agent would make them, and prints what the model would read.  To plug the tool into
a model's API, pass ``TOOL_SCHEMA`` in the shape that API expects (OpenAI: ``{"type": "function",
"function": {"name", "description", "parameters": ...}}``; Anthropic: ``{"name", "description",
"input_schema": ...}``) and answer each tool call with ``tool(**arguments)``.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from workbench.client import Execution, Session, Workbench

TOOL_SCHEMA: dict[str, Any] = {
    "name": "run_python",
    "description": (
        "Run Python code in a persistent Jupyter kernel (variables survive between calls). The working "
        "directory /data holds the user's uploaded files; save results there (csv, xlsx, png, docx, ...). "
        "pandas, numpy, matplotlib, scikit-learn, openpyxl and python-docx are installed; there is no "
        "network. The answer lists printed output, the last expression's value, errors and new files."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python source to execute."},
            "timeout": {
                "type": "number",
                "description": "Seconds before the code is interrupted (default 60).",
            },
        },
        "required": ["code"],
    },
}

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clip(text: str, limit: int) -> str:
    """``text`` shortened to about ``limit`` characters, keeping its head and its tail."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def summarize(result: Execution, changed: list[str], limit: int = 2000) -> str:
    """What the model reads after one call."""
    lines = [f"status: {result.status} ({result.duration_ms} ms)"]
    if result.stdout:
        lines += ["stdout:", clip(result.stdout.rstrip(), limit)]
    if result.stderr:
        lines += ["stderr:", clip(result.stderr.rstrip(), limit // 2)]
    for output in result.outputs:
        data = output.get("data", {})
        if output["type"] == "execute_result":
            lines += ["result:", clip(str(data.get("text/plain", "")), limit)]
        elif output["type"] == "display_data":
            kinds = [mime for mime in data if mime.startswith("image/")] or sorted(data)
            lines.append(f"display: {', '.join(kinds)} (shown to the user, not to you)")
    if result.error:
        lines.append(f"error: {result.error['ename']}: {result.error['evalue']}")
        traceback = ANSI_ESCAPE.sub("", "\n".join(result.error.get("traceback", []))).strip()
        if traceback:  # the innermost frames say the most: keep the end
            lines += ["traceback (end):", traceback[-(limit // 2) :]]
    if result.status == "timeout":
        lines.append("the code was interrupted: make it faster or give a larger timeout")
    if changed:
        lines.append(f"files created or changed in /data: {', '.join(changed)}")
    return "\n".join(lines)


class PythonTool:
    """The ``run_python`` tool on one session: ``tool(code=..., timeout=...)`` answers the summary."""

    def __init__(self, session: Session, limit: int = 2000) -> None:
        self.session = session
        self.limit = limit

    def _snapshot(self) -> dict[str, tuple[int, str]]:
        return {entry.path: (entry.size, entry.modified) for entry in self.session.files(recursive=True)}

    def __call__(self, code: str, timeout: float = 60) -> str:
        before = self._snapshot()
        result = self.session.run(code, timeout=timeout)
        after = self._snapshot()
        changed = sorted(path for path, stamp in after.items() if before.get(path) != stamp)
        return summarize(result, changed, self.limit)


AGENT_CALLS = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'月份': ['2023-01', '2023-02', '2023-03'], '销售额': [120.0, 135.5, 160.25]})\n"
    "sales.describe()",
    "sales['环比增长'] = sales['销售额'].pct_change().round(3)\nprint(sales.to_string(index=False))",
    "ax = sales.plot(x='月份', y='销售额', title='月度销售额')\nax.get_figure().savefig('月度销售额.png')",
    "sales.to_csv('月度销售额.csv', index=False)\nsales.loc[5, '销售额']",
)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a few agent-style tool calls and print the answers.")
    parser.add_argument("--url", help="server URL [WORKBENCH_URL]")
    parser.add_argument("--token", help="bearer token [WORKBENCH_TOKEN]")
    args = parser.parse_args()
    with Workbench(args.url, args.token) as workbench, workbench.create_session() as session:
        tool = PythonTool(session)
        for code in AGENT_CALLS:
            print(f">>> run_python(code={code!r})\n{tool(code=code)}\n")


if __name__ == "__main__":
    main()
