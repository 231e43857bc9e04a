"""The wheel ships every package of the source tree (setuptools lists them by hand)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_workbench_package_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    source = ROOT / "workbench"
    found = {
        ".".join(("workbench", *init.parent.relative_to(source).parts))
        for init in source.rglob("__init__.py")
    }
    assert found - listed == set()
