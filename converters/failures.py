"""Any failure inside a build as one line: which model, which node, which input, what to do.

ONNX Runtime, its quantiser and ONNX's shape inference fail with messages written for their own
developers (``Got invalid dimensions for input: state ... index 0 Got: 1 Expected: 2``, a bare
``KeyError: '140_scale'``). A build turns every such exception into one
:class:`edgeops.errors.BadContentError` that names the model and what the message names (node,
input), with a hint. The original exception stays chained (``--debug`` shows it).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from edgeops.errors import BadContentError

__all__ = ["BuildFailure", "cause", "explain"]

_NODE = re.compile(r"running (\w+) node\. Name:\s*'([^']*)'")
_BAD_DIMS = re.compile(r"invalid dimensions for input: (\S+) for the following indices\s*"
                       r"(?:index: (\d+) Got: (\d+) Expected: (\d+))?")
_BAD_RANK = re.compile(r"Invalid rank for input: (\S+) Got: (\d+) Expected: (\d+)")
_BAD_TYPE = re.compile(r"Unexpected input data type\. Actual: \((\w+)\) , expected: \((\w+)\)")
_MISSING = re.compile(r"Required inputs \((\[[^\]]*\])\) are missing")


class BuildFailure(BadContentError):
    default_hint = ("check --input-shape / --batch-axis / the data against the model's inputs; "
                    "run with --debug for the full trace and report it if the model is fine")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = f"KeyError {exc.args[0]!r}"
    return text.splitlines()[0] if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """The innermost frame outside our own code: which library step failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    for f in reversed(frames):
        if not _ours(f.filename):
            return f"{Path(f.filename).name}:{f.name}"
    return frames[-1].name if frames else "?"


def _ours(filename: str) -> bool:
    return "/converters/" in filename or "/edgeops/" in filename


def _node_in_frames(exc: BaseException) -> str | None:
    """The graph node a library was working on when it raised, read from its frames (innermost
    first): a local ``node`` (an ONNX NodeProto), ``node_name``, or a value carrying one (ORT's
    quantiser keeps ``bias_info.node_name``). None when no library frame names one."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for f in reversed(frames):
        if _ours(f.f_code.co_filename):
            continue
        loc = f.f_locals
        n = loc.get("node")
        op, node_name = getattr(n, "op_type", None), getattr(n, "name", None)
        if op and node_name:
            return f"{op} node '{node_name}'"
        named = [loc.get("node_name"), *(getattr(v, "node_name", None) for v in loc.values())]
        for name in named:
            if isinstance(name, str) and name:
                return f"node '{name}'"
    return None


def explain(exc: BaseException, model: Path | str, stage: str) -> BuildFailure:
    """One line for ``exc`` raised while ``stage`` ran on ``model``, with a hint."""
    msg = str(exc)
    name = Path(model).name
    node = _NODE.search(msg)
    at = f" at {node.group(1)} node '{node.group(2)}'" if node else ""
    if m := _BAD_DIMS.search(msg):
        dims = (f" (dim {m.group(2)}: fed {m.group(3)}, the model wants {m.group(4)})"
                if m.group(2) else "")
        return BuildFailure(
            f"{name}: {stage} fed input '{m.group(1)}' a wrong shape{dims}{at}",
            hint=f"fix --input-shape {m.group(1)}=... / --batch-axis {m.group(1)}=K, or give "
                 "data in the input's real shape (samples first)")
    if m := _BAD_RANK.search(msg):
        return BuildFailure(
            f"{name}: {stage} fed input '{m.group(1)}' rank {m.group(2)}, the model wants "
            f"rank {m.group(3)}{at}", hint=f"check the data or --input-shape for '{m.group(1)}'")
    if m := _BAD_TYPE.search(msg):
        return BuildFailure(f"{name}: {stage} fed a {m.group(1)} where the model wants "
                            f"{m.group(2)}{at}", hint="give the data in the input's dtype")
    if m := _MISSING.search(msg):
        return BuildFailure(f"{name}: {stage} left inputs {m.group(1)} unfed{at}",
                            hint="give data for them, or --input-value NAME=V")
    if node:
        return BuildFailure(f"{name}: {stage} failed{at}: {_first_line(exc)}",
                            hint="the data or shapes do not suit this node; check --input-shape "
                                 "and the data (whole inputs, samples first); --debug shows "
                                 "the trace")
    return BuildFailure(f"{name}: {stage} failed {cause(exc)}")


def cause(exc: BaseException) -> str:
    """``in FILE:FUNCTION at node 'N': first line`` of a library's exception: where it failed
    and why, without the model or the step (the caller says those)."""
    found = _node_in_frames(exc)
    return f"in {_where(exc)}{f' at {found}' if found else ''}: {_first_line(exc)}"
