"""Release floors: the lowest version of each model a device may run, signed offline.

Why this module exists: the manager's online ``manager`` key chooses *which* offline-signed
bundle goes where, so a thief of that key could send a device back to an older bundle that the
targets key once signed (and that may have a known flaw). Following Uptane's release counters,
the offline-signed TUF ``targets`` metadata carries, per model name, a minimum version (the
*floor*) in its signed part (field ``x-edgeops-floors``, covered by the targets signatures);
raising it needs the targets key(s) (``edgeops publish --floor``). The agent then applies
:func:`check_install`: never below the floor, and never below what it runs unless the command
is an operator rollback. Pure: targets metadata and versions in, a refusal out.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuf.api.metadata import Targets

from edgeops.bundle.manifest import parse_version
from edgeops.errors import EdgeOpsError, UsageError, VerificationError

__all__ = ["FLOORS_FIELD", "DowngradeRefused", "check_install", "floors_from_file", "floors_of",
           "raise_floor"]

FLOORS_FIELD = "x-edgeops-floors"


class DowngradeRefused(VerificationError):
    """An install or rollback that would take a model below its floor or its installed version."""

    default_hint = ("deploy a version at or above the floor; only the offline targets key(s) "
                    "change floors (`edgeops publish --floor`)")


def floors_of(targets: Targets) -> dict[str, str]:
    """The floors in signed targets metadata; malformed ones fail closed (bad content)."""
    raw = targets.unrecognized_fields.get(FLOORS_FIELD, {})
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in raw.items()):
        raise VerificationError(f"targets metadata has a malformed {FLOORS_FIELD!r} field",
                                hint="re-publish with a current `edgeops publish`")
    try:
        for version in raw.values():
            parse_version(version)
    except EdgeOpsError as exc:
        raise VerificationError(f"targets metadata has a malformed floor: {exc.message}") from None
    return dict(raw)


def floors_from_file(path: Path) -> dict[str, str]:
    """Floors of a targets file that a TUF client already verified (its trusted local copy).

    No file yet (the device never refreshed) means no floors.
    """
    try:
        data = json.loads(path.read_bytes())
        targets = Targets.from_dict(data["signed"])
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"cannot read the trusted targets metadata {path}: {exc}",
                                hint="the next TUF refresh rewrites it") from None
    return floors_of(targets)


def raise_floor(targets: Targets, name: str, version: str) -> bool:
    """Set ``name``'s floor to ``version`` in ``targets`` (before it is signed).

    Floors only go up: lowering one would re-open the downgrade it closed. Returns whether
    anything changed (the same floor again is not a change).
    """
    parse_version(version)
    floors = floors_of(targets)
    current = floors.get(name)
    if current is not None and parse_version(version) < parse_version(current):
        raise UsageError(f"the floor of {name} is already {current}; floors never go down",
                         hint=f"pass --floor {current} or higher, or leave --floor out")
    if current == version:
        return False
    floors[name] = version
    targets.unrecognized_fields[FLOORS_FIELD] = dict(sorted(floors.items()))
    return True


def check_install(name: str, version: str, *, installed: str | None, floor: str | None,
                  rollback: bool) -> None:
    """The agent's downgrade rule for ``name@version``; raises :class:`DowngradeRefused`.

    ``installed``: the version of the same model the device runs now (None: another model or
    nothing). ``rollback``: the operator asked to go back (a ``rollback`` command, or a deploy
    made with ``--allow-downgrade``). The floor binds everybody; the installed version binds
    everything but an operator rollback.
    """
    wanted = parse_version(version)
    if floor is not None and wanted < parse_version(floor):
        raise DowngradeRefused(f"downgrade refused: {name}@{version} is below the release floor "
                               f"{floor} signed offline in the TUF targets")
    if (installed is not None and not rollback
            and wanted < parse_version(installed)):
        raise DowngradeRefused(f"downgrade refused: {name}@{version} is older than the installed "
                               f"{installed} and the command is not an operator rollback",
                               hint="to go back on purpose: `edgeops fleet rollback` or "
                                    "`edgeops fleet deploy --allow-downgrade`")

