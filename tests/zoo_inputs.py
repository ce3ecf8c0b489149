"""Real inputs for each model of :mod:`tests.realzoo`, as the model's own preprocessing wants.

Every function returns ``{input name: array}`` with the samples on axis 0 and each sample one
batch of the model (batch-stacked: ``(N, 3, H, W)`` for an image model), made from the photos,
scans and speech of :mod:`tests.realdata`. Deterministic. Shared by the zoo tests and
``benchmarks/converter_zoo.py``.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from tests.realdata import PHRASES, photos, scans

__all__ = ["INPUTS", "bert_tokens", "magika_bytes", "micrographs", "name_tokens", "ocr_cls",
           "ocr_det", "ocr_det_640", "ocr_rec", "t5_tokens", "text_windows", "yolo"]

_MEAN = np.array((0.485, 0.456, 0.406))
_STD = np.array((0.229, 0.224, 0.225))


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from skimage.transform import resize

    out: np.ndarray = resize(img, (h, w), anti_aliasing=True, preserve_range=True)
    return out


def _rgb(a: np.ndarray) -> np.ndarray:
    return a[..., :3] if a.ndim == 3 else np.stack([a] * 3, -1)


def text_windows(n: int, size: int, seed: int = 0,
                 scale: tuple[float, float] = (0.5, 1.0)) -> np.ndarray:
    """``n`` square windows of the two printed-text scans, each a random fraction ``scale`` of
    the scan's short side at a random offset, resized to ``size`` x ``size``, RGB 0..255.

    Distinct samples: the scans are wider than tall, so a crop of their full height (what this
    did before) repeated two images over and over, squashed to a square."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = scans()[i % 2]
        side = int(min(s.shape[:2]) * rng.uniform(*scale))
        y = int(rng.integers(0, s.shape[0] - side + 1))
        x = int(rng.integers(0, s.shape[1] - side + 1))
        out.append(_rgb(_resize(s[y:y + side, x:x + side], size, size)))
    return np.stack(out)


