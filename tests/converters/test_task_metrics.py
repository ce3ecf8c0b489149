"""Task metrics on hand-made arrays: each one catches the damage its users would see."""

from __future__ import annotations

import numpy as np
import pytest

from converters.tasks.channels import channel_metrics, channel_score
from converters.tasks.classification import classification_score, topk_agreement
from converters.tasks.ctc import ctc_score, edit_distance, greedy_decode
from converters.tasks.decisions import decision_score
from converters.tasks.detection import (
    DenseLayout,
    Detections,
    decode_dense,
    dense_detection_score,
    iou_matrix,
    match_f1,
    nms,
)
from converters.tasks.masks import mask_score
from converters.tasks.score import TaskScore


def test_relative_drop_of_a_score() -> None:
    assert TaskScore("m", 0.9, 1.0).drop == pytest.approx(0.1)
    assert TaskScore("m", 0.5, 0.5).drop == 0.0
    assert TaskScore("m", 0.6, 0.5).drop == 0.0            # better than FP32 is no drop


# classification -------------------------------------------------------------------------

def test_topk_agreement_counts_the_fp32_class_among_the_candidates_top_k() -> None:
    ref = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    got = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    assert topk_agreement(ref, got, 1) == pytest.approx(1 / 3)
    assert topk_agreement(ref, got, 2) == pytest.approx(2 / 3)
    assert topk_agreement(ref, got, 5) == 1.0              # k over the class count


def test_classification_gates_agreement_or_accuracy_with_labels() -> None:
    ref = np.eye(6)[[0, 1, 2, 3]] + 0.01
    got = np.eye(6)[[0, 1, 2, 4]] + 0.01
    s = classification_score(ref, got)
    assert (s.metric, s.value, s.reference) == ("top1_agreement", 0.75, 1.0)
    assert s.details["top5_agreement"] == 1.0
    lab = classification_score(ref, got, labels=np.array([0, 1, 5, 4]))
    assert lab.metric == "top1_accuracy"
    assert (lab.reference, lab.value) == (0.5, 0.75)       # the candidate got lucky: no drop
    assert lab.drop == 0.0


def test_one_score_classifier_is_judged_by_its_decision() -> None:
    s = classification_score(np.array([[0.9], [0.2], [0.6]]), np.array([[0.8], [0.3], [0.4]]))
    assert s.metric == "decision_agreement" and s.value == pytest.approx(2 / 3)


# per-channel cosine ---------------------------------------------------------------------

def test_per_channel_cosine_sees_a_small_channel_that_a_whole_tensor_cosine_hides() -> None:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1000, (4, 4, 300))
    probs = rng.uniform(0, 1, (4, 2, 300))
    ref = np.concatenate([coords, probs], axis=1)
    got = ref.copy()
    got[:, 4:] = np.where(probs < 0.6, 0.0, probs * 2)    # what a shared 8-bit range did
    whole = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert whole > 0.999                                    # the fooled gate
    cos, snr = channel_metrics(ref, got, axis=0)
    assert cos[:4].min() == pytest.approx(1.0) and cos[4:].max() < 0.9
    assert snr[4:].max() < 5 and np.isinf(snr[:4]).all()
    s = channel_score({"out": ref}, {"out": got})
    assert s.value == pytest.approx(cos.min())
    assert s.details["worst_channel"]["output"] == "out" and s.details["worst_channel"]["channel"] >= 4


def test_channel_axis_last_and_zero_and_nan_channels() -> None:
    ref = np.zeros((2, 5, 3))
    ref[..., 0] = 1.0
    got = ref.copy()
    cos, _ = channel_metrics(ref, got, axis=1)
    assert cos.shape == (3,) and np.allclose(cos, 1.0)      # all-zero channels equal: fine
    got[..., 2] = 0.5
    cos, _ = channel_metrics(ref, got, axis=1)
    assert cos[2] == 0.0                                    # zero in FP32, not in the candidate
    got[0, 0, 1] = np.nan
    cos, snr = channel_metrics(ref, got, axis=1)
    assert cos[1] == -1.0 and snr[1] == -np.inf
    assert channel_score({"i": np.arange(3)}, {"i": np.arange(3)}).details["outputs"] == {}


# detection ------------------------------------------------------------------------------

def _head(boxes: list[tuple[float, float, float, float]], scores: list[list[float]],
          anchors: int = 40) -> np.ndarray:
    """A (4 + C, anchors) head: boxes cx, cy, w, h then class scores; unused anchors empty."""
    c = len(scores[0])
    h = np.zeros((4 + c, anchors))
    for i, (b, s) in enumerate(zip(boxes, scores, strict=True)):
        h[:4, i] = b
        h[4:, i] = s
    return h


