"""The fleet manager's errors: the EdgeOpsError tree plus what the HTTP API must tell apart.

Each class carries the HTTP status the API answers with, so routes raise domain errors and one
handler turns them into ``{"error": message, "hint": hint}`` responses.
"""

from __future__ import annotations

from edgeops.errors import BadContentError, EdgeOpsError, UsageError

__all__ = [
    "AuthError",
    "ConflictError",
    "DeploymentRejected",
    "ForbiddenError",
    "NotFoundError",
    "http_status",
]


class NotFoundError(UsageError):
    """The named device, bundle or deployment does not exist."""

    exit_code = 1
    default_hint = "check the name (list them with `edgeops fleet devices` / `deployments`)"


class ConflictError(EdgeOpsError):
    """The request contradicts the current state (e.g. resuming a finished deployment)."""

    default_hint = "check the current state with `edgeops fleet status`"


class DeploymentRejected(BadContentError):
    """A deployment cannot start as asked: no device selected, a target without artifact..."""

    default_hint = "change the selector or build the bundle for the missing targets"


class AuthError(EdgeOpsError):
    """No token, an unknown token, or a revoked one."""

    default_hint = "pass --token or set EDGEOPS_TOKEN (see DATA/admin.token)"


class ForbiddenError(AuthError):
    """The token is valid but its role may not do this."""

    default_hint = "ask for a token with a higher role (`edgeops fleet token create --role ...`)"


def http_status(exc: EdgeOpsError) -> int:
    from edgeops.errors import TransportError

    for cls, status in ((ForbiddenError, 403), (AuthError, 401), (NotFoundError, 404),
                        (ConflictError, 409), (UsageError, 400), (BadContentError, 422),
                        (TransportError, 503)):
        if isinstance(exc, cls):
            return status
    return 400
