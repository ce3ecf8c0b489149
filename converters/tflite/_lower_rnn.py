"""ONNX GRU and LSTM unrolled over the static sequence length into FULLY_CONNECTED/LOGISTIC/TANH.

LiteRT has no GRU builtin, so each time step becomes plain ops every delegate runs: the input
projection of all steps is one FULLY_CONNECTED (with the biases folded in), each step one
FULLY_CONNECTED of the hidden state, SPLIT into the z/r/h gates, LOGISTIC, TANH and
``h' = n + z * (h - n)``. The sequence length comes from the input shape (``--input-shape``);
forward, reverse and bidirectional, ``linear_before_reset`` 0 and 1 are lowered. Anything else
(custom activations, clip, batch-first layout, per-sample sequence lengths; for LSTM also
peepholes and input_forget) is refused by :func:`gru_problem` before anything is built. LSTM
(:meth:`RnnOps.op_LSTM`) follows the same plan with its four gates.
"""

from __future__ import annotations

import numpy as np
import onnx

from converters.tflite._attrs import Attrs
from converters.tflite._layout import LayoutTracker, identity

__all__ = ["RnnOps", "gru_problem"]



def gru_problem(n: onnx.NodeProto, a: Attrs, consts: dict[str, np.ndarray],
                shapes: dict[str, tuple[int, ...]]) -> str:
    """Why this GRU or LSTM node is not lowered ("" if it is)."""
    t = n.op_type
    acts = [v.lower() for v in a.strings("activations", [])]
    want = ["sigmoid", "tanh"] if t == "GRU" else ["sigmoid", "tanh", "tanh"]
    if acts and any(x != y for x, y in zip(acts, want * 2, strict=False)):
        return f"{t} activations={','.join(acts)} ({','.join(w.title() for w in want)} only)"
    if "clip" in a:
        return f"{t} with clip"
    if a.i("layout", 0):
        return f"{t} layout=1 (batch-first)"
    if t == "LSTM" and a.i("input_forget", 0):
        return "LSTM input_forget=1"
    if t == "LSTM" and len(n.input) > 7 and n.input[7]:
        return "LSTM with peepholes"
    states = (1, 2, 3, 5) if t == "GRU" else (1, 2, 3, 5, 6)
    if any(len(n.input) > i and n.input[i] and n.input[i] not in consts for i in states):
        return f"{t} with weights, biases or initial state computed at run time"
    if len(n.input) > 4 and n.input[4]:
        lens = consts.get(n.input[4])
        seq = shapes.get(n.input[0], (0,))[0]
        if lens is None or np.any(np.asarray(lens) != seq):
            return f"{t} with sequence_lens shorter than the sequence"
    return ""


