"""Schema management with Alembic: upgrade, and refuse a database newer than this code."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine


class SchemaError(Exception):
    """The database schema is not one this version of Workbench can use."""


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(str(resources.files("workbench.migrations")))))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Create or upgrade the schema to the newest revision; refuse a database made by a newer Workbench."""
    config = _alembic_config(engine)
    script = ScriptDirectory.from_config(config)
    current = current_revision(engine)
    if current is not None and not _known(script, current):
        raise SchemaError(_newer_message(current))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return script.get_current_head()


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _newer_message(revision: str) -> str:
    return (
        f"the database is at schema revision {revision!r}, which this version of Workbench does not know "
        "(made by a newer version?); refusing to touch it"
    )
