"""A converter benchmark's child reports its own peak memory, not its parent's."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks._rss import peak_rss_mib

BALLAST_MIB = 768


def _tiny(path: Path) -> None:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(path))


def _in_child(model: str, out: str) -> dict[str, Any]:
    """Both benchmarks' converter children, run where they run: a process spawned from a
    parent whose peak is larger than anything they do."""
    import resource

    from benchmarks._tflite_zoo import _ours_child
    from benchmarks.converter_tflite import _convert_child

    ours = _ours_child(model, {"x": (1, 4)}, [], out)
    conv = _convert_child(model, "fp32", True, False, np.zeros((2, 1, 4), np.float32), "x",
                          "tflite")
    return {"ours": ours["peak_rss_mib"], "convert": conv["peak_rss_kib"] / 1024,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@pytest.mark.slow          # one spawned interpreter with the converter's imports
@pytest.mark.subprocess
def test_a_spawned_converter_child_reports_its_own_peak_not_the_parents(
        tmp_path: Path) -> None:
    """Was: ``ru_maxrss``, which Linux carries across fork and exec: the child reported the
    benchmark parent's peak."""
    ballast = np.ones(BALLAST_MIB * 2**17)         # float64: BALLAST_MIB MiB, touched
    assert ballast.sum() > 0
    del ballast
    parent = peak_rss_mib()
    model = tmp_path / "m.onnx"
    _tiny(model)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        got = ex.submit(_in_child, str(model), str(tmp_path / "m.tflite")).result()
    assert got["ru_maxrss"] >= parent - 1           # what the old figure read
    assert 0 < got["ours"] < parent - BALLAST_MIB / 2
    assert 0 < got["convert"] < parent - BALLAST_MIB / 2