def test_iou_nms_and_match() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 1 / 3, 0.0])
    d = Detections(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10.0]]),
                   np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]))
    kept = nms(d, 0.45)
    assert kept.scores.tolist() == [0.9, 0.7]               # same box, other class survives
    ref = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]]), np.array([0.9, 0.8]),
                     np.array([0, 1]))
    got = Detections(np.array([[0, 0, 10, 11], [20, 20, 30, 30.0]]), np.array([0.9, 0.8]),
                     np.array([0, 2]))
    assert match_f1(ref, got) == (1, 2, 2)                 # second one: wrong class


def test_dense_head_decoding_either_axis_order() -> None:
    h = _head([(50, 50, 20, 20), (200, 100, 40, 20)], [[0.9, 0.1], [0.2, 0.7]])
    d = decode_dense(h, DenseLayout(anchors_last=True, objectness=False))
    assert d.classes.tolist() == [0, 1]
    assert d.boxes[0].tolist() == [40, 40, 60, 60]
    t = decode_dense(h.T, DenseLayout(anchors_last=False, objectness=False))
    assert t.boxes.tolist() == d.boxes.tolist()
    obj = np.insert(h, 4, [0.5, 0.1] + [0.0] * 38, axis=0)   # 5 + C: objectness scales scores
    o = decode_dense(obj.T, DenseLayout(anchors_last=False, objectness=True))
    assert o.scores.tolist() == pytest.approx([0.45])        # 0.7 * 0.1 is under 0.25


def test_detection_f1_catches_class_scores_crushed_by_a_shared_range() -> None:
    boxes = [(100 + 60 * i, 300, 40, 40) for i in range(10)]
    probs = [[0.3 + 0.06 * i, 0.05] for i in range(10)]
    ref = np.stack([_head(boxes, probs)] * 3)
    crushed = ref.copy()
    crushed[:, 4:] = np.where(ref[:, 4:] < 0.6, 0.0, ref[:, 4:] * 2)
    layout = DenseLayout(anchors_last=True, objectness=False)
    bad = dense_detection_score(ref, crushed, layout)
    assert bad.metric == "detection_f1" and bad.value < 0.7
    assert bad.details["detections_reference"] == 30
    good = dense_detection_score(ref, ref + 0.001, layout)
    assert good.value == 1.0 and good.details["class_score_cosine"] > 0.9999
    assert bad.details["class_score_cosine"] < good.details["class_score_cosine"]
    none = dense_detection_score(ref * 0, ref * 0, layout)
    assert none.value == 1.0                                 # nothing detected by either...
    assert none.evidence is not None and none.evidence.count == 0  # ...so it proves nothing
    assert none.evidence.missing("the 3 samples") == \
        "the FP32 model detects nothing in the 3 samples (score threshold 0.25)"
    assert bad.evidence is not None and bad.evidence.count == 30
    assert bad.evidence.missing("the 3 samples") is None


# masks, CTC, decisions ------------------------------------------------------------------

def test_mask_iou_at_the_threshold_and_over_classes() -> None:
    ref = np.zeros((2, 1, 8, 8))
    ref[:, :, 2:6, 2:6] = 0.9
    got = ref.copy()
    got[:, :, 2:6, 4:6] = 0.25                              # half the mask falls under 0.3
    s = mask_score(ref, got, 0.3)
    assert s.metric == "mask_iou" and s.value == pytest.approx(0.5)
    assert mask_score(ref, got, 0.2).value == 1.0
    assert mask_score(ref * 0, ref * 0).value == 1.0         # both empty
    multi = np.stack([1 - ref[:, 0], ref[:, 0]], axis=1)     # background, object
    assert mask_score(multi, multi).value == 1.0
    flip = multi[:, ::-1]
    assert mask_score(multi, flip).value == 0.0


def test_channels_last_masks_are_read_per_pixel_class() -> None:
    from converters.tasks import TaskSpec, task_score

    ref = np.zeros((2, 8, 8, 2))
    ref[..., 0] = 1.0
    ref[:, 2:6, 2:6] = (0.1, 0.9)                            # an object in the middle
    got = ref.copy()
    got[:, 2:6, 4:6] = (0.9, 0.1)                            # half of it lost
    spec = TaskSpec("segmentation", False, "", ("y",), channels_last=True)
    s = task_score(spec, {"y": ref}, {"y": got})
    assert s.metric == "mask_iou" and s.details["classes"] == 2
    assert s.value == pytest.approx((48 + 8) / (56 + 16))    # background and object, summed
    assert task_score(spec, {"y": ref}, {"y": ref}).value == 1.0


