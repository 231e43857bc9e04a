"""``workbench tokens create|ls|revoke``: manage tenants' API tokens in the server's database."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from workbench.config import Settings, add_arguments
from workbench.db.models import TokenRow
from workbench.db.store import Database
from workbench.errors import WorkbenchError
from workbench.sessions import isoformat
from workbench.tokens import create_token, list_tokens, revoke_tokens

LoadSettings = Callable[[argparse.Namespace], Settings]


def register(commands: Any, load_settings: LoadSettings) -> None:
    about = "Manage tenants' API tokens (stored hashed in the database)."
    tokens = commands.add_parser("tokens", help="tenants' API tokens", description=about)
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="make a token for a tenant (printed once)")
    create.add_argument("--tenant", required=True, help="tenant name (letters, digits, '_', '.', '-')")
    create.add_argument("--max-sessions", type=int, default=None, help="most live sessions for this tenant")
    create.add_argument("--max-memory-mb", type=int, default=None, help="most memory per session (MiB)")
    listing = actions.add_parser("ls", help="list tokens (never the secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id, or all tokens of a tenant")
    revoke.add_argument("token", metavar="ID_OR_TENANT")
    for parser, run in ((create, _create), (listing, _list), (revoke, _revoke)):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        add_arguments(parser, ("state_dir", "db_url"))
        parser.set_defaults(run=lambda args, run=run: _with_database(args, load_settings, run))


def _with_database(args: argparse.Namespace, load_settings: LoadSettings,
                   work: Callable[[Session, argparse.Namespace], int]) -> int:  # fmt: skip
    settings = load_settings(args)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    try:
        database.upgrade()
        with database.transaction() as session:
            return work(session, args)
    except WorkbenchError as error:
        print(f"workbench: {error.message}", file=sys.stderr)
        return 2
    finally:
        database.close()


def _create(session: Session, args: argparse.Namespace) -> int:
    issued = create_token(
        session, args.tenant, max_sessions=args.max_sessions, max_memory_mb=args.max_memory_mb
    )
    if args.json:
        print(json.dumps({"id": issued.id, "tenant": issued.tenant, "token": issued.token}))
    else:
        print(f"token {issued.id} for tenant {issued.tenant!r} (shown once, keep it safe):\n{issued.token}")
    return 0


def _describe(row: TokenRow) -> dict[str, Any]:
    return {"id": row.id, "tenant": row.tenant, "created_at": isoformat(row.created_at),
            "revoked_at": isoformat(row.revoked_at), "max_sessions": row.max_sessions,
            "max_memory_mb": row.max_memory_mb}  # fmt: skip


def _list(session: Session, args: argparse.Namespace) -> int:
    rows = [_describe(row) for row in list_tokens(session)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'ID':<18} {'TENANT':<20} {'CREATED':<25} {'REVOKED':<25} MAX SESSIONS / MEMORY")
    for row in rows:
        limits = f"{row['max_sessions'] or '-'} / {row['max_memory_mb'] or '-'}"
        revoked = row["revoked_at"] or "-"
        print(f"{row['id']:<18} {row['tenant']:<20} {row['created_at']:<25} {revoked:<25} {limits}")
    return 0


def _revoke(session: Session, args: argparse.Namespace) -> int:
    revoked = revoke_tokens(session, args.token)
    if args.json:
        print(json.dumps({"revoked": revoked}))
    elif revoked:
        print("revoked " + ", ".join(revoked))
    else:
        print(f"no live token or tenant {args.token!r}")
    return 0 if revoked else 1
