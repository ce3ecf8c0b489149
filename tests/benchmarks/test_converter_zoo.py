"""benchmarks/converter_zoo's reading of its rows: issue 16's goal checks, the figures a user
checks (per-timestep argmax agreement of a CTC recogniser), merging runs, the table, and the
NNCF column without its venv (as on CI)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import _nncf
from benchmarks._zoo_goals import GoalCheck, check_goals, figures
from benchmarks._zoo_report import markdown, merged, variants_of


def _row(metric: str, value: float, speed: float | None, **details: float) -> dict[str, Any]:
    row: dict[str, Any] = {"task_metric": metric, "task_value": value, "task_details": details}
    if speed is not None:
        row["speedup_vs_fp32"] = speed
        row["p50_ms"] = 10.0 / speed
    return row


def _entry(task: str, rows: dict[str, Any]) -> dict[str, Any]:
    return {"task": {"task": task, "inferred": True, "why": ""}, "samples": 4,
            "variants": {"fp32": _row(*_FP32[task], 1.0), **rows}}


_FP32 = {"text-detection": ("mask_iou", 1.0), "ctc": ("one_minus_cer", 1.0),
         "detection": ("detection_f1", 1.0), "classification": ("top1_agreement", 1.0)}


def _result(models: dict[str, Any]) -> dict[str, Any]:
    return {"threads": 1, "rounds": 3, "runs_per_round": 3, "samples": 4, "perf_aware": True,
            "cpu": {"vnni": True}, "loadavg_start": [1.0], "loadavg_end": [1.0],
            "versions": {"onnxruntime": "1.32.0", "onnx": "1.23.2", "numpy": "2.4.6",
                         "python": "3.11.7"}, "models": models}


def _verdicts(result: dict[str, Any], goal_start: str) -> dict[str, GoalCheck]:
    return {c.subject: c for c in check_goals(result, variants_of)
            if c.goal.startswith(goal_start)}


def test_ctc_goal_reads_the_per_timestep_argmax_agreement_not_the_cer() -> None:
    from converters.tasks.ctc import ctc_score

    # 20 steps, 4 classes, blank (0) everywhere but two "2"s; the candidate reads one more
    # step differently: 19 of 20 steps agree
    ref = np.full((1, 20, 4), -5.0)
    ref[0, :, 0] = 5.0
    ref[0, [3, 9], 2] = 9.0
    same = ctc_score(ref, ref.copy())
    assert figures({"task_metric": same.metric, "task_value": same.value,
                    "task_details": same.details})["argmax_agreement"] == 1.0
    one = ref.copy()
    one[0, 4, 2] = 9.0          # the "2" of step 3 now lasts two steps: same text, CER 0
    s = ctc_score(ref, one)
    row = {"task_metric": s.metric, "task_value": s.value, "task_details": s.details,
           "speedup_vs_fp32": 1.5}
    fig = figures(row)
    assert fig["argmax_agreement"] == pytest.approx(19 / 20)
    assert fig["one_minus_cer"] == 1.0            # the text alone would pass the goal
    res = _result({"ocr-rec": _entry("ctc", {"edgeops-vnni-default": row})})
    c = _verdicts(res, "CTC")["ocr-rec / edgeops-vnni-default"]
    assert c.met is False and "argmax_agreement 0.9500" in c.figures
    ok = copy.deepcopy(res)
    ok["models"]["ocr-rec"]["variants"]["edgeops-vnni-default"]["task_details"][
        "argmax_agreement"] = 0.996
    assert _verdicts(ok, "CTC")["ocr-rec / edgeops-vnni-default"].met is True


@pytest.mark.parametrize(("iou", "speed", "met"), [(0.91, 1.31, True), (0.91, 1.29, False),
                                                    (0.89, 2.0, False)])
def test_dbnet_goal_needs_both_the_iou_and_the_speed(iou: float, speed: float, met: bool) -> None:
    res = _result({"ocr-det-640": _entry("text-detection", {
        "edgeops-vnni-default": _row("mask_iou", iou, speed)})})
    v = _verdicts(res, "DBNet text detector: mask IoU >= 0.90")
    assert v["ocr-det-640 / edgeops-vnni-default"].met is met
    # the x86-cpu row was not measured: said so, not passed
    assert v["ocr-det-640 / edgeops-x86-default"].met is None


def test_yolo_goal_needs_cosine_and_f1() -> None:
    res = _result({"yolov8-doc": _entry("detection", {
        "edgeops-vnni-default": _row("detection_f1", 0.99, 2.0, class_score_cosine=0.96),
        "edgeops-x86-default": _row("detection_f1", 0.99, 2.0, class_score_cosine=0.98)})})
    v = _verdicts(res, "YOLO")
    assert v["yolov8-doc / edgeops-vnni-default"].met is False
    assert v["yolov8-doc / edgeops-x86-default"].met is True
    assert "class_score_cosine 0.9600" in v["yolov8-doc / edgeops-vnni-default"].figures


def test_a_refused_build_misses_the_goals_with_its_reason() -> None:
    refused = {"error": "target x86-cpu: mask_iou dropped 30% vs FP32; most sensitive: x",
               "refused": True, "build_s": 40.0}
    res = _result({"ocr-det-640": _entry("text-detection", {
        "edgeops-vnni-default": refused})})
    slower = _verdicts(res, "never slower")["ocr-det-640 / edgeops-vnni-default"]
    assert slower.met is False and slower.figures.startswith("refused: ")
    assert "most sensitive" not in slower.figures
    limited = copy.deepcopy(res)      # the refusal's other wording names its layers too
    limited["models"]["ocr-det-640"]["variants"]["edgeops-vnni-default"]["error"] = \
        "target x86-cpu: mask_iou dropped 30% vs FP32; limited by conv_1 (2%)"
    assert "limited by" not in _verdicts(limited, "never slower")[
        "ocr-det-640 / edgeops-vnni-default"].figures
    assert "limited by" not in markdown(limited).split("### Goals")[0]
    dbnet = _verdicts(res, "DBNet text detector: mask IoU >= 0.90")
    assert dbnet["ocr-det-640 / edgeops-vnni-default"].met is False
    # a model the result lacks is "not measured", never met
    assert all(c.met is None for c in _verdicts(res, "CTC").values())


def test_every_model_goals_compare_with_fp32_and_stock() -> None:
    res = _result({"magika": _entry("classification", {
        "ort-stock": _row("top1_agreement", 1.0, 1.6),
        "edgeops-vnni-default": _row("top1_agreement", 1.0, 1.5),
        "edgeops-x86-default": _row("top1_agreement", 0.9, 0.95)})})
    slower = _verdicts(res, "never slower")
    assert slower["magika / edgeops-vnni-default"].met is True
    assert slower["magika / edgeops-x86-default"].met is False
    noisy = copy.deepcopy(res)
    noisy["models"]["magika"]["variants"]["edgeops-x86-default"]["speedup_quartiles"] = [
        0.9, 1.05]
    assert _verdicts(noisy, "never slower")["magika / edgeops-x86-default"].figures == \
        "0.95x FP32 (round ratios 0.90-1.05)"
    stock = _verdicts(res, "not below ORT stock")
    assert stock["magika / edgeops-vnni-default"].met is False
    assert "below on speed" in stock["magika / edgeops-vnni-default"].figures
    assert "below on speed and metric" in stock["magika / edgeops-x86-default"].figures
    # stock failed: nothing to compare with, not a pass
    failed = copy.deepcopy(res)
    failed["models"]["magika"]["variants"]["ort-stock"] = {"error": "KeyError: 'x'"}
    assert _verdicts(failed, "not below ORT stock")["magika / edgeops-vnni-default"].met is None


def test_full_integer_goals_have_no_speed_bar() -> None:
    res = _result({"ocr-cls": _entry("classification", {
        "edgeops-edgetpu-default": _row("top1_agreement", 0.98, None),
        "edgeops-ethos-u-default": _row("top1_agreement", 0.5, None)})})
    v = _verdicts(res, "full-integer Edge TPU / Ethos-U, hard-swish")
    assert v["ocr-cls / edgeops-edgetpu-default"].met is True
    assert v["ocr-cls / edgeops-ethos-u-default"].met is False


def test_merge_keeps_models_and_rows_the_new_run_did_not_measure() -> None:
    old = _result({"ocr-cls": _entry("classification", {
        "ort-stock": _row("top1_agreement", 0.8, 0.4),
        "nncf-mixed": _row("top1_agreement", 0.9, 0.7)}),
        "magika": _entry("classification", {})})
    old["samples"] = 6
    new = _result({"ocr-cls": _entry("classification", {
        "ort-stock": _row("top1_agreement", 0.85, 0.5)})})
    m = merged(new, old)
    rows = m["models"]["ocr-cls"]["variants"]
    assert rows["ort-stock"]["task_value"] == 0.85 and "earlier_run" not in rows["ort-stock"]
    assert rows["nncf-mixed"]["task_value"] == 0.9
    assert rows["nncf-mixed"]["earlier_run"]["samples"] == 6
    assert m["models"]["magika"]["earlier_run"]["samples"] == 6
    assert "earlier_run" not in new["models"]["ocr-cls"]        # inputs left alone
    md = markdown(m)
    assert "[earlier run: VNNI, 6 samples" in md


def test_results_of_the_three_row_format_still_read() -> None:
    legacy = {"task": {"task": "classification", "inferred": True, "why": ""},
              "fp32": _row("top1_agreement", 1.0, 1.0),
              "stock": _row("top1_agreement", 0.8, 0.4),
              "edgeops": {"error": "target x86-cpu: top1 dropped 3%", "build_s": 2.0}}
    assert set(variants_of(legacy)) == {"fp32", "ort-stock", "edgeops-x86-default"}
    # an old run built with --effort fast: its edgeops row is that effort's
    m = merged(_result({}), {**_result({"ocr-cls": legacy}), "effort": "fast"})
    assert set(variants_of(m["models"]["ocr-cls"])) == {"fp32", "ort-stock", "edgeops-x86-fast"}
    assert "refused: target x86-cpu: top1 dropped 3%" in markdown(m)


def test_table_marks_best_nncf_and_the_goals_under_it() -> None:
    res = _result({"ocr-cls": _entry("classification", {
        "nncf-performance": _row("top1_agreement", 0.9, 0.8),
        "nncf-mixed": _row("top1_agreement", 0.95, 0.7),
        "edgeops-vnni-default": _row("top1_agreement", 1.0, 1.2)})})
    res["nncf_missing"] = None
    md = markdown(res)
    mixed = next(ln for ln in md.splitlines() if "`nncf-mixed`" in ln)
    assert "best NNCF setting here" in mixed
    assert "best NNCF" not in next(ln for ln in md.splitlines() if "`nncf-performance`" in ln)
    assert "- met: never slower than FP32: ocr-cls / edgeops-vnni-default: 1.20x FP32" in md
    assert "- not measured: CTC recogniser" in md
    assert "; 4 real samples per model" in md and "{" not in md.split("| model |")[0]


def test_ctc_flips_split_padding_from_text_with_fp32s_margin() -> None:
    from benchmarks._zoo_ctc import ctc_flips

    # 1 sample, 4 steps of 2 input columns each; columns 0-3 hold text, 4-7 are zero padding
    img = np.zeros((1, 3, 2, 8))
    img[0, :, :, :4] = 0.5
    ref = np.array([[[0.1, 0.9], [0.8, 0.2], [0.55, 0.45], [0.9, 0.1]]])
    got = ref.copy()
    got[0, 0] = [0.6, 0.4]            # text step, FP32 sure (margin 0.8)
    got[0, 2] = [0.4, 0.6]            # padding step, FP32 unsure (margin 0.1)
    f = ctc_flips(ref, got, img)
    assert (f["flips"], f["on_text"], f["on_padding"], f["padding_steps"]) == (2, 1, 1, 2)
    assert f["fp32_margin_max"] == pytest.approx(0.8)
    assert f["fp32_margin_median"] == pytest.approx(0.45)
    assert [(e["step"], e["padding"]) for e in f["each"]] == [(0, False), (2, True)]
    assert ctc_flips(ref, ref, img)["flips"] == 0
    with pytest.raises(ValueError, match="multiple of T"):
        ctc_flips(ref, got, np.zeros((1, 3, 2, 7)))


def test_holdout_run_says_so_and_keeps_the_calibration_figures() -> None:
    row = _row("one_minus_cer", 0.99, 1.5, argmax_agreement=0.97)
    row["task_calibration"] = {"value": 1.0, "details": {"argmax_agreement": 0.99}}
    row["argmax_flips"] = {"steps": 40, "padding_steps": 10, "flips": 2, "on_padding": 1,
                           "on_text": 1, "fp32_margin_median": 0.5, "fp32_margin_max": 0.9}
    res = _result({"ocr-rec": _entry("ctc", {"edgeops-vnni-default": row})})
    res["holdout"] = 32
    md = markdown(res)
    assert "4 real samples per model to calibrate" in md and "32 further held-out" in md
    line = next(ln for ln in md.splitlines() if "`edgeops-vnni-default`" in ln)
    assert "one_minus_cer 0.9900, argmax agreement 0.9700" in line
    assert "on the calibration samples one_minus_cer 1.0000, argmax agreement 0.9900" in line
    assert "2 of 40 steps flipped: 1 on padding (10 padding steps), 1 on text" in line
    assert "(calibration = validation)" not in md


def test_holdout_scores_on_samples_the_builds_never_saw(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """``one`` calibrates on the first ``samples`` and scores the rest: the metric (here one
    that scores the first value of the samples it is given) sees the held-out samples, the
    calibration figure the calibration ones."""
    from benchmarks import converter_zoo as cz
    from converters.tasks.score import TaskScore

    seen: dict[str, int] = {}

    def first_value(spec: Any, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]
                    ) -> TaskScore:
        return TaskScore("first", float(got["y"].reshape(-1)[0]))

    monkeypatch.setattr("converters.tasks.task_score", first_value)

    def inputs(n: int) -> dict[str, np.ndarray]:
        seen["n"] = n
        return {"x": np.arange(n * 6, dtype=np.float32).reshape(n, 1, 6)}

    monkeypatch.setattr("tests.zoo_inputs.INPUTS", {"tiny": inputs})
    monkeypatch.setitem(cz.MODELS, "tiny", None)
    monkeypatch.setattr(cz, "_source", lambda name: _identity_model(tmp_path))
    e = cz.one("tiny", 3, 1, 1, 1, True, [], None, "", holdout=5, round_budget_s=0.0)
    assert seen["n"] == 8 and e["holdout"] == 5 and e["samples"] == 3
    assert e["variants"]["fp32"]["task_value"] == 18.0          # sample 3 starts at 3 * 6
    assert e["variants"]["fp32"]["task_calibration"]["value"] == 0.0


def test_exact_u8s8_validation_opens_sessions_with_exact_kernels(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import converters.feeds
    import converters.validate
    from benchmarks._zoo_builds import EXACT_U8S8, _exact_validation, exact_session

    # restored after the test: the patch is meant for a build's own process
    monkeypatch.setattr(converters.validate, "open_session", converters.validate.open_session)
    monkeypatch.setattr(converters.feeds, "open_session", converters.feeds.open_session)
    model = _identity_model(tmp_path)
    assert exact_session(model).get_session_options().get_session_config_entry(
        EXACT_U8S8) == "1"
    _exact_validation()
    sess = converters.validate.open_session(model, ("CPUExecutionProvider",), 1)
    assert sess.get_session_options().get_session_config_entry(EXACT_U8S8) == "1"
    assert converters.feeds.open_session is exact_session


def _identity_model(d: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(d / "tiny.onnx"))
    return d / "tiny.onnx"


@pytest.mark.subprocess    # the probe runs the venv's python
def test_nncf_absent_says_how_to_install(tmp_path: Path) -> None:
    python, why = _nncf.find(tmp_path / "no-venv")
    assert python is None
    assert why == f"not installed: {_nncf.SETUP}"
    broken = tmp_path / "broken"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin" / "python").symlink_to("/bin/false")
    python, why = _nncf.find(broken)
    assert python is None and why.startswith("not installed (") and _nncf.SETUP in why


def _die() -> dict[str, Any]:
    import os

    os._exit(3)


def _killed() -> dict[str, Any]:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)      # what the OOM killer does
    return {}


def _raise() -> dict[str, Any]:
    raise ValueError("bad model\nsecond line")


@pytest.mark.slow          # three spawned interpreters
@pytest.mark.subprocess
def test_a_builder_that_dies_or_raises_is_a_row_not_a_crash() -> None:
    from benchmarks._zoo_builds import in_child

    assert in_child(_die) == {"error": "the build process died: exited 3"}
    assert in_child(_killed) == {
        "error": "the build process died: killed by SIGKILL (out of memory? see dmesg)"}
    assert in_child(_raise) == {"error": "ValueError: bad model"}


@pytest.mark.slow          # the converter's imports and first checks
def test_our_build_refusing_is_recorded_as_a_refusal(tmp_path: Path) -> None:
    from benchmarks._zoo_builds import ours_child

    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.zeros((2, 3), np.float32))
    row = ours_child(str(bad), str(cal), str(tmp_path / "work"), "x86-cpu", "default", {}, {},
                     0.01)
    assert row["refused"] is True and "model.onnx" in row["error"]
    assert row["peak_rss_mib"] > 0 and "path" not in row


def test_nncf_worker_reports_its_failure_as_one_json_line(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    import json
    import sys

    from benchmarks import _nncf_worker

    # the project's venv has no NNCF: the worker's import fails, and says so on its last line
    monkeypatch.setitem(sys.modules, "nncf", None)
    monkeypatch.setattr(sys, "argv", ["w", json.dumps({
        "model": str(tmp_path / "m.onnx"), "calibration": str(tmp_path / "c.npz"),
        "out": str(tmp_path / "q.onnx"), "preset": "mixed"})])
    assert _nncf_worker.main() == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["error"].startswith("ModuleNotFoundError") and "nncf" in last["error"]


@pytest.mark.subprocess    # the worker is a child process (here a shell script)
def test_nncf_launcher_turns_a_silent_or_slow_worker_into_an_error(tmp_path: Path) -> None:
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho 'Traceback: boom' >&2\nexit 2\n")
    silent.chmod(0o755)
    res = _nncf.quantise(silent, tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "q.onnx",
                         {"preset": "mixed"})
    assert res == {"error": "NNCF worker exited 2: Traceback: boom"}
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    res = _nncf.quantise(slow, tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "q.onnx",
                         {"preset": "mixed"}, timeout_s=0.3)
    assert res == {"error": "NNCF did not finish in 0 s"}


def test_unknown_model_or_variant_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.converter_zoo import main

    with pytest.raises(SystemExit) as exc:
        main(["--models", "ocr-cls,nope", "--variants", "fp32,ort-bogus"])
    msg = str(exc.value.code)
    assert msg.startswith("unknown model(s) or variant(s): nope, ort-bogus; models: ocr-cls")
    assert "\n" not in msg


def test_expected_duration_reads_the_last_runs_wall_times() -> None:
    from benchmarks.converter_zoo import _GUESS_S, expected_s

    last = {"models": {"a": {"wall_s": 100.0, "variants": dict.fromkeys("pq")},
                       "b": {"wall_s": 50.0, "earlier_run": {}}}}
    assert expected_s(["a"], last, 2) == 100.0
    assert expected_s(["a"], last, 4) == 200.0          # twice the rows it built then
    assert expected_s(["a", "b", "c"], last, 2) == 100.0 + 2 * _GUESS_S   # merged / absent
    assert expected_s(["a"], None, 2) == _GUESS_S


def test_speed_is_the_median_of_round_ratios_with_their_spread() -> None:
    from benchmarks.converter_zoo import _interleaved, _latency

    now = [0.0]
    # FP32 costs 8 ms a run; the candidate 4 ms, but one round of three is disturbed (20 ms):
    # the median round ratio stays 2.0, the quartiles show the disturbed round
    costs = {"fp32": iter([8.0] * 7), "fast": iter([4.0] * 3 + [20.0] * 2 + [4.0] * 2)}

    class Session:
        def __init__(self, key: str) -> None:
            self.key = key

        def run(self, _names: object, _feed: object) -> None:
            now[0] += next(costs[self.key]) / 1000

    lat = _interleaved({"fp32": Session("fp32"), "fast": Session("fast")}, {}, rounds=3,
                       runs=2, clock=lambda: now[0])
    assert lat["fp32"]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert lat["fast"]["speedup_vs_fp32"] == pytest.approx(2.0)
    q1, q3 = lat["fast"]["speedup_quartiles"]
    assert q1 == pytest.approx(1.2) and q3 == pytest.approx(2.0)
    md = markdown(_result({"m": _entry("classification", {
        "ort-stock": {**_row("top1_agreement", 1.0, 1.5), "speedup_quartiles": [1.4, 1.6]}})}))
    assert "| 1.50× (1.40–1.60) |" in md
    # the p50 per session alone (a float each), as benchmarks/x86_bit_split.py reads it
    costs.update(fp32=iter([8.0] * 7), fast=iter([4.0] * 7))
    lat2 = _latency({"fp32": Session("fp32"), "fast": Session("fast")}, {}, 3, 2)
    assert set(lat2) == {"fp32", "fast"} and all(isinstance(v, float) for v in lat2.values())


def test_rounds_of_a_fast_model_get_enough_runs_to_fill_the_budget() -> None:
    from benchmarks.converter_zoo import MAX_RUNS, _interleaved

    now = [0.0]
    counts = {"fp32": 0, "int8": 0}

    class Session:
        def __init__(self, key: str, ms: float) -> None:
            self.key, self.ms = key, ms

        def run(self, _names: object, _feed: object) -> None:
            counts[self.key] += 1
            now[0] += self.ms / 1000

    # a 0.3 ms model: 0.25 s of FP32 per round is 833 runs, not the 5 asked as a minimum
    sessions = {"fp32": Session("fp32", 0.3), "int8": Session("int8", 0.2)}
    lat = _interleaved(sessions, {}, rounds=3, runs=5, clock=lambda: now[0],
                       round_budget_s=0.25)
    assert lat["fp32"]["runs_per_round"] == lat["int8"]["runs_per_round"] == 833
    assert counts["int8"] == 1 + 3 * 833
    assert lat["int8"]["speedup_vs_fp32"] == pytest.approx(1.5)
    # a 200 ms model keeps the minimum; a 1 us one is capped
    slow = _interleaved({"fp32": Session("fp32", 200.0)}, {}, rounds=1, runs=5,
                        clock=lambda: now[0], round_budget_s=0.25)
    assert slow["fp32"]["runs_per_round"] == 5
    tiny = _interleaved({"fp32": Session("fp32", 0.001)}, {}, rounds=1, runs=5,
                        clock=lambda: now[0], round_budget_s=0.25)
    assert tiny["fp32"]["runs_per_round"] == MAX_RUNS


def test_the_runs_per_round_are_in_the_header_and_each_model() -> None:
    res = _result({"magika": {**_entry("classification", {}), "runs_per_round": 833}})
    res["round_budget_s"] = 0.25
    md = markdown(res)
    head = md.split("| model |")[0]
    assert "fill 0.25 s of FP32's time, at least 3 (runs per round: magika 833)" in head
    assert "magika (classification, auto) [833 runs/round]" in md
    # results of fixed runs per round still read
    assert "of 3 runs of every ONNX variant" in markdown(_result({"m": _entry(
        "classification", {})}))


def test_an_artifact_that_is_the_source_byte_for_byte_is_fp32s_own_model() -> None:
    # a pre-quantised model passed through: the timing noise put it at 0.91x
    same = {**_row("top1_agreement", 1.0, 0.91), "speedup_quartiles": [0.73, 1.14],
            "same_as_source": True, "sha256": "a" * 64}
    res = _result({"quantised-encoder": _entry("classification", {
        "ort-stock": _row("top1_agreement", 0.9, 0.95),
        "edgeops-vnni-default": same,
        "edgeops-x86-default": {**same, "same_as_source": False}})})
    slower = _verdicts(res, "never slower")
    assert slower["quantised-encoder / edgeops-vnni-default"].met is True
    assert "same model as FP32" in slower["quantised-encoder / edgeops-vnni-default"].figures
    assert slower["quantised-encoder / edgeops-x86-default"].met is False    # same speed, no flag
    # against stock it counts as 1.0x: above stock's 0.95x
    stock = _verdicts(res, "not below ORT stock")
    assert stock["quantised-encoder / edgeops-vnni-default"].met is True
    md = markdown(res)
    assert "the source byte for byte (sha256)" in md
    assert "the same bytes as `edgeops-vnni-default`" in md           # the x86 row's note
    assert "byte for byte" in md.split("### Goals")[1].splitlines()[2]  # the rule is stated
