"""An operator's JSON object, checked before its fields are read: is it an object, and does it
name only fields this manager knows.

Why refuse unknown fields: a misspelt one (``"persistance": 3``) would be ignored, leaving in
force a default the operator believes they changed; the manager refuses it in one line and lists
the fields it knows. Used for a drift monitor's body and its ``capture_on_drift`` object
(fleet/drift/); the caller then reads the typed fields. The device protocol (edgeops/protocol)
does the opposite on purpose: an agent ignores keys it does not know, so an older agent still
reads what a newer manager signs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from edgeops.errors import UsageError

__all__ = ["known_fields"]


def known_fields(value: object, fields: Collection[str], *, what: str, not_object: str,
                 example: str) -> Mapping[str, Any]:
    """``value`` as an object whose every key is in ``fields``; otherwise a :class:`UsageError`:
    ``not_object`` with ``example`` as its hint, or ``unknown <what> field '<first>'`` with the
    known fields as its hint."""
    if not isinstance(value, Mapping):
        raise UsageError(not_object, hint=example)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise UsageError(f"unknown {what} field {unknown[0]!r}",
                         hint=f"fields: {', '.join(sorted(fields))}")
    return value
