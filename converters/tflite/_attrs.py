"""An ONNX node's attributes, read with the type each one has.

``onnx.helper.get_attribute_value`` returns ``object`` (an int, a float, bytes, a list, an
array, a graph); the lowering reads each attribute as the kind its operator schema gives it.
:class:`Attrs` does that conversion in one typed place (named after ``AttributeProto``'s
fields: ``i``, ``f``, ``s``, ``ints``), so the lowering code needs no casts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import SupportsFloat, SupportsInt

import onnx
from onnx import helper

__all__ = ["Attrs", "node_attrs"]

_MISSING = object()


class Attrs(dict[str, object]):
    """``{name: value}`` of one node's attributes, with typed readers.

    A reader without a default raises KeyError for an absent attribute, as ``a[name]`` does.
    """

    def _value(self, name: str, default: object) -> object:
        if name in self:
            return self[name]
        if default is _MISSING:
            raise KeyError(name)
        return default

    def i(self, name: str, default: int | object = _MISSING) -> int:
        """An INT attribute."""
        v = self._value(name, default)
        if not isinstance(v, SupportsInt):
            raise TypeError(f"attribute '{name}' is {type(v).__name__}, not an integer")
        return int(v)

    def f(self, name: str, default: float | object = _MISSING) -> float:
        """A FLOAT attribute."""
        v = self._value(name, default)
        if not isinstance(v, SupportsFloat):
            raise TypeError(f"attribute '{name}' is {type(v).__name__}, not a number")
        return float(v)

    def s(self, name: str, default: str | object = _MISSING) -> str:
        """A STRING attribute (ONNX stores bytes)."""
        v = self._value(name, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    def ints(self, name: str, default: Sequence[int] | object = _MISSING) -> list[int]:
        """An INTS attribute."""
        v = self._value(name, default)
        if not isinstance(v, Iterable):
            raise TypeError(f"attribute '{name}' is {type(v).__name__}, not a list")
        return [int(x) for x in v]

    def strings(self, name: str, default: Sequence[str] | object = _MISSING) -> list[str]:
        """A STRINGS attribute (ONNX stores bytes)."""
        v = self._value(name, default)
        if not isinstance(v, Iterable):
            raise TypeError(f"attribute '{name}' is {type(v).__name__}, not a list")
        return [x.decode() if isinstance(x, bytes) else str(x) for x in v]


def node_attrs(node: onnx.NodeProto) -> Attrs:
    return Attrs({a.name: helper.get_attribute_value(a) for a in node.attribute})
