"""The engine inside `edgeops build`: recorded in the details, deterministic, fails soft."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.api import BuildRequest
from converters.build import build
from converters.quant.equalise import CrossLayerEqualisation
from tests.converters import zoo


def _build(model: Path, work: Path, **options: object):  # type: ignore[no-untyped-def]
    req = BuildRequest(model=model, name="m", version="1.0.0", targets=("x86-cpu",),
                       precision="int8", max_accuracy_drop=0.5,
                       options={"perf_aware": False, **options})
    work.mkdir(parents=True, exist_ok=True)
    (art,) = build(req, lambda _m: None, work).artifacts
    return art


def test_default_effort_records_every_pass_and_is_byte_identical(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    a = _build(p, tmp_path / "a")
    b = _build(p, tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    rep = a.details["quantisation_passes"]
    assert rep["effort"] == "default"
    assert rep["cross_layer_equalisation"]["status"] == "applied"
    assert rep["bias_correction"]["status"] == "applied"
    assert rep["mse_ranges"]["status"] == "applied"
    # chosen on the task metric: four combinations quantised and validated once each
    assert isinstance(rep["mse_ranges"]["used"], bool)
    assert isinstance(rep["bias_correction"]["used"], bool)
    assert len(rep["mse_ranges"]["gate_drop_by_choice"]) == 4
    assert rep["smoothquant"]["status"] in ("applied", "skipped")


def test_fast_effort_runs_no_pass(tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    rep = _build(p, tmp_path / "a", effort="fast").details["quantisation_passes"]
    assert rep["passes"] == [] and set(rep) == {"effort", "passes"}


def test_a_pass_failing_inside_a_build_is_a_warning_not_a_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, model: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CrossLayerEqualisation, "run", broken)
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    art = _build(p, tmp_path / "a")
    cle = art.details["quantisation_passes"]["cross_layer_equalisation"]
    assert cle["status"] == "failed" and "boom" in cle["detail"]


def test_mse_failure_falls_back_to_minmax_ranges(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from converters.quant.mse_ranges import MseRanges

    def broken(*_a: object) -> None:
        raise MemoryError("histograms")

    monkeypatch.setattr(MseRanges, "run", broken)
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    art = _build(p, tmp_path / "a")
    mse = art.details["quantisation_passes"]["mse_ranges"]
    assert mse["status"] == "failed" and "MinMax ranges used" in mse["detail"]


@pytest.mark.parametrize(("options", "needle"), [
    ({"effort": "turbo"}, "unknown effort 'turbo'"),
    ({"quant_passes": "brecq"}, "unknown quantisation pass(es) brecq"),
])
def test_unknown_effort_or_pass_is_a_usage_error(tmp_path: Path, options: dict[str, str],
                                                 needle: str) -> None:
    from converters.build import resolve_targets
    from edgeops.errors import UsageError

    req = BuildRequest(model=tmp_path / "m.onnx", name="m", version="1.0.0",
                       targets=("x86-cpu",), options=options)
    with pytest.raises(UsageError) as err:
        resolve_targets(req)
    assert needle in err.value.message


def test_cli_effort_flag_reaches_the_build(cli, keys_home: Path,  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
    p = zoo.save(zoo.convnet(13), tmp_path / "m.onnx")
    bad = cli("build", p, "--name", "m", "--version", "1.0.0", "--target", "x86-cpu",
              "--effort", "turbo", "--out", tmp_path / "out")
    assert bad.code == 2 and "turbo" in bad.err and "Traceback" not in bad.err