def ocr_det(n: int, size: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """DBNet input: ImageNet-normalised NCHW windows of the text scans (size a multiple of
    32), every sample a different window (:func:`text_windows`)."""
    x = (text_windows(n, size, seed) / 255.0 - _MEAN) / _STD
    return {"x": x.transpose(0, 3, 1, 2).astype(np.float32)}


def ocr_det_640(n: int) -> dict[str, np.ndarray]:
    """DBNet input at 640x640, the size issue 16 measures the detector at: the same scan
    windows as :func:`ocr_det`, resized to 640."""
    return ocr_det(n, 640)


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """The [start, end) runs of True in a 1-D mask at least ``min_len`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_len]


@cache
def _page_words() -> tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]:
    """The printed lines of the page scan as (top, bottom, word x-spans): rows of ink by
    horizontal projection of a Sauvola-binarised page (it has uneven lighting), then words by
    the vertical projection of each line, letters closer than a third of the line's height
    joined. The handwritten ``text`` scan has slanted lines that no projection separates."""
    from skimage.filters import threshold_sauvola

    page = scans()[0]
    ink = page < threshold_sauvola(page, window_size=31, k=0.2)
    out = []
    for top, bottom in _runs(ink.mean(1) > 0.08, 6):
        spans = _runs(ink[top:bottom].any(0), 1)
        words = [list(spans[0])]
        for a, b in spans[1:]:
            if a - words[-1][1] < max(3, (bottom - top) // 3):
                words[-1][1] = b
            else:
                words.append([a, b])
        out.append((top, bottom, tuple((a, b) for a, b in words)))
    return tuple(out)


@cache
def _line_crops(height: int, max_width: int) -> tuple[np.ndarray, ...]:
    """Every run of consecutive words on one printed line of the page scan that fits
    ``max_width`` at ``height`` pixels high, cropped with the margin a text detector's box
    keeps (DBNet unclips its boxes), resized to ``height`` keeping the aspect ratio, RGB
    0..255; in a fixed shuffled order (varied widths, lines and x offsets first)."""
    page = scans()[0]
    crops = []
    for top, bottom, words in _page_words():
        pad = max(3, (bottom - top) * 2 // 5)
        y0, y1 = top - pad, bottom + pad
        if y0 < 0 or y1 >= page.shape[0]:      # cut by the scan's edge: no whole line to box
            continue
        for i in range(len(words)):
            for j in range(i, len(words)):
                x0, x1 = max(0, words[i][0] - 4), min(page.shape[1], words[j][1] + 4)
                w = math.ceil(height * (x1 - x0) / (y1 - y0))
                if w > max_width:
                    break
                crops.append(_rgb(_resize(page[y0:y1, x0:x1], height, w)))
    order = np.random.default_rng(0).permutation(len(crops))
    return tuple(crops[k] for k in order)


def ocr_rec(n: int, width: int = 320) -> dict[str, np.ndarray]:
    """CTC recogniser input as a deployed OCR pipeline feeds it (PaddleOCR's
    ``resize_norm_img``): one detected word or run of words of a printed line, 48 pixels high
    with its aspect ratio kept, at most ``width`` wide, scaled to [-1, 1] and right-padded
    with 0 (the pad is 0 in normalised space) to ``width``. Cycles after the distinct crops."""
    crops = _line_crops(48, width)
    x = np.zeros((n, 48, width, 3), np.float32)
    for i in range(n):
        c = crops[i % len(crops)]
        x[i, :, :c.shape[1]] = (c / 255.0 - 0.5) / 0.5
    return {"x": x.transpose(0, 3, 1, 2).copy()}


def ocr_cls(n: int, width: int = 192) -> dict[str, np.ndarray]:
    """Text-direction classifier input as PaddleOCR's pipeline feeds it: the same detected
    word runs as :func:`ocr_rec` (48 high, aspect kept, at most ``width`` wide), every other
    one turned upside down (the crop itself, before padding), scaled to [-1, 1] and
    right-padded with 0 to ``width``. Cycles after the distinct crops."""
    crops = _line_crops(48, width)
    x = np.zeros((n, 48, width, 3), np.float32)
    for i in range(n):
        c = crops[(i // 2) % len(crops)]         # each crop upright, then upside down
        c = c[::-1, ::-1] if i % 2 else c
        x[i, :, :c.shape[1]] = (c / 255.0 - 0.5) / 0.5
    return {"x": x.transpose(0, 3, 1, 2).copy()}


def yolo(n: int, size: int = 1024) -> dict[str, np.ndarray]:
    """YOLO input: photos and scans resized to size x size, RGB in [0, 1], NCHW."""
    out = [_resize(_rgb(p), size, size) for p in (photos() + scans())[:n]]
    return {"images": (np.stack(out) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)}


def micrographs(n: int, size: int = 256) -> dict[str, np.ndarray]:
    """Grey microscopy-like tiles for the nucleus segmenter: scikit-image's cell micrograph and
    coins (round blobs on a background), resized to size x size, in [0, 1] (the model package
    scales 8-bit input by its bit depth), NHWC with one channel."""
    import skimage.data

    src = (skimage.data.cell(), skimage.data.coins())
    out = [_resize(src[i % 2][::1 if i < 2 else -1], size, size) / 255.0 for i in range(n)]
    return {"input:0": np.stack(out)[..., None].astype(np.float32)}


def magika_bytes(n: int) -> dict[str, np.ndarray]:
    """File-type classifier input: 2048 byte values (int32) of text, image rows and JSON."""
    text = np.frombuffer((" ".join(PHRASES) * 20).encode(), np.uint8)
    js = np.frombuffer(b'{"k": [1, 2, 3], "v": "x"}\n' * 100, np.uint8)
    out = []
    for i in range(n):
        kind = i % 3
        b = text[i * 7:i * 7 + 2048] if kind == 0 else (
            scans()[i % len(scans())].reshape(-1)[i * 64:i * 64 + 2048] if kind == 1 else js[:2048])
        out.append(b.astype(np.int32))
    return {"bytes": np.stack(out)}


def name_tokens(n: int, length: int = 12) -> dict[str, np.ndarray]:
    """GRU encoder input: token ids of the PHRASES' letters (int64) and an all-true mask."""
    chars = " ".join(PHRASES)
    ids = np.array([4 + (ord(c) % 56) for c in chars], np.int64)
    src = np.stack([ids[i * 5:i * 5 + length] for i in range(n)])
    return {"src": src, "src_mask": np.ones((n, length), bool)}


def bert_tokens(n: int, length: int = 16) -> dict[str, np.ndarray]:
    """BERT-uncased-vocabulary input: [CLS], ids of frequent words (the vocabulary's ids
    1996.. are its most frequent words, in order), [SEP]; the wheel ships no tokenizer."""
    rng = np.random.default_rng(0)
    words = rng.zipf(1.3, (n, length - 2)) % 3000 + 1996
    ids = np.concatenate([np.full((n, 1), 101), words, np.full((n, 1), 102)], axis=1)
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((n, length), np.int64),
            "token_type_ids": np.zeros((n, length), np.int64)}


def t5_tokens(n: int, length: int = 16) -> dict[str, np.ndarray]:
    """Sentencepiece-vocabulary input: ids of frequent pieces (Zipf over 3..3000) ending in the
    end-of-sequence id 1; the wheel ships no tokenizer."""
    rng = np.random.default_rng(1)
    ids = rng.zipf(1.3, (n, length - 1)) % 3000 + 3
    ids = np.concatenate([ids, np.ones((n, 1), np.int64)], axis=1)
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((n, length), np.int64)}


INPUTS = {"ocr-det": ocr_det, "ocr-det-640": ocr_det_640, "ocr-det-small": ocr_det,
          "ocr-rec": ocr_rec, "ocr-cls": ocr_cls,
          "yolov8-doc": yolo, "magika": magika_bytes, "name-encoder": name_tokens,
          "minilm": bert_tokens, "quantised-encoder": t5_tokens,
          "nucleus-seg-256": micrographs}
