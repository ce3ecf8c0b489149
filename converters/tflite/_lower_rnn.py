"""ONNX GRU unrolled over its static sequence length into FULLY_CONNECTED/LOGISTIC/TANH steps.

LiteRT has no GRU builtin, so each time step becomes plain ops every delegate runs: the input
projection of all steps is one FULLY_CONNECTED (with the biases folded in), each step one
FULLY_CONNECTED of the hidden state, SPLIT into the z/r/h gates, LOGISTIC, TANH and
``h' = n + z * (h - n)``. The sequence length comes from the input shape (``--input-shape``);
forward, reverse and bidirectional, ``linear_before_reset`` 0 and 1 are lowered. Anything else
(custom activations, clip, batch-first layout, per-sample sequence lengths) is refused by
:func:`gru_problem` before anything is built.
"""

from __future__ import annotations

import numpy as np
import onnx

from converters.tflite._layout import LayoutTracker, identity

__all__ = ["RnnOps", "gru_problem"]


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def gru_problem(n: onnx.NodeProto, a: dict[str, object], consts: dict[str, np.ndarray],
                shapes: dict[str, tuple[int, ...]]) -> str:
    """Why this GRU node is not lowered ("" if it is)."""
    acts = [_s(v).lower() for v in a.get("activations", []) or []]  # type: ignore[attr-defined]
    if acts and any(x != y for x, y in zip(acts, ["sigmoid", "tanh"] * 2, strict=False)):
        return f"GRU activations={','.join(acts)} (Sigmoid,Tanh only)"
    if "clip" in a:
        return "GRU with clip"
    if int(a.get("layout", 0)):  # type: ignore[call-overload]
        return "GRU layout=1 (batch-first)"
    if any(len(n.input) > i and n.input[i] and n.input[i] not in consts for i in (1, 2, 3, 5)):
        return "GRU with weights, biases or initial_h computed at run time"
    if len(n.input) > 4 and n.input[4]:
        lens = consts.get(n.input[4])
        seq = shapes.get(n.input[0], (0,))[0]
        if lens is None or np.any(np.asarray(lens) != seq):
            return "GRU with sequence_lens shorter than the sequence"
    return ""


