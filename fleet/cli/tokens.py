"""``edgeops fleet token create|list|revoke``: API tokens (stored hashed by the manager).
"""

from __future__ import annotations

import click

from edgeops.cli.common import emit, json_option
from fleet.cli._common import api_client, fleet_options

__all__ = ["token"]


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (admin).

    \b
    Example:
      edgeops fleet token create --role operator --name ci
    """


@token.command("create")
@click.option("--role", required=True,
              type=click.Choice(["viewer", "operator", "publisher", "admin"]))
@click.option("--name", default=None, help="A label for people (shown in listings).")
@fleet_options
@json_option
def token_create(role: str, name: str | None, fleet_url: str, token: str | None,
                 as_json: bool) -> None:
    """Create a token; the secret is shown once.

    \b
    Example:
      edgeops fleet token create --role publisher --name ml-team
    """
    out = api_client(fleet_url, token).create_token(role, name)
    emit(as_json, out, lambda: f"{out['token']}\n(token {out['token_id']}, role {out['role']};"
                               " store it now, it is not shown again)")


@token.command("list")
@fleet_options
@json_option
def token_list(fleet_url: str, token: str | None, as_json: bool) -> None:
    """List tokens (ids and roles, never secrets).

    \b
    Example:
      edgeops fleet token list
    """
    out = api_client(fleet_url, token).tokens()
    emit(as_json, out, lambda: "\n".join(
        f"{t['token_id']}  {t['role']:<9} {t['name']}{'  (revoked)' if t['revoked'] else ''}"
        for t in out["items"]))


@token.command("revoke")
@click.argument("token_id")
@fleet_options
@json_option
def token_revoke(token_id: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Revoke a token by its id.

    \b
    Example:
      edgeops fleet token revoke 3f2a9c0d1e2b4a5c
    """
    out = api_client(fleet_url, token).revoke_token(token_id)
    emit(as_json, out, lambda: f"revoked {token_id}")
