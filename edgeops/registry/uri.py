"""MLflow model URIs as edgeops accepts them, parsed without touching the network.

The forms are MLflow's own: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` and
``runs:/RUN_ID/PATH``. Stages (``models:/NAME/Production``) are deprecated in MLflow and refused
with a hint to use an alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgeops.errors import UsageError

__all__ = ["RegistryUri", "is_registry_uri", "parse_registry_uri"]

_SCHEMES = ("models:/", "runs:/")
_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class RegistryUri:
    """A parsed registry reference: a model version, an alias, or a path in a run."""

    kind: Literal["version", "alias", "run"]
    text: str                      # as the user wrote it
    name: str | None = None        # registered model name (version, alias)
    version: str | None = None     # kind == "version"
    alias: str | None = None       # kind == "alias"
    run_id: str | None = None      # kind == "run"
    path: str = ""                 # kind == "run": artifact path inside the run


def is_registry_uri(text: str) -> bool:
    return text.startswith(_SCHEMES)


def parse_registry_uri(text: str) -> RegistryUri:
    """Parse one of the three forms; anything else is a usage error naming the forms."""
    if text.startswith("models:/"):
        rest = text.removeprefix("models:/").strip("/")
        if "@" in rest:
            name, _, alias = rest.rpartition("@")
            if name and "/" not in name and _ALIAS.match(alias):
                return RegistryUri("alias", text, name=name, alias=alias)
        else:
            name, _, version = rest.rpartition("/")
            if name and "/" not in name and version.isdigit():
                return RegistryUri("version", text, name=name, version=str(int(version)))
            if name and "/" not in name and version:
                raise UsageError(f"'{text}': stages are deprecated in MLflow",
                                 hint=f"point an alias at the version and use models:/{name}@ALIAS")
    elif text.startswith("runs:/"):
        run_id, _, path = text.removeprefix("runs:/").strip("/").partition("/")
        if _RUN_ID.match(run_id) and ".." not in path.split("/"):
            return RegistryUri("run", text, run_id=run_id, path=path)
    raise UsageError(f"'{text}' is not a model URI edgeops understands", hint=f"use {_FORMS}")
