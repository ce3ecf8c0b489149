"""Train and export the benchmark models (needs torch, a dev-only dependency).

    python -m benchmarks.models.make_models            # writes benchmarks/models/*.onnx + *.npz
    python -m benchmarks.models.make_models --data-only # only the .npz (numpy, no torch)

Four architectures exported from PyTorch with weights trained on generated data
(benchmarks/models/datagen.py), so activations and weights have realistic distributions. The
classifiers train to convergence (4000 generated images, one-cycle Adam; validation top-1
mobilenet 0.985, resnet 1.000, ~80 s each on one thread): barely trained models have near-tied
logits, and INT8 agreement on those measures noise, not the converter.

* ``mobilenet``: MobileNet-style classifier (depthwise-separable blocks, ReLU6, 32x32 input);
* ``resnet``: compute-heavy ResNet-style classifier (plain 3x3 convs, residual adds);
* ``segnet``: small encoder-decoder segmentation net with ConvTranspose and Resize upsampling;
* ``gru``: GRU time-series forecaster (two layers, 48 steps in, 8 steps out).

Each gets ``<name>.onnx`` (opset 17, dynamic batch) plus ``<name>.cal.npz`` (calibration) and
``<name>.val.npz`` (validation; classifiers carry ``labels``), stored as float16 to stay small
(edgeops casts floating data to the model's dtype). Everything is seeded; the committed
classifiers were made with ``MAKE_MODELS_THREADS=1 python -m benchmarks.models.make_models
--only mobilenet`` (and ``--only resnet``): the thread count changes float rounding.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.models import datagen

OUT = Path(__file__).resolve().parent
CAL_SAMPLES, VAL_SAMPLES = 128, 200
SIZE = 32          # image side: small enough to train on a shared 2-core machine in minutes


def _torch():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("MAKE_MODELS_THREADS", "2")))
    return torch


def mobilenet():  # type: ignore[no-untyped-def]
    nn = _torch().nn

    def dw(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        dw(16, 32, 1), dw(32, 64, 2), dw(64, 64, 1), dw(64, 128, 2), dw(128, 128, 1),
        dw(128, 256, 2), dw(256, 256, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(256, len(datagen.IMAGE_CLASSES)))


def resnet():  # type: ignore[no-untyped-def]
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.skip(x))

    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2),
                         Block(128, 192, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(192, len(datagen.IMAGE_CLASSES)))


def segnet():  # type: ignore[no-untyped-def]
    torch = _torch()
    nn = torch.nn

    def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    class SegNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = cbr(3, 32), cbr(32, 64, 2), cbr(64, 128, 2)
            self.up1 = nn.ConvTranspose2d(128, 64, 2, 2)
            self.d1 = cbr(128, 64)
            self.d2 = cbr(64 + 32, 32)
            self.head = nn.Conv2d(32, 3, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            a = self.e1(x)
            b = self.e2(a)
            c = self.e3(b)
            u = self.d1(torch.cat([self.up1(c), b], 1))
            u = nn.functional.interpolate(u, scale_factor=2.0, mode="bilinear",
                                          align_corners=False)
            return self.head(self.d2(torch.cat([u, a], 1)))

    return SegNet()


def gru():  # type: ignore[no-untyped-def]
    torch = _torch()
    nn = torch.nn

    class Forecaster(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(4, 64, num_layers=2, batch_first=True)
            self.head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))

        def forward(self, x):  # type: ignore[no-untyped-def]
            y, _ = self.gru(x)
            return self.head(y[:, -1])

    return Forecaster()


def _train(model, x: np.ndarray, y: np.ndarray, loss_name: str, steps: int,  # type: ignore[no-untyped-def]
           batch: int = 32, lr: float = 3e-3, one_cycle: bool = False) -> float:
    torch = _torch()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # one-cycle schedule (warm-up, then anneal): converges in a few hundred steps, which a
    # constant rate did not (the classifiers stalled at 0.49 / 0.86 validation top-1)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
             if one_cycle else None)
    loss_fn = torch.nn.CrossEntropyLoss() if loss_name == "ce" else torch.nn.MSELoss()
    rng = np.random.default_rng(1)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        if step % 20 == 0:
            print(f"  step {step}/{steps} loss {float(loss.detach()):.3f}", file=sys.stderr, flush=True)
        idx = rng.integers(0, len(x), batch)
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    return float(loss.detach())


def _export(model, example: np.ndarray, name: str, output: str) -> Path:  # type: ignore[no-untyped-def]
    torch = _torch()
    path = OUT / f"{name}.onnx"
    torch.onnx.export(model, (torch.from_numpy(example[:1]),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=[output],
                      dynamic_axes={"input": {0: "batch"}, output: {0: "batch"}})
    return path


def _save(name: str, x_cal: np.ndarray, x_val: np.ndarray, labels: np.ndarray | None) -> None:
    np.savez(OUT / f"{name}.cal.npz", input=x_cal.astype(np.float16))
    extra = {"labels": labels} if labels is not None else {}
    np.savez(OUT / f"{name}.val.npz", input=x_val.astype(np.float16), **extra)


def _data(name: str) -> None:
    """(Re)write the calibration/validation sets for ``name`` (numpy only, no torch)."""
    if name in ("mobilenet", "resnet"):
        xc, _ = datagen.images(CAL_SAMPLES, size=SIZE, seed=200)
        xv, yv = datagen.images(VAL_SAMPLES, size=SIZE, seed=300)
        _save(name, xc, xv, yv)
    elif name == "segnet":
        _save(name, datagen.segmentation(CAL_SAMPLES, size=SIZE, seed=201)[0],
              datagen.segmentation(VAL_SAMPLES, size=SIZE, seed=301)[0], None)
    else:
        _save(name, datagen.series(CAL_SAMPLES, seed=202)[0],
              datagen.series(VAL_SAMPLES, seed=302)[0], None)


def _model(name: str, t0: float) -> None:
    torch = _torch()
    if name in ("mobilenet", "resnet"):
        x, y = datagen.images(4000, size=SIZE, seed=100)
        m = mobilenet() if name == "mobilenet" else resnet()
        loss = _train(m, x, y, "ce", *TRAIN[name], one_cycle=True)
        xv, yv = datagen.images(VAL_SAMPLES, size=SIZE, seed=300)
        with torch.no_grad():
            acc = float((m(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())
        _export(m, xv, name, "logits")
        print(f"{name}: loss {loss:.3f}, val top-1 {acc:.3f} ({time.time() - t0:.0f}s)",
              file=sys.stderr)
    elif name == "segnet":
        sx, sy = datagen.segmentation(400, size=SIZE, seed=101)
        m = segnet()
        loss = _train(m, sx, sy, "ce", *TRAIN[name])
        _export(m, sx, "segnet", "mask_logits")
        print(f"segnet: loss {loss:.3f} ({time.time() - t0:.0f}s)", file=sys.stderr)
    else:
        tx, ty = datagen.series(4000, seed=102)
        m = gru()
        loss = _train(m, tx, ty, "mse", *TRAIN[name], lr=5e-3)
        _export(m, tx, "gru", "forecast")
        print(f"gru: loss {loss:.4f} ({time.time() - t0:.0f}s)", file=sys.stderr)


# (steps, batch): sized for a shared 2-core machine (each classifier ~3 CPU minutes).
TRAIN = {"mobilenet": (800, 32), "resnet": (400, 32), "segnet": (60, 8), "gru": (150, 32)}


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Train/export the benchmark models.")
    ap.add_argument("--only", default=",".join(TRAIN), help="comma-separated model names")
    ap.add_argument("--data-only", action="store_true",
                    help="only rewrite the calibration/validation .npz (no torch needed)")
    args = ap.parse_args(argv)
    t0 = time.time()
    for name in args.only.split(","):
        if not args.data_only:
            _model(name, t0)
        _data(name)


if __name__ == "__main__":
    main()