def test_ctc_greedy_decode_and_cer() -> None:
    steps = [0, 3, 3, 0, 3, 5, 5, 0]                         # blank 0: reads 3 3 5
    ref = np.eye(6)[steps][None]
    assert greedy_decode(ref[0]) == [3, 3, 5]
    assert edit_distance([3, 3, 5], [3, 5]) == 1
    got = np.eye(6)[[0, 3, 3, 3, 3, 5, 5, 0]][None]          # the blank between 3s lost
    s = ctc_score(ref, got)
    assert s.metric == "one_minus_cer"
    assert s.details["cer"] == pytest.approx(1 / 3) and s.value == pytest.approx(2 / 3)
    assert s.details["argmax_agreement"] == pytest.approx(7 / 8)
    assert ctc_score(np.swapaxes(ref, 1, 2), np.swapaxes(ref, 1, 2), time_axis=1).value == 1.0


def test_decision_agreement_over_a_stream() -> None:
    ref = np.array([[0.1], [0.6], [0.7], [0.2]])
    got = np.array([[0.1], [0.4], [0.7], [np.nan]])
    s = decision_score(ref, got)
    assert s.metric == "decision_agreement" and s.value == 0.75
    assert s.details["steps"] == 4 and s.details["positive_fraction_reference"] == 0.5


def _graph(out_shape: list[int | str], op: str, inputs: dict[str, list[int | str]] | None = None,
           extra_out: dict[str, list[int | str]] | None = None):  # type: ignore[no-untyped-def]
    """A one-node graph whose output is made by ``op`` (enough for the task rules)."""
    from onnx import TensorProto as T
    from onnx import helper as h

    ins = inputs or {"x": ["N", 4]}
    outs = [h.make_tensor_value_info("y", T.FLOAT, out_shape)]
    nodes = [h.make_node(op, ["x"], ["y"])]
    for name, shape in (extra_out or {}).items():
        outs.append(h.make_tensor_value_info(name, T.FLOAT, shape))
        nodes.append(h.make_node("Identity", [next(i for i in ins if i != "x")], [name]))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, s)
                                  for n, s in ins.items()], outs)
    return h.make_model(g)


def test_auto_task_rules_on_hand_made_graphs() -> None:
    from converters.tasks import infer_task

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    cls = infer_task(_graph(["N", 5], "Softmax"), {"y": probs}, {"x": (1, 4)})
    assert cls.task == "classification" and "made by Softmax" in cls.why
    squeezed = infer_task(_graph(["N", 1, 5], "Relu"), {"y": probs[:, None]}, {"x": (1, 4)})
    assert squeezed.task == "classification" and "rows sum to 1" in squeezed.why
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    assert infer_task(_graph(["N", 5], "Relu"), {"y": logits}, {"x": (1, 4)}).task == "regression"
    assert infer_task(_graph(["N", 5], "Relu"), {"y": logits}, {"x": (1, 4)},
                      labels=True).task == "classification"
    seg = infer_task(_graph(["N", 1, "H", "W"], "Sigmoid"),
                     {"y": rng.uniform(size=(2, 1, 16, 16))}, {"x": (1, 3, 16, 16)})
    assert seg.task == "segmentation" and seg.threshold == 0.5
    ctc = infer_task(_graph(["N", "T", 30], "Softmax"), {"y": rng.uniform(size=(2, 12, 30))},
                     {"x": (1, 3, 32, 100)})
    assert ctc.task == "ctc"
    vad = infer_task(_graph(["N", 1], "Sigmoid", {"x": ["N", 512], "h": [2, "N", 64]},
                            {"hn": [2, "N", 64]}),
                     {"y": rng.uniform(size=(6, 1)), "hn": rng.standard_normal((6, 2, 1, 64))},
                     {"x": (1, 512), "h": (2, 1, 64)})
    assert vad.task == "vad" and vad.outputs == ("y",) and "'hn'" not in vad.outputs
    emb = infer_task(_graph(["N", "L", 16], "Tanh"), {"y": rng.standard_normal((2, 7, 16))},
                     {"x": (1, 7, 4)})
    assert emb.task == "embedding" and emb.channel_axes["y"] == 1    # features, not positions
    with pytest.raises(ValueError, match="--task detection: no output has the form"):
        infer_task(_graph(["N", 5], "Softmax"), {"y": probs}, {"x": (1, 4)}, "detection")
    text = infer_task(_graph(["N", 1, "H", "W"], "Sigmoid"),
                      {"y": rng.uniform(size=(2, 1, 16, 16))}, {"x": (1, 3, 16, 16)},
                      "text-detection")
    assert text.task == "text-detection" and text.threshold == 0.3 and not text.inferred
    nhwc = rng.uniform(size=(2, 16, 16, 2))
    last = infer_task(_graph(["N", 16, 16, 2], "Div"), {"y": nhwc}, {"x": (1, 16, 16, 1)},
                      "segmentation")
    assert last.channels_last and "channels-last" in last.why
    assert infer_task(_graph(["N", 16, 16, 2], "Div"), {"y": nhwc},
                      {"x": (1, 16, 16, 1)}).task != "segmentation"   # auto does not guess it


