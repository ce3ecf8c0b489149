"""Real inputs for the real-model zoo: photos and scans that scikit-image and scikit-learn ship,
speech spoken by ``espeak-ng``. Noise proves nothing about a detector or a recogniser.

Everything here is made or read locally: no download. A missing ``espeak-ng`` binary skips the
test with the reason (fails under ``EDGEOPS_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from functools import cache
from pathlib import Path

import numpy as np

from tests.services import need

__all__ = ["PHRASES", "photos", "scans", "speech"]

# colour photos shipped inside the scikit-image wheel, then scikit-learn's two sample images
_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat")
# greyscale scans of printed text and other greyscale photos
_SKIMAGE_SCANS = ("page", "text", "camera", "coins", "clock", "horse", "moon")

PHRASES = (
    "the next train to the city centre leaves from platform two",
    "turn left at the traffic lights and keep to the right lane",
    "sensor seven reports heavy rain on the north bridge",
    "please stand clear of the closing doors",
)


@cache
def photos() -> tuple[np.ndarray, ...]:
    """Colour photos, HxWx3 uint8, of varied sizes (resize for the model yourself)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = [np.ascontiguousarray(getattr(skimage.data, n)()[..., :3]) for n in _SKIMAGE_PHOTOS]
    out += [np.asarray(img) for img in load_sample_images().images]
    return tuple(a.astype(np.uint8) for a in out)


@cache
def scans() -> tuple[np.ndarray, ...]:
    """Greyscale scans and photos, HxW uint8; the first two are printed text."""
    import skimage.data

    return tuple(np.asarray(getattr(skimage.data, n)(), dtype=np.uint8) for n in _SKIMAGE_SCANS)


@cache
def speech(text: str, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by espeak-ng, mono float32 in [-1, 1] at ``rate`` Hz, with the silence
    espeak puts around it (a VAD needs both)."""
    exe = shutil.which("espeak-ng")
    need("espeak-ng", exe is not None, "apt-get install espeak-ng")
    assert exe is not None
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
        with wave.open(str(wav)) as w:
            native = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = pcm.astype(np.float32) / 32768.0
    if native != rate:  # linear resampling is enough for a VAD's input
        t = np.arange(int(len(x) * rate / native)) * (native / rate)
        x = np.interp(t, np.arange(len(x)), x).astype(np.float32)
    return x
