"""Run an FP32 model once per calibration sample with chosen tensors exposed, streamed.

Passes need statistics of inner tensors (histograms, per-channel maxima, mean shifts). They
get them one sample at a time through :func:`stream_tensors`, so memory holds one sample's
exposed tensors plus whatever the pass reduces them to, however many samples there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["exposed", "head_samples", "stream_tensors"]


def exposed(model: Any, names: Sequence[str]) -> Any:
    """A copy of ``model`` whose outputs are ``names`` (in that order)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name: o for o in m.graph.output}
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(known.get(n) or onnx.helper.make_empty_tensor_value_info(n))
    return m


def stream_tensors(model: Any, names: Sequence[str], samples: Iterable[Mapping[str, Any]],
                   fn: Callable[[dict[str, np.ndarray]], None]) -> int:
    """Call ``fn({name: array})`` for each sample; returns the number of samples seen."""
    import onnxruntime as ort

    if not names:
        return 0
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(exposed(model, names).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    seen = 0
    for feed in samples:
        outs = sess.run(list(names), {k: v for k, v in feed.items() if k in inputs})
        fn({n: np.asarray(v) for n, v in zip(names, outs, strict=True)})
        seen += 1
    return seen


def head_samples(samples: Any, n: int) -> Any:
    """The first ``n`` samples of a SampleSet, one at a time (fewer if it has fewer)."""
    it = samples.iter_samples()
    for _ in range(min(n, len(samples))):
        s = next(it, None)
        if s is None:
            return
        yield s