def test_end_to_end_detection_outputs() -> None:
    from converters.tasks import TaskSpec, task_score
    from converters.tasks.infer import _end_to_end

    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30.0]]] * 2)
    scores = np.array([[0.9, 0.8]] * 2)
    classes = np.array([[1, 2]] * 2, np.int64)
    outs = {"boxes": boxes, "scores": scores, "classes": classes}
    assert _end_to_end(outs) == ("boxes", "scores", "classes")
    spec = TaskSpec("detection", True, "", ("boxes", "scores", "classes"), threshold=0.25)
    assert task_score(spec, outs, outs).value == 1.0
    worse = {**outs, "scores": np.array([[0.9, 0.1]] * 2)}          # one detection lost
    s = task_score(spec, outs, worse)
    assert s.value == pytest.approx(2 * 2 / (4 + 2)) and s.details["detections"] == 2


# evidence: what FP32 gives each metric to judge ------------------------------------------

def test_each_metric_counts_what_fp32_gives_it_to_judge() -> None:
    from converters.tasks import Evidence

    mask = np.zeros((2, 1, 8, 8))
    mask[:, :, 2:4, 2:4] = 0.9
    assert mask_score(mask, mask).evidence == mask_score(mask, mask * 0).evidence
    assert mask_score(mask, mask).evidence.count == 8                     # type: ignore[union-attr]
    assert mask_score(mask * 0, mask).evidence.count == 0                 # type: ignore[union-attr]
    assert mask_score(mask * 0, mask * 0).details["mask_pixels_reference"] == 0
    one_class = np.stack([np.ones((2, 8, 8)), np.zeros((2, 8, 8))], axis=1)
    empty = mask_score(one_class, one_class)
    assert empty.value == 1.0 and empty.evidence is not None and empty.evidence.count == 0
    assert "labels every pixel class 0 (of 2)" in str(empty.evidence.missing("x"))
    two = np.stack([1 - mask[:, 0], mask[:, 0]], axis=1)
    assert mask_score(two, two).details["pixels_outside_top_class_reference"] == 8

    blank = np.eye(6)[[0] * 8][None]
    text = np.eye(6)[[0, 3, 3, 0, 5, 0, 0, 0]][None]
    silent = ctc_score(blank, blank)
    assert silent.value == 1.0 and silent.evidence == Evidence(0, silent.evidence.nothing)  # type: ignore[union-attr]
    assert ctc_score(text, blank).evidence.count == 2                     # type: ignore[union-attr]

    quiet = decision_score(np.full((5, 1), 0.1), np.full((5, 1), 0.1))
    assert quiet.evidence is not None and quiet.evidence.count == 0
    assert "at or below 0.5 at every step of s" in str(quiet.evidence.missing("s"))
    loud = decision_score(np.full((5, 1), 0.9), np.full((5, 1), 0.9))
    assert "above 0.5" in str(loud.evidence.missing("s"))                 # type: ignore[union-attr]
    mixed = decision_score(np.array([[0.1], [0.9], [0.8]]), np.zeros((3, 1)))
    assert mixed.evidence is not None and mixed.evidence.count == 1

    binary = classification_score(np.full((4, 1), 0.2), np.full((4, 1), 0.2))
    assert binary.evidence is not None and binary.evidence.count == 0
    labelled = classification_score(np.full((4, 1), 0.2), np.full((4, 1), 0.2),
                                    labels=np.array([0, 1, 0, 1]))
    assert labelled.evidence is None                        # the labels judge
    assert classification_score(np.eye(3), np.eye(3)).evidence is None   # always a top-1


def test_evidence_phrase_must_leave_room_for_the_samples() -> None:
    from converters.tasks import Evidence

    with pytest.raises(ValueError, match="no {samples} slot"):
        Evidence(0, "the FP32 model detects nothing")
    with pytest.raises(ValueError, match="negative"):
        Evidence(-1, "nothing in {samples}")
