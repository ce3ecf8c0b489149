"""Camera streams cut from real photos, for benchmarks/drift.py: no drift, gradual brightness,
contrast and colour-cast change, and abrupt re-aiming.

Why it exists: image features (per channel brightness and contrast, a coarse colour category)
must be judged on photographs, not noise. The photos are the ones scikit-image and scikit-learn
ship (tests/realdata.py); a "camera" looks at a region of four of them (astronaut, coffee,
chelsea, rocket): each frame is a random crop (position and size jitter) of one of them, reduced
to the model's 32 x 32 input by block means, plus a little sensor noise. Re-aiming moves the
crops to the other side of the same photos (mild) or onto scenes never seen (strong: the two
scikit-learn photos and immunohistochemistry).

The model is the project's small image classifier (benchmarks/models/mobilenet.onnx, 10 classes,
inputs normalised as its training data: ``(x - 0.45) / 0.25``); its drift baseline comes from
``converters.drift_baseline.drift_reference_for`` exactly as ``edgeops build`` calls it, with
2,000 no-drift frames written as the validation ``.npz``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgeops.drift.reference import DriftReference

__all__ = ["IMAGE_DRIFTS", "Camera", "ImageDrift", "image_reference"]

SIZE = 32
CROPS = (96, 128, 160)              # crop sides, multiples of SIZE (block-mean reduction)
VIEW = ("astronaut", "coffee", "chelsea", "rocket")
OTHER = ("immunohistochemistry",)   # + scikit-learn's china and flower: the strong re-aim
MODEL = Path(__file__).parent / "models" / "mobilenet.onnx"
MEAN, STD = 0.45, 0.25              # the model's input normalisation (benchmarks/models/datagen)
NOISE = 0.01                        # sensor noise, in [0, 1] pixel units


@dataclass(frozen=True)
class ImageDrift:
    """One drift type: ``apply(frames in [0, 1], level)``; ``aim`` picks the crop regions."""

    kind: str
    label: str
    magnitudes: tuple[float, ...]
    gradual: bool
    apply: Callable[[np.ndarray, float], np.ndarray] | None = None


def _brightness(x: np.ndarray, level: float) -> np.ndarray:
    out: np.ndarray = x * np.float32(1.0 - level)
    return out                      # exposure falls (dusk)


def _contrast(x: np.ndarray, level: float) -> np.ndarray:
    m = x.mean(axis=(2, 3), keepdims=True)                  # each frame's own mean: kept
    out: np.ndarray = m + np.float32(1.0 - level) * (x - m)   # haze
    return out


def _colour(x: np.ndarray, level: float) -> np.ndarray:
    gain = np.array([1.0 + level, 1.0, 1.0 - level], np.float32)[None, :, None, None]
    out: np.ndarray = x * gain                              # white balance drifts warm
    return out


IMAGE_DRIFTS = (
    ImageDrift("brightness", "brightness falls (gain 1 - d)", (0.1, 0.3), True, _brightness),
    ImageDrift("contrast", "contrast falls (x (1 - d) around each frame's mean)", (0.1, 0.3),
               True, _contrast),
    ImageDrift("colour", "colour cast (R x (1 + d), B x (1 - d))", (0.05, 0.15), True, _colour),
    ImageDrift("reaim", "camera re-aimed (1: other side of the same photos, 2: new scenes)",
               (1.0, 2.0), False),
)


def _photos(names: tuple[str, ...], extra: bool = False) -> list[np.ndarray]:
    import skimage.data

    out = [np.ascontiguousarray(getattr(skimage.data, n)()[..., :3]) for n in names]
    if extra:
        from sklearn.datasets import load_sample_images

        out += [np.asarray(a) for a in load_sample_images().images]
    return [a.astype(np.float32) / np.float32(255.0) for a in out]


def _reduced(photo: np.ndarray) -> list[np.ndarray]:
    """The photo block-mean reduced by each crop factor, ``[3, h / f, w / f]``."""
    out = []
    for side in CROPS:
        f = side // SIZE
        h, w = (photo.shape[0] // f) * f, (photo.shape[1] // f) * f
        r = photo[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
        out.append(np.ascontiguousarray(r.transpose(2, 0, 1), dtype=np.float32))
    return out


class Camera:
    """Frames as the model sees them (``[n, 3, 32, 32]`` float32, normalised)."""

    def __init__(self) -> None:
        # each photo pre-reduced once per crop size: a crop whose corner sits on the block grid
        # is then a slice (position jitter in steps of 3 to 5 pixels)
        self.view = [_reduced(p) for p in _photos(VIEW)]
        self.other = [_reduced(p) for p in _photos(OTHER, extra=True)]

    def frames(self, rng: np.random.Generator, n: int, aim: float = 0.0) -> np.ndarray:
        """``n`` frames in [0, 1]: aim 0 the usual view (left 60 % of each photo), 1 the right
        60 % of the same photos, 2 other photos."""
        photos = self.other if aim >= 2.0 else self.view
        lo, hi = (0.4, 1.0) if 1.0 <= aim < 2.0 else (0.0, 0.6)
        out = np.empty((n, 3, SIZE, SIZE), np.float32)
        which = rng.integers(0, len(photos), n)
        sizes = rng.integers(0, len(CROPS), n)
        u, v = rng.random(n), rng.random(n)
        for i in range(n):
            r = photos[which[i]][sizes[i]]                  # [3, h / f, w / f]
            h, w = r.shape[1:]
            x_lo, x_hi = int(lo * w), max(int(lo * w) + 1, int(hi * w) - SIZE)
            x0 = x_lo + int(u[i] * (x_hi - x_lo))
            y0 = int(v[i] * (h - SIZE))
            out[i] = r[:, y0:y0 + SIZE, x0:x0 + SIZE]
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(NOISE)
        return out

    @staticmethod
    def normalise(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((np.clip(x, 0.0, 1.0) - np.float32(MEAN)) / np.float32(STD))
        return out.astype(np.float32)


def stats(x: np.ndarray) -> np.ndarray:
    """Per-image channel means and standard deviations (``[n, 6]``): what the raw-data detectors
    and the mean shift are fed (the sketch's brightness/contrast features, unbinned)."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    out: np.ndarray = np.concatenate([flat.mean(axis=2), flat.std(axis=2)], axis=1)
    return out


def image_reference(camera: Camera, work: Path, samples: int = 2000
                    ) -> tuple[DriftReference, np.ndarray]:
    """(DriftReference, the reference frames' raw stats) as ``edgeops build`` makes it: the
    frames are written as the validation ``.npz`` and read back through the build's loader."""
    from converters.api import BuildRequest
    from converters.data import load_samples
    from converters.drift_baseline import drift_reference_for
    from converters.model_check import load_source
    from converters.validate import model_inputs, run_onnx

    rng = np.random.default_rng(2026)
    x = camera.normalise(camera.frames(rng, samples))
    val_path = work / "camera.val.npz"
    np.savez(val_path, input=x)
    source = load_source(MODEL)
    inputs = model_inputs(source.model)
    request = BuildRequest(model=MODEL, name="camera-classifier", version="1.0.0",
                           targets=("cpu-onnx",), validation=val_path)
    val = load_samples(val_path, inputs, what="validation").head(200)   # what the build keeps
    outputs = run_onnx(source.path, val, threads=1)
    ref = drift_reference_for(request, source.path, inputs, val, outputs, synthetic=False)
    assert ref is not None
    return ref, stats(x)