class RnnOps(LayoutTracker):
    """GRU and LSTM, unrolled."""

    def _fc2(self, x: str, w: np.ndarray, b: np.ndarray, out: str, src: str) -> None:
        xd = self.g.tensors[x].data
        if xd is not None:                   # the first step's constant initial state
            t = self.g.tensors[out]
            t.data = (np.asarray(xd, np.float64) @ w.T + b).astype(np.float32).reshape(t.shape)
            return
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

    def op_GRU(self, n: onnx.NodeProto, a: Attrs) -> None:
        hid = a.i("hidden_size")
        lbr = bool(a.i("linear_before_reset", 0))
        direction = a.s("direction", "forward")
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
        self._pack_outputs(n, base, per_dir, [last], seq, (batch, hid))

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

    def op_LSTM(self, n: onnx.NodeProto, a: Attrs) -> None:
        """Gates i, o, f, c (ONNX order): one ADD of the projections, LOGISTIC over i/o/f
        together, TANH of the cell candidate, c' = f*c + i*g, h' = o*tanh(c')."""
        hid = a.i("hidden_size")
        direction = a.s("direction", "forward")
        seq, batch, _ = self.shape(n.input[0])
        w_all = np.asarray(self.p.consts[n.input[1]], np.float64)
        r_all = np.asarray(self.p.consts[n.input[2]], np.float64)
        ndir = w_all.shape[0]

        def opt(i: int, shape: tuple[int, ...]) -> np.ndarray:
            if len(n.input) > i and n.input[i]:
                return np.asarray(self.p.consts[n.input[i]], np.float64)
            return np.zeros(shape)

        b_all = opt(3, (ndir, 8 * hid))
        h0_all, c0_all = opt(5, (ndir, batch, hid)), opt(6, (ndir, batch, hid))
        x = self.get(n.input[0])
        base = n.output[0] or n.name
        dirs = ["reverse"] if direction == "reverse" else \
            ["forward", "reverse"] if direction == "bidirectional" else ["forward"]
        shp, gates3 = (batch, hid), (batch, 3 * hid)
        per_dir: list[list[str]] = []
        last_h: list[str] = []
        last_c: list[str] = []
        for d, way in enumerate(dirs):
            xp = self._t(f"{base}__x{d}", (seq * batch, 4 * hid))
            self._fc2(x, w_all[d], b_all[d][:4 * hid] + b_all[d][4 * hid:], xp, n.name)
            steps = [self._t(f"{base}__x{d}_{t}", (batch, 4 * hid)) for t in range(seq)]
            self.g.add_op("SPLIT", [self.i32("axis", [0]), xp], steps, n.name, numSplits=seq)
            h = self.g.add_const(f"{base}__h0_{d}", h0_all[d].astype(np.float32))
            c = self.g.add_const(f"{base}__c0_{d}", c0_all[d].astype(np.float32))
            outs: list[str] = [""] * seq
            order = range(seq) if way == "forward" else range(seq - 1, -1, -1)
            for t in order:
                sb = f"{base}__{d}_{t}"
                hp = self._t(f"{sb}_hp", (batch, 4 * hid))
                self._fc2(h, r_all[d], np.zeros(4 * hid), hp, n.name)
                pre = self._op("ADD", [steps[t], hp], f"{sb}_pre", (batch, 4 * hid), n.name)
                sig_in, cand_in = self._t(f"{sb}_iof", gates3), self._t(f"{sb}_g", shp)
                self.g.add_op("SPLIT_V", [pre, self.i32("sizes", [3 * hid, hid]),
                                          self.i32("axis", [1])], [sig_in, cand_in], n.name,
                              numSplits=2)
                sig = self._op("LOGISTIC", [sig_in], f"{sb}_sig", gates3, n.name)
                i_g, o_g, f_g = (self._t(f"{sb}_{k}", shp) for k in "iof")
                self.g.add_op("SPLIT", [self.i32("axis", [1]), sig], [i_g, o_g, f_g], n.name,
                              numSplits=3)
                cand = self._op("TANH", [cand_in], f"{sb}_cand", shp, n.name)
                fc = self._op("MUL", [f_g, c], f"{sb}_fc", shp, n.name)
                ig = self._op("MUL", [i_g, cand], f"{sb}_ig", shp, n.name)
                c = self._op("ADD", [fc, ig], f"{sb}_c", shp, n.name)
                h = self._op("MUL", [o_g, self._op("TANH", [c], f"{sb}_tc", shp, n.name)],
                             f"{sb}_h", shp, n.name)
                outs[t] = h
            per_dir.append(outs)
            last_h.append(h)
            last_c.append(c)
        self._pack_outputs(n, base, per_dir, [last_h, last_c], seq, shp)

    def _pack_outputs(self, n: onnx.NodeProto, base: str, per_dir: list[list[str]],
                      lasts: list[list[str]], seq: int, shp: tuple[int, int]) -> None:
        """Y (seq, dirs, batch, hidden) and the final states (dirs, batch, hidden)."""
        nd = len(per_dir)
        if n.output[0]:
            packed = [self._op("PACK", [per_dir[d][t] for d in range(nd)], f"{base}__y{t}",
                               (nd, *shp), n.name, valuesCount=nd, axis=0)
                      for t in range(seq)]
            y = self.new(n.output[0], identity(4))
            self.g.add_op("PACK", packed, [y], n.name, valuesCount=seq, axis=0)
        for k, last in enumerate(lasts, 1):
            if len(n.output) > k and n.output[k]:
                out = self.new(n.output[k], identity(3))
                self.g.add_op("PACK", last, [out], n.name, valuesCount=nd, axis=0)
