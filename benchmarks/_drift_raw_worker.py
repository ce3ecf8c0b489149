"""Runs inside the benchmark-only venv with Alibi Detect and Evidently (never imports edgeops).

Why a separate process: both tools pull in large dependency trees (pandas, scikit-learn,
pydantic, plotly) that the project does not carry; benchmarks/_drift_raw.py starts this script
with that venv's Python and speaks one JSON object per line over stdin/stdout:

``{"op": "versions"}`` -> the tools' versions;
``{"op": "reference", "name": ..., "path": x.npy}`` -> fits both detectors on the raw reference;
``{"op": "test", "name": ..., "path": x.npy, "tools": ["ks", "evidently"]}`` -> each tool's
verdict on one window of raw features.

Both run with their defaults: ``KSDrift(x_ref)`` (p_val 0.05, Bonferroni across features) and
Evidently's ``DataDriftPreset()`` dataset verdict (per column: KS when the reference has up to
1,000 rows, normed Wasserstein distance above 0.1 otherwise; dataset drift when half the columns
drift). The verdict is computed by the preset's own dataset metric, ``DriftedColumnsCount()``
with the preset's defaults, alone: the whole preset adds a per-column metric and its widgets
for the report page and takes ~12 s a window on a loaded 2-core machine against ~1 s. The first
window of every reference runs the whole preset too and the two counts must agree.
"""

from __future__ import annotations

import json
import sys
import warnings
from importlib.metadata import version
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")


class Tools:
    def __init__(self) -> None:
        from alibi_detect.cd import KSDrift

        self._ks_cls = KSDrift
        self.ks: dict[str, Any] = {}
        self.ref_df: dict[str, Any] = {}
        self.checked: set[str] = set()

    def reference(self, name: str, x: np.ndarray) -> None:
        import pandas as pd

        self.ks[name] = self._ks_cls(x.astype(np.float32))
        self.ref_df[name] = pd.DataFrame(x, columns=[f"f{j}" for j in range(x.shape[1])])

    def test(self, name: str, x: np.ndarray, tools: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "ks" in tools:
            r = self.ks[name].predict(x.astype(np.float32))["data"]
            out["ks"] = {"drift": bool(r["is_drift"]), "p_min": float(np.min(r["p_val"])),
                         "features": int(np.size(r["p_val"]))}
        if "evidently" in tools:
            out["evidently"] = self._evidently(name, x)
        return out

    def _evidently(self, name: str, x: np.ndarray) -> dict[str, Any]:
        import pandas as pd
        from evidently import Report
        from evidently.metrics import DriftedColumnsCount
        from evidently.presets import DataDriftPreset

        cur = pd.DataFrame(x, columns=list(self.ref_df[name].columns))
        drifted, share = self._count(Report([DriftedColumnsCount()]), cur, name)
        if name not in self.checked:          # the whole preset once: the same verdict
            full, _ = self._count(Report([DataDriftPreset()]), cur, name)
            if full != drifted:
                raise RuntimeError(f"DataDriftPreset counts {full} drifted columns, "
                                   f"DriftedColumnsCount {drifted}")
            self.checked.add(name)
        columns = x.shape[1]
        return {"dataset_drift": drifted >= share * columns, "drifted_columns": drifted,
                "any_column": drifted > 0}

    def _count(self, report: Any, cur: Any, name: str) -> tuple[int, float]:
        snap = report.run(current_data=cur, reference_data=self.ref_df[name])
        for m in snap.dict()["metrics"]:
            if str(m.get("metric_name", "")).startswith("DriftedColumnsCount"):
                return (int(m["value"]["count"]),
                        float(m.get("config", {}).get("drift_share", 0.5)))
        raise RuntimeError("no DriftedColumnsCount in Evidently's report")

def main() -> int:
    tools: Tools | None = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "versions":
                resp: dict[str, Any] = {v: version(v) for v in
                                        ("alibi-detect", "evidently", "numpy", "scipy", "pandas")}
                resp["python"] = sys.version.split()[0]
            else:
                tools = tools or Tools()
                x = np.load(req["path"])
                if req["op"] == "reference":
                    tools.reference(req["name"], x)
                    resp = {"ok": True}
                else:
                    resp = tools.test(req["name"], x, list(req["tools"]))
        except Exception as exc:       # reported to the benchmark, which prints it
            resp = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(resp) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
