"""Build time of full-integer ``--effort max`` before and after its candidates without
AdaRound became the default effort's own (by hand, not in ``make bench``).

    PYTHONPATH=. python -m benchmarks._fullint_max_time OLD_TREE NEW_TREE [ROUNDS] [TARGET]

Each tree (a checkout: the code before, the code after) builds the zoo's ocr-cls for TARGET
(``edgetpu``) at ``--effort max``, 48 calibration / 48 validation samples as
``--zoo-int8`` does, in a fresh process per build, rounds interleaved ABBA... Writes
``benchmarks/results/fullint_max_time.<target>.json``: every build's wall time (the build
alone, imports excluded), its top-1 agreement and choice, and the median ratio new/old.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"

_CHILD = """
import json, sys
from pathlib import Path
from benchmarks._tflite_zoo_int8 import _one
cal, val, target, work = sys.argv[1:5]
row = _one("ocr-cls", target, "max", Path(cal), Path(val), (1, 3, 48, 192), Path(work))
print(json.dumps({k: row.get(k) for k in ("build_s", "value", "used", "error")}))
"""


def _build(tree: Path, cal: Path, val: Path, target: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(cal), str(val), target, str(work)],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1:]}
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str]) -> None:
    from benchmarks._tflite_zoo_int8 import _data

    old, new = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    rounds = int(argv[2]) if len(argv) > 2 else 2
    target = argv[3] if len(argv) > 3 else "edgetpu"
    load0 = round(os.getloadavg()[0], 2)
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="edgeops-max-time-") as tmp:
        cal_data, val_data = _data("ocr-cls", 48)
        cal, val = Path(tmp) / "cal.npz", Path(tmp) / "val.npz"
        np.savez(cal, **cal_data)
        np.savez(val, **val_data)
        for r in range(rounds):
            order = [("old", old), ("new", new)][:: 1 if r % 2 == 0 else -1]
            for label, tree in order:
                row = _build(tree, cal, val, target, Path(tmp) / f"{label}-{r}")
                print(label, row, file=sys.stderr)
                runs[label].append(row)
    med = {k: statistics.median(r["build_s"] for r in v if "build_s" in r)
           for k, v in runs.items()}
    doc = {"benchmark": "benchmarks._fullint_max_time", "target": target, "rounds": rounds,
           "trees": {"old": str(old), "new": str(new)}, "runs": runs,
           "median_build_s": med, "ratio_new_over_old": round(med["new"] / med["old"], 3),
           "machine": {"cpus": os.cpu_count(), "load_before": load0,
                       "load_after": round(os.getloadavg()[0], 2),
                       "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fullint_max_time.{target}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("median_build_s", "ratio_new_over_old", "machine")}))


if __name__ == "__main__":
    main(sys.argv[1:])
