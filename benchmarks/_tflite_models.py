"""Export the audio model of the TFLite benchmark (the other two come from benchmarks/models).

benchmarks/models/make_models.py provides the MobileNet-style classifier and the segmenter; its
time-series model is a GRU, which the TFLite backend refuses (see docs/TFLITE.md), so this
adds a convolutional audio model: a 1D-CNN keyword-spotting-style classifier (Conv1d, BN, ReLU,
MaxPool1d, mean over time, Linear) over 8 classes of noisy chirps, 1x4000 samples, trained for
150 steps on seeded generated data so top-1 agreement means something.

Run once (``python -m benchmarks._tflite_models``; needs ``torch``, a dev-only dependency);
``audio.onnx`` (~100 KiB) and its calibration/validation data land in benchmarks/models/tflite/
and are committed, so the benchmark itself needs no torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parent / "models" / "tflite"
N_CAL, N_VAL = 64, 200


def chirps(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 8, n)
    t = np.arange(4000) / 4000.0
    xs = []
    for c in y:
        f0 = 20 + 15 * c + rng.normal(0, 2)
        sig = np.sin(2 * math.pi * (f0 * t + (c % 3 - 1) * 20 * t * t) + rng.uniform(0, 6.3))
        xs.append(sig[None] * rng.uniform(0.5, 1.5) + rng.normal(0, 0.4, (1, 4000)))
    return np.asarray(xs, np.float32), y


class AudioCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def blk(i: int, o: int, k: int, s: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(i, o, k, s, k // 2, bias=False), nn.BatchNorm1d(o),
                                 nn.ReLU(), nn.MaxPool1d(2))

        self.f = nn.Sequential(blk(1, 16, 9, 4), blk(16, 32, 5, 1), blk(32, 48, 5, 1),
                               blk(48, 64, 3, 1))
        self.fc = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.f(x).mean(dim=2))


def _train(model: nn.Module, data, loss_fn, steps: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for step in range(steps):
        x, y = data(32, rng)
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  step {step} loss {loss.item():.3f}", flush=True)
    model.eval()


def _export(model: nn.Module, name: str, shape: tuple[int, ...], data, seed: int) -> None:  # type: ignore[no-untyped-def]
    path = OUT / f"{name}.onnx"
    torch.onnx.export(model, (torch.zeros(shape),), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    rng = np.random.default_rng(seed + 1000)
    cal, _ = data(N_CAL, rng)
    val, labels = data(N_VAL, rng)
    np.savez_compressed(OUT / f"{name}.calibration.npz", input=cal.astype(np.float16))
    arrays = {"input": val.astype(np.float16)}  # float16 keeps the files small
    if labels.ndim == 1:
        arrays["labels"] = labels.astype(np.int64)
    np.savez_compressed(OUT / f"{name}.validation.npz", **arrays)
    print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB", flush=True)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    ce = nn.CrossEntropyLoss()
    a = AudioCNN()
    _train(a, chirps, ce, 150, 3)
    _export(a, "audio", (1, 1, 4000), chirps, 3)


if __name__ == "__main__":
    main()
