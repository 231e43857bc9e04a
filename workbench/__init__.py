"""Workbench: a self-hosted, stateful Python workbench service."""

__version__ = "0.1.0"
