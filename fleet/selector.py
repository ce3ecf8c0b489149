"""Device selectors: which devices a deployment targets, as a small tag-expression language.

``city=lyon,district=4|5,class=camera,target!=qnn-npu,id=cam-*``: comma-separated terms, all
of which must hold. ``k=v`` (``v`` may list alternatives ``a|b`` and use ``*`` globs), ``k!=v``.
Reserved keys: ``class``, ``target``, ``id``, ``version`` (active bundle version or
``name@version``); every other key is a device tag. ``all`` (or ``*``) selects every device.
Pure: parsing validates, and :meth:`Selector.matches` decides on a :class:`Device`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from edgeops.errors import UsageError
from fleet.store.models import Device, DeviceFilter

__all__ = ["Selector", "Term", "parse_selector"]

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RESERVED = ("class", "target", "id", "version")


@dataclass(frozen=True)
class Term:
    key: str
    values: tuple[str, ...]
    negate: bool = False

    def holds(self, device: Device) -> bool:
        if self.key == "class":
            actual: str | None = device.device_class
        elif self.key == "target":
            actual = device.target
        elif self.key == "id":
            actual = device.id
        elif self.key == "version":
            a = device.active or {}
            ver = str(a.get("version")) if a.get("version") else None
            hit = any(v in (ver, device.active_bundle) for v in self.values) if ver else False
            return hit != self.negate
        else:
            actual = device.tags.get(self.key)
        hit = actual is not None and any(fnmatch.fnmatchcase(actual, v) for v in self.values)
        return hit != self.negate

    def __str__(self) -> str:
        return f"{self.key}{'!=' if self.negate else '='}{'|'.join(self.values)}"


@dataclass(frozen=True)
class Selector:
    terms: tuple[Term, ...]

    def matches(self, device: Device) -> bool:
        return all(t.holds(device) for t in self.terms)

    def prefilter(self) -> DeviceFilter:
        """The part the store can evaluate in SQL (exact, single-valued, positive terms)."""
        tags: dict[str, str] = {}
        cls = target = None
        for t in self.terms:
            if t.negate or len(t.values) != 1 or "*" in t.values[0] or "?" in t.values[0]:
                continue
            if t.key == "class":
                cls = t.values[0]
            elif t.key == "target":
                target = t.values[0]
            elif t.key not in _RESERVED:
                tags[t.key] = t.values[0]
        return DeviceFilter(device_class=cls, target=target, tags=tags)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms) or "all"


def parse_selector(text: str) -> Selector:
    """Parse a selector; a malformed term is a usage error naming it."""
    text = text.strip()
    if text in ("", "all", "*"):
        return Selector(())
    terms = []
    for raw in text.split(","):
        part = raw.strip()
        negate = "!=" in part
        key, sep, value = part.partition("!=" if negate else "=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key) or not value:
            raise UsageError(f"selector term {part!r} is not key=value or key!=value",
                             hint="e.g. --select 'city=lyon,district=4,class=camera'")
        values = tuple(v.strip() for v in value.split("|"))
        if any(not v for v in values):
            raise UsageError(f"selector term {part!r} has an empty alternative")
        terms.append(Term(key, values, negate))
    return Selector(tuple(terms))
