"""The settings table: defaults < environment < flags, and the README documents every option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from workbench.config import OPTIONS, Settings, add_arguments, flags_from


def parse(*argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return flags_from(parser.parse_args(argv))


def test_defaults() -> None:
    settings = Settings.load(env={})
    assert (settings.host, settings.port, settings.tmp_mb) == ("127.0.0.1", 8765, 100)
    assert settings.database_url == f"sqlite:///{Path('~/.local/state/workbench').expanduser()}/workbench.db"


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {
        "WORKBENCH_PORT": "9000",
        "WORKBENCH_MEMORY_MB": "256",
        "WORKBENCH_STOP_KERNELS_ON_EXIT": "true",
        "WORKBENCH_UPLOAD_EXTENSIONS": ".csv, .txt",
    }
    settings = Settings.load(env=env, flags=parse("--memory-mb", "128"))
    assert settings.port == 9000
    assert settings.memory_mb == 128
    assert settings.stop_kernels_on_exit is True
    assert settings.upload_extensions == (".csv", ".txt")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="WORKBENCH_PORT"):
        Settings.load(env={"WORKBENCH_PORT": "eighty"})


def test_every_option_is_a_settings_field_and_has_a_flag() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {option.name for option in OPTIONS} == fields
    flags = parse()
    assert set(flags) == fields


def test_readme_documents_every_option() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [option.env for option in OPTIONS if f"`{option.env}`" not in readme]
    assert not missing
