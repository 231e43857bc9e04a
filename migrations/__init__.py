"""Alembic environment and revisions (shipped in the wheel as ``workbench.migrations``)."""