class RnnOps(LayoutTracker):
    """GRU, unrolled."""

    def _fc2(self, x: str, w: np.ndarray, b: np.ndarray, out: str, src: str) -> None:
        self.g.add_op("FULLY_CONNECTED", [x, self.g.add_const(out + "_w", w.astype(np.float32)),
                                          self.g.add_const(out + "_b", b.astype(np.float32))],
                      [out], src, keepNumDims=False, fusedActivationFunction=0)

    def _t(self, base: str, shape: tuple[int, ...]) -> str:
        return self.g.add_tensor(base, shape)

    def _op(self, kind: str, ins: list[str], base: str, shape: tuple[int, ...], src: str,
            **opts: object) -> str:
        out = self._t(base, shape)
        if kind in ("ADD", "SUB", "MUL"):
            opts["fusedActivationFunction"] = 0
        self.g.add_op(kind, ins, [out], src, **opts)
        return out

    def op_GRU(self, n: onnx.NodeProto, a: dict[str, object]) -> None:
        hid = int(a["hidden_size"])  # type: ignore[call-overload]
        lbr = bool(int(a.get("linear_before_reset", 0)))  # type: ignore[call-overload]
        direction = _s(a.get("direction", "forward"))
        seq, batch, _ = self.shape(n.input[0])
        w_all = np.asarray(self.p.consts[n.input[1]], np.float64)
        r_all = np.asarray(self.p.consts[n.input[2]], np.float64)
        ndir = w_all.shape[0]
        b_all = np.asarray(self.p.consts[n.input[3]], np.float64) \
            if len(n.input) > 3 and n.input[3] else np.zeros((ndir, 6 * hid))
        h0_all = np.asarray(self.p.consts[n.input[5]], np.float32) \
            if len(n.input) > 5 and n.input[5] else np.zeros((ndir, batch, hid), np.float32)
        x = self.get(n.input[0])
        base = n.output[0] or n.name
        dirs = ["reverse"] if direction == "reverse" else \
            ["forward", "reverse"] if direction == "bidirectional" else ["forward"]
        per_dir: list[list[str]] = []
        last: list[str] = []
        for d, way in enumerate(dirs):
            w, r, b = w_all[d], r_all[d], b_all[d]
            wb, rb = b[:3 * hid], b[3 * hid:]
            xb = wb + np.concatenate([rb[:2 * hid], np.zeros(hid) if lbr else rb[2 * hid:]])
            # every step's input projection in one FULLY_CONNECTED: (S*B, 3H), whose SPLIT
            # along the first axis hands each step its (B, 3H) rows without a RESHAPE
            xp = self._t(f"{base}__x{d}", (seq * batch, 3 * hid))
            self._fc2(x, w, xb, xp, n.name)
            steps = [self._t(f"{base}__x{d}_{t}", (batch, 3 * hid)) for t in range(seq)]
            self.g.add_op("SPLIT", [self.i32("axis", [0]), xp], steps, n.name, numSplits=seq)
            h = self.g.add_const(f"{base}__h0_{d}", h0_all[d])
            outs: list[str] = [""] * seq
            order = range(seq) if way == "forward" else range(seq - 1, -1, -1)
            for t in order:
                h = self._step(n, f"{base}__{d}_{t}", steps[t], h, r, rb, hid, batch, lbr)
                outs[t] = h
            per_dir.append(outs)
            last.append(h)
        shp = (batch, hid)
        if n.output[0]:
            packed = [self._op("PACK", [per_dir[d][t] for d in range(len(dirs))],
                               f"{base}__y{t}", (len(dirs), *shp), n.name,
                               valuesCount=len(dirs), axis=0) for t in range(seq)]
            y = self.new(n.output[0], identity(4))
            self.g.add_op("PACK", packed, [y], n.name, valuesCount=seq, axis=0)
        if len(n.output) > 1 and n.output[1]:
            yh = self.new(n.output[1], identity(3))
            self.g.add_op("PACK", last, [yh], n.name, valuesCount=len(dirs), axis=0)

    def _step(self, n: onnx.NodeProto, base: str, xt: str, h: str, r: np.ndarray,
              rb: np.ndarray, hid: int, batch: int, lbr: bool) -> str:
        """One GRU step: the new hidden state (B, H) from x_t's projection and h."""
        shp, zr = (batch, hid), (batch, 2 * hid)
        # z and r share one ADD and one LOGISTIC over (B, 2H): fewer, larger ops per step
        x_zr, x_h = self._t(f"{base}_xzr", zr), self._t(f"{base}_xh", shp)
        self.g.add_op("SPLIT_V", [xt, self.i32("sizes", [2 * hid, hid]), self.i32("axis", [1])],
                      [x_zr, x_h], n.name, numSplits=2)
        gates = 3 if lbr else 2
        hp = self._t(f"{base}_hp", (batch, gates * hid))
        hb = np.concatenate([np.zeros(2 * hid), rb[2 * hid:]]) if lbr else np.zeros(2 * hid)
        self._fc2(h, r[:gates * hid], hb, hp, n.name)
        if lbr:
            h_zr, h_h = self._t(f"{base}_hzr", zr), self._t(f"{base}_hh", shp)
            self.g.add_op("SPLIT_V", [hp, self.i32("sizes", [2 * hid, hid]),
                                      self.i32("axis", [1])], [h_zr, h_h], n.name, numSplits=2)
        else:
            h_zr, h_h = hp, ""
        s_zr = self._op("LOGISTIC", [self._op("ADD", [x_zr, h_zr], f"{base}_zrs", zr, n.name)],
                        f"{base}_zr", zr, n.name)
        z, rg = self._t(f"{base}_z", shp), self._t(f"{base}_r", shp)
        self.g.add_op("SPLIT", [self.i32("axis", [1]), s_zr], [z, rg], n.name, numSplits=2)
        if lbr:
            rh = self._op("MUL", [rg, h_h], f"{base}_rh", shp, n.name)
        else:
            gated = self._op("MUL", [rg, h], f"{base}_rh0", shp, n.name)
            rh = self._t(f"{base}_rh", shp)
            self._fc2(gated, r[2 * hid:], np.zeros(hid), rh, n.name)   # Rbh is in x_h
        cand = self._op("TANH", [self._op("ADD", [x_h, rh], f"{base}_ns", shp, n.name)],
                        f"{base}_n", shp, n.name)
        diff = self._op("SUB", [h, cand], f"{base}_d", shp, n.name)
        zd = self._op("MUL", [z, diff], f"{base}_zd", shp, n.name)
        return self._op("ADD", [cand, zd], f"{base}_h", shp, n.name)
