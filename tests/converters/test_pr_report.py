"""`edgeops report --format github`: a pull-request comment from real bundles, with deltas."""

from __future__ import annotations

import json
from pathlib import Path

from tests.converters import zoo


def _build(cli, model: Path, version: str, out: Path, *targets: str) -> Path:  # type: ignore[no-untyped-def]
    args = [a for t in targets for a in ("--target", t)]
    res = cli("build", model, "--name", "cls", "--version", version, *args, "--precision",
              "fp32", "--out", out, "--json")
    assert res.code == 0, res.err
    return Path(json.loads(res.out)["bundle"])


def test_github_comment_has_a_table_per_target_and_deltas(cli, keys_home: Path,
                                                          tmp_path: Path) -> None:
    old = _build(cli, zoo.save(zoo.convnet(13), tmp_path / "a.onnx"), "1.0.0", tmp_path / "main",
                 "x86-cpu")
    new = _build(cli, zoo.save(zoo.convnet(13, width=12), tmp_path / "b.onnx"), "1.1.0",
                 tmp_path / "pr", "x86-cpu", "cuda-gpu")
    res = cli("report", new, "--format", "github", "--against", old)
    assert res.code == 0, res.err
    md = res.out
    assert md.startswith("<!-- edgeops-report:cls -->\n## edgeops: cls 1.1.0 vs cls 1.0.0")
    assert "### `x86-cpu` · fp32\n" in md and "### `cuda-gpu` · fp32 (new target)" in md
    assert "| | 1.1.0 | 1.0.0 | Δ |" in md
    x86 = md.split("### `x86-cpu`")[1]
    size_row = next(ln for ln in x86.splitlines() if ln.startswith("| size |"))
    assert "⚠️" in size_row and "+" in size_row        # a wider model is bigger: flagged
    assert any(ln.startswith("| latency p50 |") and "ms" in ln for ln in md.splitlines())
    assert "| cosine min vs FP32 |" in md

    out = tmp_path / "comment.md"
    res = cli("report", new, "--against", old, "--out", out)
    assert res.code == 0 and out.read_text() == md
    data = json.loads(cli("report", new, "--format", "json", "--against", old).out)
    assert data["against"] == "cls@1.0.0" and data["targets"]["cuda-gpu"]["against"] is None
    assert data["targets"]["x86-cpu"]["values"]["latency_p50_ms"] > 0


def test_report_without_build_report_or_bundle(cli, keys_home: Path, tmp_path: Path) -> None:
    b = _build(cli, zoo.save(zoo.convnet(13), tmp_path / "a.onnx"), "1.0.0", tmp_path / "o",
               "x86-cpu")
    (b.parent / "cls-1.0.0.report.json").unlink()
    res = cli("report", b)
    assert res.code == 0 and "report.json was not found" in res.out
    assert "latency" not in res.out.split("### ")[1]
    res = cli("report", tmp_path / "nope.edgebundle")
    assert res.code == 2 and res.err.startswith("error: bundle") and res.err.count("\n") == 1
