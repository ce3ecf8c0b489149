"""Bundle aliases in the fleet: ``NAME@champion`` names a published version, the way MLflow
aliases name model versions, so the registry's promotion and the fleet's deployment speak the
same word.

Moving an alias can start a staged rollout of the version it now names; the rollout is
created first, so a rejected one (no device selected, unblessed hardware) leaves the alias
where it was. Every move is kept with who made it (the API token's name) and its rollout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from edgeops.bundle.manifest import parse_version
from edgeops.errors import InvalidBundleError, UsageError
from fleet.errors import NotFoundError
from fleet.rollout import RolloutEngine, Strategy
from fleet.store import AliasRecord, AliasStore, BundleStore, Deployment

__all__ = ["AliasRollout", "check_alias", "is_alias", "move_alias", "resolve_alias"]

# MLflow's alias rule (letters, digits, '_' and '-'), minus what reads as a version.
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_VERSIONISH = re.compile(r"^v\d+$|^latest$", re.IGNORECASE)


def is_alias(text: str) -> bool:
    """Whether the part after ``@`` is an alias rather than a semantic version."""
    try:
        parse_version(text)
    except InvalidBundleError:
        return True
    return False


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or _VERSIONISH.match(alias):
        raise UsageError(f"'{alias}' is not a usable alias",
                         hint="letters, digits, '_' or '-', starting with a letter (not "
                              "'latest' or v<number>), e.g. champion")
    return alias


class AliasMoveStore(AliasStore, BundleStore, Protocol):
    """Moving an alias checks the version is published, then records the move."""


def resolve_alias(store: AliasStore, name: str, alias: str) -> AliasRecord:
    rec = store.get_alias(name, check_alias(alias))
    if rec is None:
        known = ", ".join(f"@{a.alias}" for a in store.list_aliases(name)) or "none"
        raise NotFoundError(f"no alias {name}@{alias} on this fleet",
                            hint=f"aliases of {name}: {known}; set one with "
                                 f"`edgeops fleet alias set {name}@{alias} VERSION`")
    return rec


@dataclass(frozen=True)
class AliasRollout:
    """The rollout a move starts: which devices, in which phases."""

    selector: str
    strategy: Strategy


def move_alias(store: AliasMoveStore, engine: RolloutEngine, name: str, alias: str, version: str,
               moved_by: str | None, now: float, rollout: AliasRollout | None = None,
               created_by: str | None = None) -> tuple[AliasRecord, Deployment | None]:
    """Point ``name@alias`` at a published ``version``; optionally start its rollout.

    ``moved_by`` is who, for people (the token's name); ``created_by`` goes on the deployment
    as for any other (the token id)."""
    check_alias(alias)
    if store.get_bundle(name, version) is None:
        raise NotFoundError(f"bundle {name}@{version} is not published on this fleet",
                            hint="publish it first: edgeops publish BUNDLE --fleet URL")
    dep = None
    if rollout is not None:
        dep = engine.create(name, version, rollout.selector, rollout.strategy,
                            created_by=created_by or moved_by)
    rec = store.set_alias(AliasRecord(name, alias, version, now, moved_by,
                                      dep.id if dep else None))
    return rec, dep
