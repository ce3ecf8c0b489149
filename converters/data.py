"""Calibration and validation data: load, check against the model's inputs, and stream.

Accepted forms (the ``--calibration`` / ``--validation`` options), per input:

* **whole inputs per sample**: the samples axis prepended to the model's full input shape
  (``rank = model rank + 1``; a scalar input gives ``(N,)``, a ``1x3x224x224`` input
  ``(N, 1, 3, 224, 224)``), what ONNX Runtime's ``CalibrationDataReader`` and TFLite's
  ``representative_dataset`` hand over, stacked;
* **batch-stacked**: ``rank = model rank``, samples on the batch axis, only for an input whose
  batch axis is axis 0 and whose batch is dynamic or 1;

in an ``.npz`` file keyed by input name or a directory of ``<input>.npy`` files; or a directory
of images plus a preprocessing spec (resize, layout, mean/std), for single-input vision models.
The form is read from the ranks; a case both readings fit is refused showing both.

Inside, every input is kept with the samples axis *in place of its batch axis*, moved first
(``(N, 2, 128)`` for a ``2 x batch x 128`` state; ``(N,)`` for a scalar); a sample is fed with
its batch axis put back (:meth:`SampleSet.sample`). Golden files use the same layout and the
manifest records each input's batch axis, so a device feeds them the same way.
Samples are handed out one at a time (:meth:`SampleSet.iter_samples`) so calibration can stream
without holding every activation of every sample in memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeops.errors import BadContentError

__all__ = ["LABELS_KEY", "DataError", "InputSpec", "Preprocessing", "SampleSet", "feed_value",
           "load_labels", "load_samples", "sample_shape", "to_sample", "validate_samples"]

# Validation data may carry ground truth under this key (class index per sample) unless the
# model has an input of that name.
LABELS_KEY = "labels"

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm"}


class DataError(BadContentError):
    default_hint = ("give arrays keyed by the model's input names, first axis = samples "
                    "(whole inputs, or batch-stacked on a batch-first input)")


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: name, numpy dtype, shape with None for dynamic dims, the axis
    a sample's batch lies on (``None``: no batch axis, e.g. a scalar) and whether the model
    declares the rank at all."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int | None, ...]
    batch_axis: int | None = 0
    rank_known: bool = True


def sample_shape(spec: InputSpec) -> tuple[int | None, ...]:
    """One sample's shape inside a :class:`SampleSet`: the input's shape less its batch axis."""
    return tuple(d for i, d in enumerate(spec.shape) if i != spec.batch_axis)


def feed_value(stored: np.ndarray, batch_axis: int | None) -> np.ndarray:
    """A stored sample (batch axis removed) as the model is fed: with a batch of one."""
    a = np.asarray(stored)
    return np.expand_dims(a, batch_axis) if batch_axis is not None else a


def to_sample(fed: np.ndarray, batch_axis: int | None) -> np.ndarray:
    """The inverse of :func:`feed_value` for a batch of one (e.g. a state output fed back)."""
    a = np.asarray(fed)
    return a.squeeze(axis=batch_axis) if batch_axis is not None and a.ndim > batch_axis else a


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image file into a model input."""

    size: tuple[int, int] | None = None           # (height, width)
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0


@dataclass
class SampleSet:
    """Validated samples: ``arrays[name]`` is ``(n, *sample_shape)``, the samples axis in place
    of the input's batch axis (``batch_axes``, 0 when not listed; ``None``: none)."""

    arrays: dict[str, np.ndarray]
    batch_axes: dict[str, int | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """One sample with a batch of 1 on each input's batch axis (as the model is fed)."""
        return {k: feed_value(v[i], self.batch_axes.get(k, 0)) for k, v in self.arrays.items()}

    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.sample(i)

    def head(self, n: int) -> SampleSet:
        return SampleSet({k: v[:n] for k, v in self.arrays.items()}, dict(self.batch_axes))

    def spread(self, n: int) -> SampleSet:
        """``n`` samples evenly spaced over the set: the head of a stream (leading silence) or
        of a set sorted by class is not representative of it."""
        if n >= len(self):
            return self
        idx = np.linspace(0, len(self) - 1, n).round().astype(int)
        return SampleSet({k: v[idx] for k, v in self.arrays.items()}, dict(self.batch_axes))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from None


def _load_images(directory: Path, pre: Preprocessing, spec: InputSpec) -> dict[str, np.ndarray]:
    from PIL import Image  # optional: only image directories need Pillow

    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    size = pre.size
    if size is None:
        h, w = (spec.shape[2], spec.shape[3]) if pre.layout == "NCHW" else (spec.shape[1], spec.shape[2])
        if not isinstance(h, int) or not isinstance(w, int):
            raise DataError("the model's image size is dynamic; give a preprocessing size",
                            hint="pass --input-shape or a resize in the preprocessing spec")
        size = (h, w)
    out = []
    for f in files:
        img = Image.open(f).convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.float32) * np.float32(pre.scale)
        a = ((a - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)).astype(np.float32)
        out.append(a.transpose(2, 0, 1) if pre.layout == "NCHW" else a)
    return {spec.name: np.stack(out).astype(spec.dtype)} if out else {}


