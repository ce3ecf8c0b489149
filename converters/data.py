"""Calibration and validation data: load, check against the model's inputs, and stream.

Accepted forms (the ``--calibration`` / ``--validation`` options):

* an ``.npz`` file: arrays keyed by input name, first axis = samples;
* a directory of ``.npy`` files named ``<input>.npy`` (same layout as the npz);
* a directory of images plus a preprocessing spec (resize, layout, mean/std), for
  single-input vision models.

Samples are handed out one at a time (:meth:`SampleSet.iter_samples`) so calibration can stream
without holding every activation of every sample in memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeops.errors import BadContentError

__all__ = ["LABELS_KEY", "InputSpec", "Preprocessing", "SampleSet", "load_labels", "load_samples",
           "validate_samples"]

# Validation data may carry ground truth under this key (class index per sample) unless the
# model has an input of that name.
LABELS_KEY = "labels"

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm"}


class DataError(BadContentError):
    default_hint = "give arrays keyed by the model's input names, first axis = samples"


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: name, numpy dtype, shape with None for dynamic dims."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int | None, ...]


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
    """Validated samples: ``arrays[name]`` has shape ``(n, *input_shape)``."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """One sample with a batch axis of 1 (as the model is fed)."""
        return {k: v[i : i + 1] for k, v in self.arrays.items()}

    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.sample(i)

    def head(self, n: int) -> SampleSet:
        return SampleSet({k: v[:n] for k, v in self.arrays.items()})


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
                 preprocessing: Preprocessing | None = None) -> SampleSet:
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
    return validate_samples(arrays, inputs, what=what)


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
                     what: str = "calibration") -> SampleSet:
    names = {s.name for s in inputs}
    missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
    if missing or extra:
        raise DataError(f"{what} data does not match the model's inputs: missing {missing}, "
                        f"unexpected {extra}", hint=f"key the arrays by {sorted(names)}")
    counts = {k: int(v.shape[0]) if v.ndim else 0 for k, v in arrays.items()}
    if not counts or min(counts.values()) == 0:
        raise DataError(f"{what} set is empty", hint="give at least one sample (100+ recommended)")
    if len(set(counts.values())) != 1:
        raise DataError(f"{what} inputs have different sample counts: {counts}")
    out: dict[str, np.ndarray] = {}
    for spec in inputs:
        a = np.asarray(arrays[spec.name])
        if a.dtype != spec.dtype:
            if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating)):
                raise DataError(f"{what} input '{spec.name}' has dtype {a.dtype}, "
                                f"the model expects {spec.dtype}")
            a = a.astype(spec.dtype)
        # The samples axis takes the place of the batch axis: arrays are (n, *input_shape[1:]).
        if a.ndim != len(spec.shape):
            raise DataError(f"{what} input '{spec.name}' has shape {a.shape} (samples first), "
                            f"the model expects rank {len(spec.shape)} {_fmt(spec.shape)}")
        for got, want in zip(a.shape[1:], spec.shape[1:], strict=True):
            if want is not None and got != want:
                raise DataError(f"{what} input '{spec.name}' has sample shape {a.shape[1:]}, "
                                f"the model expects {_fmt(spec.shape)}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise DataError(f"{what} input '{spec.name}' holds {bad} NaN or Inf values",
                            hint="clean the data; NaN/Inf would poison the quantisation ranges")
        out[spec.name] = a
    return SampleSet(out)


def _fmt(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
