"""API tokens: random bearer secrets stored only as SHA-256 hashes, each with one role.

Roles are ordered (``viewer < operator < publisher < admin``): a route names the least role it
needs. Viewers read; operators also enrol devices, deploy, pause, resume, cancel, roll back and
upload blessings; publishers also publish bundles; admins also manage tokens. Tokens are never
logged: only their short id (the first 16 hex digits of the hash) appears anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from edgeops.errors import UsageError
from fleet.errors import AuthError, ForbiddenError
from fleet.store import TokenRecord, TokenStore

__all__ = ["ROLES", "Principal", "authenticate", "create_token", "hash_token", "role_allows"]

ROLES = ("viewer", "operator", "publisher", "admin")
_PREFIX = "eot_"


class Principal:
    """Who is calling: the token's id, role and name (never the secret)."""

    def __init__(self, record: TokenRecord) -> None:
        self.token_id = record.token_id
        self.role = record.role
        self.name = record.name

    def require(self, role: str) -> None:
        if not role_allows(self.role, role):
            raise ForbiddenError(f"this needs the {role} role; token {self.token_id} is "
                                 f"{self.role}")


def role_allows(have: str, need: str) -> bool:
    return have in ROLES and ROLES.index(have) >= ROLES.index(need)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: TokenStore, role: str, name: str) -> tuple[str, TokenRecord]:
    """A new secret (shown once) and its stored record."""
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint=f"roles: {', '.join(ROLES)}")
    token = _PREFIX + secrets.token_urlsafe(32)
    return token, store.add_token(hash_token(token), role, name, time.time())


def authenticate(store: TokenStore, header: str | None) -> Principal:
    """``Authorization: Bearer <token>`` → the principal, or AuthError."""
    if not header:
        raise AuthError("this endpoint needs an API token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise AuthError("the Authorization header is not 'Bearer <token>'")
    digest = hash_token(token)
    record = store.get_token(digest)
    # the lookup is by hash; compare again in constant time for good measure
    if record is None or not hmac.compare_digest(record.token_id, digest[:16]):
        raise AuthError("unknown API token")
    if record.revoked:
        raise AuthError(f"API token {record.token_id} was revoked")
    return Principal(record)
