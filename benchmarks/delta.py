"""Delta updates: our tensor-level delta vs the full artifact, zstd, bsdiff4 and zstd --patch-from.

    python -m benchmarks.delta [--reps 3]

Scenarios (old artifact -> new artifact), side by side in one run:

* ``head retrain``: the ResNet of benchmarks/models/make_models.py (PyTorch, trained here for a
  few steps), then its last layer trained on (frozen backbone, BN in eval mode);
* ``fine-tune``: the same base, every weight trained 10 steps with SGD lr 1e-4 (BatchNorm
  statistics move too);
* ``re-quantise``: the zoo's trained benchmarks/models/resnet.onnx, INT8 QDQ per-channel
  (ONNX Runtime ``quantize_static``), calibrated on one half of its calibration set, then on
  the other half (same FP32 weights);
* ``re-quantise INT8 TFLite``: the zoo's mobilenet.onnx through our TFLite backend (full
  INT8), calibrated on each half of its calibration set;
* ``new architecture``: the ResNet replaced by the MobileNet of make_models.py.

Columns: bytes of the new artifact; zstd -19 of it; ``bsdiff4.diff(old, new)``; the zstd CLI's
``-19 --long=27 --patch-from=old``; ours (``edgeops.delta.diff_artifacts``, the level publish
uses) and what would ship (ours, or the full artifact when ours is not smaller). Device side:
time to apply the delta (median of ``--reps`` runs, in a fresh process each) and its peak RSS
increase (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus RSS before;
the interpreter and imports are not counted), for the first apply in the process (it pays
the allocator's and zstd's first use) and for a second apply of the same delta in it (what a
running agent's next update costs), beside the largest tensor of the new artifact. Of the
first apply's increase, the file-backed part (``RssFile`` after minus before: library code
paged in on first use, e.g. zstd's decoder, shared and evictable) is shown on its own.

Rollout to 200 devices on 1 Mbit/s links is a **simulated model** (no bytes move): each device
downloads at 125,000 B/s, the manager's chunk fan-out sends one stream per payload that every
device sharing the from-version receives (egress about one copy), so the rollout takes
``payload / 125,000 s`` plus the measured reconstruction time; with HTTP unicast from a
100 Mbit/s manager it is the larger of that and ``200 x payload / 12.5 MB/s``. Installation
and health checks are the same for both and left out.

Results: benchmarks/results/delta.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEVICES = 200
LINK_BPS = 1_000_000 / 8
UPLINK_BPS = 100_000_000 / 8

_APPLY = r"""
import json, sys, time
from pathlib import Path
import numpy, zstandard
from edgeops.delta import apply_delta_file
def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
def run():
    s0 = status()
    before = s0["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    t = time.perf_counter()
    apply_delta_file(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    dt, s1 = time.perf_counter() - t, status()
    return dt, s1["VmHWM"] - before, s1["RssFile"] - s0["RssFile"]
dt, cold, cold_file = run()   # the first apply in this process: allocator and zstd first use
_, warm, _ = run()            # the same again: what a running agent's next delta costs
print(json.dumps({"s": dt, "peak_extra": cold, "peak_extra_warm": warm,
                  "file_extra": cold_file}))
"""


# -- the models ------------------------------------------------------------------------------
def _export(model: Any, path: Path) -> bytes:
    import torch

    x = torch.zeros(1, 3, 32, 32)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path.read_bytes()


def _train(model: Any, params: Any, steps: int, lr: float, sgd: bool, seed: int,
           train_mode: bool = True) -> None:
    import torch

    from benchmarks.models import datagen

    x, y = datagen.images(256, size=32, seed=seed)
    opt = (torch.optim.SGD(params, lr=lr) if sgd else torch.optim.Adam(params, lr=lr))
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    model.train(train_mode)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        opt.zero_grad()
        loss_fn(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])).backward()
        opt.step()
    model.eval()


def _quantise(src: Path, cal: np.ndarray, out: Path) -> bytes:
    from onnxruntime.quantization import QuantFormat, quantize_static

    class Reader:
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(cal):
                return None
            self.i += 1
            return {"input": cal[self.i - 1:self.i].astype(np.float32)}

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    return out.read_bytes()


def scenarios(work: Path) -> dict[str, tuple[bytes, bytes]]:
    import copy

    import torch

    from benchmarks.models import make_models

    torch.manual_seed(0)
    torch.set_num_threads(2)
    base = make_models.resnet()
    _train(base, base.parameters(), 30, 3e-3, sgd=False, seed=1)
    old = _export(base, work / "base.onnx")

    head = copy.deepcopy(base)
    fc = head[-1]
    _train(head, fc.parameters(), 50, 1e-3, sgd=False, seed=2, train_mode=False)
    tuned = copy.deepcopy(base)
    _train(tuned, tuned.parameters(), 10, 1e-4, sgd=True, seed=3)
    other = make_models.mobilenet()

    zoo = HERE / "models" / "resnet.onnx"
    cal = np.load(HERE / "models" / "resnet.cal.npz")["input"]
    half = len(cal) // 2
    return {
        "head retrain (ResNet, PyTorch)": (old, _export(head, work / "head.onnx")),
        "fine-tune lr 1e-4 (ResNet, PyTorch)": (old, _export(tuned, work / "tuned.onnx")),
        "re-quantise INT8 (zoo resnet.onnx)": (_quantise(zoo, cal[:half], work / "q1.onnx"),
                                               _quantise(zoo, cal[half:], work / "q2.onnx")),
        "re-quantise INT8 TFLite (zoo mobilenet.onnx)": _tflite_pair(),
        "new architecture (ResNet -> MobileNet)": (old, _export(other, work / "other.onnx")),
    }


def _tflite_pair() -> tuple[bytes, bytes]:
    """The zoo's mobilenet.onnx through our TFLite backend, full INT8, calibrated on one half
    of its calibration set, then the other (buffers matched through SubGraph.tensors)."""
    import onnx

    from converters.tflite import convert

    m = onnx.load(str(HERE / "models" / "mobilenet.onnx"))
    cal = np.load(HERE / "models" / "mobilenet.cal.npz")["input"].astype(np.float32)
    half = len(cal) // 2
    a = convert(m, precision="int8", calibration=[{"input": cal[i:i + 1]} for i in range(half)])
    b = convert(m, precision="int8",
                calibration=[{"input": cal[i:i + 1]} for i in range(half, len(cal))])
    return a.model, b.model


# -- the measurements ------------------------------------------------------------------------
def _patch_from(old: Path, new: Path, out: Path) -> int:
    subprocess.run(["zstd", "-q", "-f", "-19", "--long=27", f"--patch-from={old}", str(new),
                    "-o", str(out)], check=True)
    return out.stat().st_size


def _apply_runs(old: Path, delta: Path, out: Path, reps: int) -> list[dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    runs = []
    for _ in range(reps):
        r = subprocess.run([sys.executable, "-c", _APPLY, str(old), str(delta), str(out)],
                           capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(r.stdout))
    return runs


def _entropy_bits(planes: np.ndarray) -> float:
    """Order-0 entropy (bits) of each row of ``planes`` (uint8), summed."""
    total = 0.0
    for row in planes:
        counts = np.bincount(row, minlength=256)
        p = counts[counts > 0] / len(row)
        total += float(-(p * np.log2(p)).sum()) * len(row)
    return total


def changed_entropy(old: bytes, new: bytes, delta: Any) -> dict[str, int]:
    """What the tensors that changed in place hold, as order-0 entropy of their XOR with the
    old values, byte plane by byte plane (what the format's diff + zstd can at best reach
    without a model of the training): all planes, and the two lowest (mantissa noise)."""
    all_bits, low_bits = 0.0, 0.0
    for p in delta.planned:
        op = p.op
        if p.why != "changed" or op.width != 4:
            continue
        start = next(r.offset for r in _regions(new) if r.name == p.name)
        x = np.bitwise_xor(np.frombuffer(new, np.uint8, op.length, start),
                           np.frombuffer(old, np.uint8, op.length, op.old_offset))
        planes = x.reshape(-1, 4).T
        all_bits += _entropy_bits(planes)
        low_bits += _entropy_bits(planes[:2])
    return {"xor_planes": round(all_bits / 8), "low_two_planes": round(low_bits / 8)}


def _regions(data: bytes) -> list[Any]:
    from edgeops.delta import tensor_regions

    return tensor_regions(data)


def measure(name: str, old: bytes, new: bytes, work: Path, reps: int) -> dict[str, Any]:
    import bsdiff4
    import zstandard

    from edgeops.delta import diff_artifacts, tensor_regions

    po, pn = work / "old.bin", work / "new.bin"
    po.write_bytes(old)
    pn.write_bytes(new)
    t = time.perf_counter()
    delta = diff_artifacts(old, new)
    make_s = time.perf_counter() - t
    pd = work / "d.edgedelta"
    delta.write(pd)
    out = work / "rebuilt.bin"
    runs = _apply_runs(po, pd, out, reps)
    assert out.read_bytes() == new, f"{name}: reconstruction is not byte-exact"
    t = time.perf_counter()
    bs = len(bsdiff4.diff(old, new))
    bs_s = time.perf_counter() - t
    largest = max((r.length for r in tensor_regions(new)), default=len(new))
    ours = delta.size
    ships = ours if delta.worthwhile else len(new)
    apply_s = statistics.median(r["s"] for r in runs)
    peak = statistics.median(r["peak_extra"] for r in runs)
    warm = statistics.median(r["peak_extra_warm"] for r in runs)
    file_pages = statistics.median(r["file_extra"] for r in runs)
    return {
        "scenario": name, "full": len(new),
        "zstd19": len(zstandard.ZstdCompressor(level=19).compress(new)),
        "bsdiff4": bs, "bsdiff4_s": round(bs_s, 2), "patch_from": _patch_from(po, pn, work / "p"),
        "ours": ours, "ships": ships, "delivery": "delta" if delta.worthwhile else "full",
        "ours_pct_of_full": round(100 * ours / len(new), 2),
        "bsdiff_over_ours": round(bs / ours, 2), "make_s": round(make_s, 3),
        "apply_s": round(apply_s, 4), "apply_runs_s": [round(r["s"], 4) for r in runs],
        "peak_rss_extra": int(peak), "peak_rss_extra_warm": int(warm),
        "peak_rss_extra_file": int(file_pages),
        "largest_tensor": largest, "peak_over_largest": round(peak / largest, 2),
        "tensors": delta.summary()["tensors"],
        "changed_entropy": changed_entropy(old, new, delta),
        "rollout_fanout_s": {"full": round(len(new) / LINK_BPS, 1),
                             "ships": round(ships / LINK_BPS + (apply_s if delta.worthwhile
                                                                 else 0.0), 1)},
        "rollout_http_s": {
            "full": round(max(len(new) / LINK_BPS, DEVICES * len(new) / UPLINK_BPS), 1),
            "ships": round(max(ships / LINK_BPS, DEVICES * ships / UPLINK_BPS)
                           + (apply_s if delta.worthwhile else 0.0), 1)},
    }


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f}"


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = ("### delta: bytes to ship a model update (KiB), device-side reconstruction, rollout "
            f"to {DEVICES} devices at 1 Mbit/s\n\n"
            f"{meta['python']}, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
            f"zstandard {meta['zstandard']} (zstd CLI {meta['zstd_cli']}), bsdiff4 "
            f"{meta['bsdiff4']}; {meta['cpus']} CPUs (shared), load {meta['load'][0]:.2f}; "
            f"reconstruction: median of {meta['reps']} fresh processes.\n\n"
            "| scenario | full | zstd -19 | bsdiff4 | zstd --patch-from | **ours** | ours % of "
            "full | bsdiff / ours | ships | apply ms | peak RSS + KiB (1st / 2nd apply) | largest "
            "tensor KiB | peak / largest (1st) | of which file-backed KiB (1st) | changed tensors: "
            "order-0 entropy of XOR byte planes KiB (all / 2 lowest) | rollout fan-out s "
            "(full → ships) | rollout HTTP s (full → "
            "ships) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|\n")
    body = "".join(
        f"| {r['scenario']} | {_kb(r['full'])} | {_kb(r['zstd19'])} | {_kb(r['bsdiff4'])} | "
        f"{_kb(r['patch_from'])} | **{_kb(r['ours'])}** | {r['ours_pct_of_full']} | "
        f"{r['bsdiff_over_ours']} | {r['delivery']} | {1000 * r['apply_s']:.1f} | "
        f"{_kb(r['peak_rss_extra'])} / {_kb(r['peak_rss_extra_warm'])} | "
        f"{_kb(r['largest_tensor'])} | {r['peak_over_largest']} | "
        f"{_kb(r.get('peak_rss_extra_file', 0))} | "
        f"{_kb(r.get('changed_entropy', {}).get('xor_planes', 0))} / "
        f"{_kb(r.get('changed_entropy', {}).get('low_two_planes', 0))} | "
        f"{r['rollout_fanout_s']['full']} → {r['rollout_fanout_s']['ships']} | "
        f"{r['rollout_http_s']['full']} → {r['rollout_http_s']['ships']} |\n" for r in rows)
    return head + body + (
        "\nGoals (issue 20): head-only retrain ≤ 5 % of the full artifact and ≥ 3× smaller "
        "than bsdiff; never larger than the full artifact (\"ships\" falls back to it); "
        "reconstruction peak RSS under 2× the largest tensor. Rollout columns are the "
        "simulated model in the module docstring (no bytes moved).\n\n"
        "Reading: where tensors keep their place and only some change (head retrain, "
        "re-quantisation), every binary diff finds the unchanged bytes and the update costs what "
        "changed: ours, bsdiff4 and zstd --patch-from are within ~20 % of each other, far "
        "below 5 % of the artifact, and the issue's \"3× smaller than bsdiff\" is not reached "
        "on the head retrain. It cannot be by any lossless delta: the head is trained from the "
        "old head's weights, but 50 Adam steps move every weight of it (median 30 % of its "
        "value), so the low bytes of each float32 are new noise. The entropy column shows it: "
        "the two lowest byte planes of the head's XOR with the old values hold about 7.9 "
        "bits per byte (incompressible), already more than a third of bsdiff4's size. Ours "
        "wins where every weight moves a little (fine-tune: about 61 % of the artifact vs "
        "93-95 % for the binary diffs): the element-wise difference with byte planes split, "
        "each plane coded with its own zstd tables (1 KiB window). "
        "Unrelated models fall back to about zstd of the full artifact; a delta that is not "
        "smaller than the artifact is never published. Applying holds one zstd context and a "
        "few 32 KiB blocks (each block frame decoded in one call): a second apply in the same "
        "process adds 0 KiB to the peak. The first apply's increase is almost all file-backed "
        "(library code paged in on first use: zstd's decoder, numpy's loops; shared and "
        "evictable, a running agent pays it once), which keeps the 2× goal out of reach where "
        "the largest tensor is 64 KiB (TFLite MobileNet) and within it elsewhere. "
        "Re-quantising (ONNX QDQ or TFLite INT8) changes only scales and zero points, which "
        "travel in the graph stream: about 1 % of the artifact.\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--table-only", action="store_true",
                    help="Rewrite results/delta.md from results/delta.json (no measuring).")
    args = ap.parse_args(argv)
    if args.table_only:
        d = json.loads((RESULTS / "delta.json").read_text())
        (RESULTS / "delta.md").write_text(table(d["rows"], d["meta"]))
        return
    try:
        import bsdiff4
        import torch
    except ImportError as exc:
        print(f"error: benchmarks.delta needs {exc.name} (hint: pip install -e '.[models,bench]')",
              file=sys.stderr)
        raise SystemExit(1) from None
    import onnxruntime
    import zstandard

    zstd_cli = subprocess.run(["zstd", "--version"], capture_output=True, text=True
                              ).stdout.strip().split(" v")[-1].split(",")[0]
    meta = {"python": f"Python {platform.python_version()}", "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "zstandard": zstandard.__version__,
            "zstd_cli": zstd_cli, "bsdiff4": bsdiff4.__version__, "cpus": os.cpu_count(),
            "load": os.getloadavg(), "reps": args.reps, "platform": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="bench-delta-") as tmp:
        work = Path(tmp)
        pairs = scenarios(work)
        rows = [measure(name, old, new, work, args.reps) for name, (old, new) in pairs.items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "delta.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2,
                                                   sort_keys=True, default=str) + "\n")
    md = table(rows, meta)
    (RESULTS / "delta.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
