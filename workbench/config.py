"""One settings object for the whole service.

Every option is declared once in ``OPTIONS``; that table feeds the defaults, the ``WORKBENCH_*``
environment variables, the command-line flags of ``workbench serve`` and the README's configuration
table (a test keeps the README in step).  Precedence: defaults < environment < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "WORKBENCH_"


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    type: Callable[[str], Any]
    help: str

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.name]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    msg = f"not a boolean: {text!r}"
    raise ValueError(msg)


def _workspace_fs(text: str) -> str:
    value = text.strip().lower()
    if value not in {"loop", "dir"}:
        msg = f"not loop or dir: {text!r}"
        raise ValueError(msg)
    return value


def _words(text: str) -> tuple[str, ...]:
    return tuple(word for word in text.replace(",", " ").split() if word)


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "Address the HTTP server listens on."),
    Option("port", int, "Port the HTTP server listens on."),
    Option(
        "token",
        str,
        "Admin bearer token. If unset, one is generated, saved to STATE_DIR/admin-token (0600) "
        "and printed once.",
    ),
    Option(
        "state_dir", Path, "Directory holding the SQLite database, workspaces/, runtime/ and connections/."
    ),
    Option("db_url", str, "SQLAlchemy database URL. Default: SQLite at STATE_DIR/workbench.db."),
    Option(
        "docker_host", str, "Docker engine URL. Default: the environment's DOCKER_HOST or the local socket."
    ),
    Option("image", str, "Kernel image. Default: workbench-kernel:<hash of kernel_image/>."),
    Option("runtime", str, "OCI runtime for kernel containers, e.g. runsc (gVisor). Default: the engine's."),
    Option("kernel_uid", int, "Uid (and gid) the kernel runs as inside its container."),
    Option("memory_mb", int, "Default memory limit of a session's kernel (swap is not allowed on top)."),
    Option("max_memory_mb", int, "Largest memory_mb a create request may ask for."),
    Option("cpus", float, "Default CPU quota of a session's kernel, in CPUs."),
    Option("max_cpus", float, "Largest cpus a create request may ask for."),
    Option("pids_limit", int, "Most processes and threads inside one kernel container."),
    Option("tmp_mb", int, "Size of the /tmp tmpfs in each kernel container."),
    Option("shm_mb", int, "Size of /dev/shm in each kernel container."),
    Option("idle_timeout", int, "Seconds without activity before an idle kernel is stopped (files kept)."),
    Option("max_idle_timeout", int, "Largest idle_timeout a create request may ask for."),
    Option(
        "session_ttl", int, "Seconds without activity before a session expires (kernel and files removed)."
    ),
    Option("reap_interval", float, "Seconds between two sweeps of the reaper."),
    Option("expiring_notice", float, "Seconds before a cull or expiry that connected clients are warned."),
    Option("execute_timeout", float, "Default timeout of one execution, in seconds."),
    Option("max_execute_timeout", float, "Largest timeout an execute request may ask for."),
    Option(
        "interrupt_grace",
        float,
        "Seconds an interrupted execution gets to stop before the kernel is restarted.",
    ),
    Option("start_timeout", float, "Seconds a new kernel gets to become ready."),
    Option(
        "max_output_kb",
        int,
        "Output kept per execution for the done event and the REST answer (the rest is cut with a notice).",
    ),
    Option("max_code_kb", int, "Largest execute request body (code), in KiB."),
    Option("max_ws_frame_kb", int, "Largest incoming WebSocket frame, in KiB."),
    Option("upload_extensions", _words, "File name endings accepted by uploads (space or comma separated)."),
    Option("max_upload_mb", int, "Largest uploaded file, in MiB."),
    Option("workspace_quota_mb", int, "Disk a workspace may hold (allocated blocks), in MiB."),
    Option(
        "workspace_fs",
        _workspace_fs,
        "loop: each workspace is a loop-mounted file system of the quota's size (kernels get ENOSPC past it) "
        "and each runtime directory a 16 KiB tmpfs; needs root. dir: plain directories (the quota binds "
        "uploads only).",
    ),
    Option("max_sessions", int, "Most live sessions on this server."),
    Option("library_quota_mb", int, "Disk one tenant's file library may hold (allocated blocks), in MiB."),
    Option(
        "pool_size",
        int,
        "Warm kernels kept started and ready, so that a create only claims one (0 disables the pool).",
    ),
    Option(
        "allowed_origins",
        _words,
        "Origins (exact, or patterns like https://*.example.com) allowed on WebSockets.",
    ),
    Option(
        "changes",
        _bool,
        "Report each run's file change-set (a scan of /data before and after each run; a request can "
        'skip it with "files": false).',
    ),
    Option("changes_max_files", int, "Workspaces holding more files than this get no change-set."),
    Option("changes_max_entries", int, "Entries listed in one change-set (past it: truncated)."),
    Option("changes_hash_kb", int, "Created or modified files up to this size (KiB) get a sha256."),
    Option("history_output_kb", int, "Outputs (KiB) kept in the history per session, oldest cut first."),
    Option("stop_kernels_on_exit", _bool, "Stop every kernel container when the server shuts down."),
    Option("log_level", str, "Logging level: debug, info, warning or error."),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    state_dir: Path = Path("~/.local/state/workbench")
    db_url: str | None = None
    docker_host: str | None = None
    image: str | None = None
    runtime: str | None = None
    kernel_uid: int = 1000
    memory_mb: int = 1024
    max_memory_mb: int = 8192
    cpus: float = 1.0
    max_cpus: float = 2.0
    pids_limit: int = 256
    tmp_mb: int = 100
    shm_mb: int = 64
    idle_timeout: int = 1800
    max_idle_timeout: int = 86400
    session_ttl: int = 86400
    reap_interval: float = 60.0
    expiring_notice: float = 60.0
    execute_timeout: float = 600.0
    max_execute_timeout: float = 86400.0
    interrupt_grace: float = 3.0
    start_timeout: float = 60.0
    max_output_kb: int = 1024
    max_code_kb: int = 1024
    max_ws_frame_kb: int = 2048
    upload_extensions: tuple[str, ...] = (".xlsx", ".xls", ".parquet", ".csv", ".json", ".txt")
    max_upload_mb: int = 512
    workspace_quota_mb: int = 2048
    workspace_fs: str = "loop"
    max_sessions: int = 64
    pool_size: int = 2
    library_quota_mb: int = 1024
    allowed_origins: tuple[str, ...] = ()
    changes: bool = True
    changes_max_files: int = 100_000
    changes_max_entries: int = 300
    changes_hash_kb: int = 1024
    history_output_kb: int = 16384
    stop_kernels_on_exit: bool = False
    log_level: str = "info"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None) -> Settings:
        """Defaults < environment (``WORKBENCH_*``) < flags (``None`` means "not given")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for option in OPTIONS:
            if option.env in env:
                try:
                    values[option.name] = option.type(env[option.env])
                except ValueError as exc:
                    msg = f"{option.env}: {exc}"
                    raise ValueError(msg) from None
        for name, value in (flags or {}).items():
            if name in OPTIONS_BY_NAME and value is not None:
                values[name] = value
        settings = cls(**values)
        return dataclasses.replace(settings, state_dir=settings.state_dir.expanduser().absolute())

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'workbench.db'}"

    @property
    def workspaces_dir(self) -> Path:
        return self.state_dir / "workspaces"

    @property
    def runtime_dir(self) -> Path:
        return self.state_dir / "runtime"

    @property
    def connections_dir(self) -> Path:
        return self.state_dir / "connections"

    @property
    def library_dir(self) -> Path:
        return self.state_dir / "library"

    @property
    def library_slots_dir(self) -> Path:
        """Per warm kernel, the directory its tenant's library is mounted on once it is claimed."""
        return self.state_dir / "library-slots"


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Settings)}


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add one flag per option (or per named option); each defaults to ``None`` so that an unset flag
    doesn't override the environment."""
    for option in OPTIONS if names is None else [OPTIONS_BY_NAME[name] for name in names]:
        help_text = f"{option.help} [{option.env}]"
        if option.type is _bool:
            parser.add_argument(option.flag, dest=option.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)  # fmt: skip
        else:
            parser.add_argument(option.flag, dest=option.name, default=None, type=option.type, help=help_text)


def flags_from(namespace: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(namespace, name) for name in OPTIONS_BY_NAME if hasattr(namespace, name)}


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| env | flag | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        default = option.default
        if isinstance(default, tuple):
            default = " ".join(default) or "(none)"
        elif default is None:
            default = "(see meaning)"
        rows.append(f"| `{option.env}` | `{option.flag}` | `{default}` | {option.help} |")
    return "\n".join(rows)
