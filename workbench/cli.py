"""The ``workbench`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from workbench import __version__, cli_client, cli_tokens
from workbench.config import Settings, add_arguments, flags_from


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return Settings.load(flags=flags_from(args))
    except ValueError as exc:
        raise SystemExit(f"workbench: bad configuration: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from workbench.db.migrate import SchemaError
    from workbench.server import configure_logging, serve

    settings = _settings(args)
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except SchemaError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from workbench.db.migrate import SchemaError
    from workbench.db.store import Database

    settings = _settings(args)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    try:
        revision = database.upgrade()
    except SchemaError as exc:
        print(f"workbench: {exc}", file=sys.stderr)
        return 2
    finally:
        database.close()
    print(f"database at revision {revision}")
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    import docker

    from workbench.image import ImageBuildError, build_image

    settings = _settings(args)
    client = docker.DockerClient(base_url=settings.docker_host) if settings.docker_host else docker.from_env()
    try:
        name = build_image(
            client,
            settings.image,
            base=args.base,
            offline=args.offline,
            cache_dir=Path(args.cache_dir).expanduser(),
            force=args.force,
        )
    except ImageBuildError as exc:
        print(f"workbench: image build failed: {exc}", file=sys.stderr)
        return 1
    print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="A self-hosted, stateful Python workbench."
    )
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server", description="Run the Workbench server.")
    add_arguments(serve)
    serve.set_defaults(run=cmd_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser(
        "upgrade",
        help="create or upgrade the schema (Alembic)",
        description="Create the database schema, or upgrade it to this version's (Alembic migrations).",
    )
    add_arguments(upgrade)
    upgrade.set_defaults(run=cmd_db_upgrade)

    image = commands.add_parser("image", help="kernel image").add_subparsers(
        dest="image_command", required=True
    )
    build = image.add_parser(
        "build",
        help="build the kernel image (offline when no registry is reachable)",
        description="Build the kernel image, tagged by a hash of its inputs; "
        "does nothing when that tag exists already.",
    )
    build.add_argument(
        "--base", default=None, help="base image (default: python:3.11-slim, or a debootstrap base offline)"
    )
    build.add_argument(
        "--offline",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="force or forbid the offline build (default: automatic)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.add_argument(
        "--cache-dir", default="~/.cache/workbench", help="where base rootfs and wheels are cached"
    )
    add_arguments(build)
    build.set_defaults(run=cmd_image_build)

    cli_client.add_commands(commands)
    cli_tokens.register(commands, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
