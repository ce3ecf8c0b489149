"""The fleet manager's HTTP API (Starlette): JSON under /api/v1, TUF, OpenAPI, health."""

from fleet.api.app import create_app, openapi_document
from fleet.api.services import Services

__all__ = ["Services", "create_app", "openapi_document"]