def load_samples(path: Path, inputs: Sequence[InputSpec], *, what: str = "calibration",
                 preprocessing: Preprocessing | None = None,
                 values: Mapping[str, float] | None = None,
                 zeros: Sequence[str] = ()) -> SampleSet:
    """Load and validate samples for ``inputs``; every problem is one :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} data {path} does not exist", hint="check the path")
    if path.is_dir():
        npys = sorted(path.glob("*.npy"))
        if npys:
            arrays = {p.stem: np.load(p, allow_pickle=False) for p in npys}
        elif len(inputs) == 1:
            arrays = _load_images(path, preprocessing or Preprocessing(), inputs[0])
        else:
            raise DataError(f"{what} directory {path} holds no .npy files")
    else:
        arrays = _load_npz(path)
    if LABELS_KEY in arrays and LABELS_KEY not in {s.name for s in inputs}:
        arrays = {k: v for k, v in arrays.items() if k != LABELS_KEY}
    return validate_samples(arrays, inputs, what=what, values=values, zeros=zeros)


def load_labels(path: Path, inputs: Sequence[InputSpec]) -> np.ndarray | None:
    """Class indices stored under ``labels`` next to the inputs, if any (npz or labels.npy)."""
    path = Path(path)
    if LABELS_KEY in {s.name for s in inputs}:
        return None
    if path.is_dir():
        f = path / f"{LABELS_KEY}.npy"
        labels = np.load(f, allow_pickle=False) if f.is_file() else None
    elif path.is_file():
        labels = _load_npz(path).get(LABELS_KEY)
    else:
        return None
    if labels is None:
        return None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{LABELS_KEY}' must be a 1-D integer array (class per sample)")
    return np.asarray(labels)


def validate_samples(arrays: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], *,
                     what: str = "calibration", values: Mapping[str, float] | None = None,
                     zeros: Sequence[str] = ()) -> SampleSet:
    """Check ``arrays`` against ``inputs``, read each one's form, and lay them out for feeding.

    Inputs absent from ``arrays`` are filled with ``values[name]`` (``--input-value``) or, for
    the state inputs of a sequence (``zeros``), with zeros: the state the stream starts from.
    """
    values = dict(values or {})
    names = {s.name for s in inputs}
    missing = sorted(names - set(arrays) - set(values) - set(zeros))
    extra = sorted(set(arrays) - names)
    if missing or extra:
        raise DataError(f"{what} data does not match the model's inputs: missing {missing}, "
                        f"unexpected {extra}", hint=f"key the arrays by {sorted(names)}")
    out: dict[str, np.ndarray] = {}
    splits: dict[str, int] = {}
    for spec in inputs:
        if spec.name not in arrays:
            continue
        a = _checked_dtype(np.asarray(arrays[spec.name]), spec, what)
        out[spec.name], splits[spec.name] = _arranged(a, spec, what)
    counts = {k: int(v.shape[0]) for k, v in out.items()}
    if not counts or min(counts.values()) == 0:
        raise DataError(f"{what} set is empty", hint="give at least one sample (100+ recommended)")
    if len(set(counts.values())) != 1:
        out = _repeat_unbatched(out, splits, counts, what)
    n = len(next(iter(out.values())))
    for spec in inputs:
        if spec.name not in out:
            fill = values.get(spec.name, 0.0)
            out[spec.name] = np.full((n, *_concrete(spec, what)), fill).astype(spec.dtype)
        a = out[spec.name]
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise DataError(f"{what} input '{spec.name}' holds {bad} NaN or Inf values",
                            hint="clean the data; NaN/Inf would poison the quantisation ranges")
    return SampleSet({s.name: out[s.name] for s in inputs},
                     {s.name: s.batch_axis for s in inputs})


def _checked_dtype(a: np.ndarray, spec: InputSpec, what: str) -> np.ndarray:
    if a.dtype == spec.dtype:
        return a
    same_kind = (np.issubdtype(a.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating)) \
        or (np.issubdtype(a.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer)
            and np.can_cast(a.dtype, spec.dtype, casting="same_kind")
            and (a.size == 0 or np.array_equal(a.astype(spec.dtype).astype(a.dtype), a)))
    if not same_kind:
        raise DataError(f"{what} input '{spec.name}' has dtype {a.dtype}, "
                        f"the model expects {spec.dtype}")
    return a.astype(spec.dtype)


def _fits(got: Sequence[int], want: Sequence[int | None]) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want,
                                                                             strict=True))


def _arranged(a: np.ndarray, spec: InputSpec, what: str) -> tuple[np.ndarray, int]:
    """``a`` in the SampleSet layout, and the per-sample batch it was split from (1: none)."""
    ba = spec.batch_axis
    if a.ndim == 0:
        raise DataError(f"{what} input '{spec.name}' is a single value, not samples",
                        hint=f"give an array of shape (N,{' ...' if spec.shape else ''}) "
                             "with one entry per sample")
    if not spec.rank_known:
        raise DataError(
            f"{what} input '{spec.name}' {a.shape}: the model does not declare this input's "
            f"rank, so it reads as whole inputs ({a.shape[0]} samples of "
            f"{_fmt(a.shape[1:]) or 'scalar'}) or as batch-stacked ({a.shape[0]} samples of "
            f"1x{_fmt(a.shape[1:])})", hint=f"say which with --input-shape {spec.name}=...")
    whole = a.ndim == len(spec.shape) + 1 and _fits(a.shape[1:], spec.shape)
    stackable = ba == 0 and spec.shape and spec.shape[0] in (None, 1)
    stacked = bool(stackable) and a.ndim == len(spec.shape) and _fits(a.shape[1:],
                                                                     spec.shape[1:])
    if whole:
        if ba is None:
            return a, 1
        b = a.shape[1 + ba]
        if b == 1:
            return a.squeeze(axis=1 + ba), 1
        moved = np.moveaxis(a, 1 + ba, 1)
        return moved.reshape(a.shape[0] * b, *moved.shape[2:]), b
    if stacked:
        return a, 1
    forms = f"whole inputs (N, {_fmt(spec.shape) or 'scalar'})"
    if stackable:
        forms += f" or batch-stacked (N, {_fmt(spec.shape[1:])})"
    where = "no batch axis" if ba is None else f"batch axis {ba}"
    raise DataError(f"{what} input '{spec.name}' has shape {a.shape}; the model expects rank "
                    f"{len(spec.shape)} {_fmt(spec.shape) or '(a scalar)'} ({where}): give "
                    f"{forms}",
                    hint="samples first; --batch-axis NAME=K if the batch axis is read wrong")


def _repeat_unbatched(out: dict[str, np.ndarray], splits: Mapping[str, int],
                      counts: Mapping[str, int], what: str) -> dict[str, np.ndarray]:
    """Whole samples with a batch over 1 were split into single samples: repeat the inputs
    without a batch axis (a sample rate) to match, or refuse counts that do not agree."""
    factor = {b for b in splits.values() if b > 1}
    batched = {counts[k] for k, b in splits.items() if b > 1}
    if len(factor) == 1 and len(batched) == 1:
        b, n = factor.pop(), batched.pop()
        if all(counts[k] * b == n or counts[k] == n for k in out):
            return {k: v if counts[k] == n else np.repeat(v, b, axis=0) for k, v in out.items()}
    raise DataError(f"{what} inputs have different sample counts: {dict(counts)}")


def _concrete(spec: InputSpec, what: str) -> tuple[int, ...]:
    shape = sample_shape(spec)
    if any(d is None for d in shape):
        raise DataError(f"{what}: input '{spec.name}' is filled without data, but its shape "
                        f"{_fmt(spec.shape)} has dynamic dims",
                        hint=f"fix them with --input-shape {spec.name}=...")
    return tuple(int(d) for d in shape if d is not None)


def _fmt(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
