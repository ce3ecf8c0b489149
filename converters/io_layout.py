"""How a model is fed: each input's batch axis, its recurrent state pairs, fixed input values.

Models come with every input convention: batch first (``N x C x H x W``), a recurrent state
whose batch axis is not the first (``2 x batch x 128``), a scalar (a sample rate of shape
``()``), fixed-size inputs with no batch at all. Calibration data, golden samples and the
device's health check all need to know, per input, which axis a sample's batch is on, and, for
a streaming model, which output feeds which input at the next step. Everything here is pure:
the facts come from the graph's declared shapes and ``dim_param`` names, never from what the
model or its nodes are called, and the user overrides them (``--batch-axis``, ``--state``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edgeops.errors import UsageError

__all__ = ["Dim", "TensorDecl", "batch_axes", "parse_batch_axes", "parse_input_values",
           "parse_states", "state_pairs"]

Dim = int | str | None          # fixed size, dim_param name, or unnamed dynamic

# dim_param names that mean "batch" in the exporters we meet (torch, tf2onnx, paddle2onnx).
_BATCH_NAME = re.compile(r"^(n|b|bs|nb)$|batch", re.IGNORECASE)
# Words that tell a state input from the output that produces its next value.
_SWAP = {"out": "in", "new": "old", "next": "prev", "present": "past", "n": ""}
_OUT_SUFFIXES = ("n", "_n", "out", "_out", ".out", "new", "_new", "next", "_next", "_1", "1",
                 "_o")


@dataclass(frozen=True)
class TensorDecl:
    """A graph input or output as declared: name, element type, dims (``None`` rank unknown)."""

    name: str
    elem_type: int
    dims: tuple[Dim, ...] | None


def batch_axes(inputs: Sequence[TensorDecl],
               overrides: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """Per input, the axis a sample's batch lies on, or ``None`` when it has none.

    In order: an axis whose ``dim_param`` names a batch (``batch``, ``N``, ``batch_size``...)
    or is the name axis 0 of another rank>=2 input carries; else axis 0 when it is dynamic or 1;
    else the one unnamed dynamic axis; else none (scalars, fixed-size tensors). ``overrides``
    (``--batch-axis``) wins and is checked against the rank.
    """
    overrides = dict(overrides or {})
    names = {t.dims[0] for t in inputs
             if t.dims is not None and len(t.dims) >= 2 and isinstance(t.dims[0], str)}
    out: dict[str, int | None] = {}
    for t in inputs:
        if t.name in overrides:
            k = overrides.pop(t.name)
            rank = len(t.dims) if t.dims is not None else None
            if k is not None and rank is not None and not 0 <= k < rank:
                raise UsageError(f"--batch-axis {t.name}={k} is outside the input's rank {rank}",
                                 hint=f"give an axis in 0..{rank - 1}, or 'none'")
            out[t.name] = k
            continue
        out[t.name] = _batch_axis(t.dims, names)
    if overrides:
        raise UsageError(f"--batch-axis names unknown inputs {sorted(overrides)}",
                         hint=f"the model's inputs are {[t.name for t in inputs]}")
    return out


def _batch_axis(dims: tuple[Dim, ...] | None, shared: set[str]) -> int | None:
    if not dims:
        return None if dims is not None else 0
    matchers: tuple[Callable[[str], bool], ...] = (lambda d: bool(_BATCH_NAME.search(d)),
                                                    lambda d: d in shared)
    for match in matchers:
        for i, d in enumerate(dims):
            if isinstance(d, str) and match(d):
                return i
    if dims[0] is None or dims[0] == 1 or isinstance(dims[0], str):
        return 0
    dynamic = [i for i, d in enumerate(dims) if d is None or isinstance(d, str)]
    return dynamic[0] if len(dynamic) == 1 else None


def _compatible(a: tuple[Dim, ...] | None, b: tuple[Dim, ...] | None) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(not (isinstance(x, int) and isinstance(y, int)) or x == y
                                    for x, y in zip(a, b, strict=True))


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[_.:/\-\s]+", name.lower()) if t]


def _names_pair(out: str, inp: str) -> bool:
    """Whether output ``out`` reads as the next value of input ``inp`` (by name alone)."""
    o, i = out.lower(), inp.lower()
    if o == i:
        return False
    if any(o == i + s for s in _OUT_SUFFIXES):
        return True
    if any(i == o + s for s in ("in", "_in", "prev", "_prev", "_0", "0", "_i")):
        return True
    ot, it = _tokens(out), _tokens(inp)
    if len(ot) != len(it):
        return False
    swapped = [_SWAP.get(t, t) for t in ot]
    return swapped != ot and [t for t in swapped if t] == [t for t in it if t]


def state_pairs(inputs: Sequence[TensorDecl], outputs: Sequence[TensorDecl]
                ) -> dict[str, str]:
    """Output → input pairs that look like a recurrent state: names pair and shapes match.

    Each input and each output is paired at most once; an ambiguous match (one output that
    pairs with two inputs) pairs nothing for that output.
    """
    pairs: dict[str, str] = {}
    taken: set[str] = set()
    for o in outputs:
        cands = [i for i in inputs if i.name not in taken and i.elem_type == o.elem_type
                 and _names_pair(o.name, i.name) and _compatible(o.dims, i.dims)
                 and (i.dims is None or len(i.dims) > 0)]
        if len(cands) == 1:
            pairs[o.name] = cands[0].name
            taken.add(cands[0].name)
    return pairs


def parse_states(values: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]
                 ) -> dict[str, str]:
    """``--state OUT=IN`` (repeatable) → {output: input}, both checked against the model."""
    out: dict[str, str] = {}
    for v in values:
        o, sep, i = v.partition("=")
        if not sep or not o or not i:
            raise UsageError(f"--state '{v}' is not OUTPUT=INPUT", hint="e.g. --state stateN=state")
        if o not in outputs:
            raise UsageError(f"--state {v}: the model has no output '{o}'",
                             hint=f"its outputs are {list(outputs)}")
        if i not in inputs:
            raise UsageError(f"--state {v}: the model has no input '{i}'",
                             hint=f"its inputs are {list(inputs)}")
        if i in out.values():
            raise UsageError(f"--state names input '{i}' twice")
        out[o] = i
    return out


def parse_batch_axes(values: Sequence[str]) -> dict[str, int | None]:
    """``--batch-axis NAME=K`` (``K`` an axis or ``none``) → {input: axis or None}."""
    out: dict[str, int | None] = {}
    for v in values:
        name, sep, k = v.rpartition("=")
        k = k.strip().lower()
        if not sep or not name or not (k == "none" or k.isdigit()):
            raise UsageError(f"--batch-axis '{v}' is not NAME=AXIS",
                             hint="e.g. --batch-axis state=1, or state=none for no batch axis")
        out[name] = None if k == "none" else int(k)
    return out


def parse_input_values(values: Sequence[str]) -> dict[str, float]:
    """``--input-value NAME=V`` → {input: value}; the input is filled with V where no data has
    it (a sample rate, a threshold), cast to the input's dtype."""
    out: dict[str, float] = {}
    for v in values:
        name, sep, val = v.rpartition("=")
        try:
            num = float(val)
        except ValueError:
            num = float("nan")
        if not sep or not name or num != num:
            raise UsageError(f"--input-value '{v}' is not NAME=NUMBER",
                             hint="e.g. --input-value sr=16000")
        out[name] = num
    return out


def recurrent_nodes(nodes: Sequence[tuple[str, Sequence[str], Sequence[str]]],
                    states: Mapping[str, str]) -> set[str]:
    """Names of the nodes on a path from a state input to its state output.

    ``nodes`` are (name, inputs, outputs). Error added there is fed back at every step and
    compounds along a stream, so quantisation keeps them in float (a stateless model has none).
    """
    if not states:
        return set()
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for k, (_, ins, outs) in enumerate(nodes):
        for t in ins:
            consumers.setdefault(t, []).append(k)
        for t in outs:
            producer[t] = k
    fwd: set[int] = set()
    todo = [k for i in states.values() for k in consumers.get(i, [])]
    while todo:
        k = todo.pop()
        if k not in fwd:
            fwd.add(k)
            todo += [c for t in nodes[k][2] for c in consumers.get(t, [])]
    back: set[int] = set()
    todo = [producer[o] for o in states if o in producer]
    while todo:
        k = todo.pop()
        if k not in back:
            back.add(k)
            todo += [producer[t] for t in nodes[k][1] if t in producer]
    return {nodes[k][0] for k in fwd & back}
