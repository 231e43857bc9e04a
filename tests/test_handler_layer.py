"""The HTTP layer stands on Tornado's public API and on the session manager alone (no Docker needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import workbench.handlers
from workbench.handlers.base import APIHandler, APIMixin
from workbench.handlers.ws import SessionSocket

HANDLERS = sorted(Path(workbench.handlers.__file__).parent.glob("*.py"))


def test_no_handler_touches_a_private_attribute() -> None:
    """Tornado's private names (``_handle_request_exception``, ``_finished``, ...) change without notice."""
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in HANDLERS
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\._[a-z]", line)
    ]
    assert found == []


def test_handlers_import_nothing_from_the_database_or_the_kernels() -> None:
    imported = set()
    for path in HANDLERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                imported.update((path.name, alias.name) for alias in node.names)
    forbidden = {(name, module) for name, module in imported
                 if module.startswith(("workbench.db", "workbench.kernels"))}  # fmt: skip
    assert forbidden == set()


def test_rest_and_websocket_handlers_share_authentication_and_errors() -> None:
    assert issubclass(APIHandler, APIMixin)
    assert issubclass(SessionSocket, APIMixin)
    for name in ("authenticate", "authorize", "log_exception", "manager"):
        assert name not in vars(SessionSocket), name
