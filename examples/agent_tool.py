"""``Session.run`` as a tool for an LLM agent: a function schema, and a function answering a compact text.

An agent does better with a short, predictable summary than with raw Jupyter messages: the status, the
printed output (head and tail when long), the value of the last expression, a note for each image, the
last lines of a traceback, and which workspace files the code created or changed.  Those come from the
run's change-set (``Execution.files``, computed by the server): the tool also downloads each new or changed
file for the agent's user, so the files a chart or a report was saved to reach the person who asked.

    python examples/agent_tool.py [--url URL] [--token TOKEN] [--out DIR]

runs a few calls as an agent would make them, prints what the model would read, and leaves the generated
files in DIR (default: ./agent-files).  To plug the tool into
a model's API, pass ``TOOL_SCHEMA`` in the shape that API expects (OpenAI: ``{"type": "function",
"function": {"name", "description", "parameters": ...}}``; Anthropic: ``{"name", "description",
"input_schema": ...}``) and answer each tool call with ``tool(**arguments)``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
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
    """The ``run_python`` tool on one session: ``tool(code=..., timeout=...)`` answers the summary.

    Files the code created or changed are downloaded into ``deliver`` (when given) for the user;
    ``delivered`` lists them.
    """

    def __init__(self, session: Session, limit: int = 2000, deliver: Path | None = None) -> None:
        self.session = session
        self.limit = limit
        self.deliver = deliver
        self.delivered: list[Path] = []

    def __call__(self, code: str, timeout: float = 60) -> str:
        result = self.session.run(code, timeout=timeout)
        changed = result.created_files  # from the run's change-set: no listing before and after
        if self.deliver is not None:
            for path in changed:
                target = self.deliver / path
                target.parent.mkdir(parents=True, exist_ok=True)
                self.delivered.append(self.session.download(path, target))
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
    parser.add_argument("--out", type=Path, default=Path("agent-files"), help="where generated files go")
    args = parser.parse_args()
    with Workbench(args.url, args.token) as workbench, workbench.create_session() as session:
        tool = PythonTool(session, deliver=args.out)
        for code in AGENT_CALLS:
            print(f">>> run_python(code={code!r})\n{tool(code=code)}\n")
    print("files for the user:", ", ".join(str(path) for path in tool.delivered))


if __name__ == "__main__":
    main()
