"""`make bench`: run every benchmark of the project, then assemble results.json and a table.

Each benchmark is a module ``benchmarks/<name>.py`` runnable as ``python -m benchmarks.<name>``
that writes ``benchmarks/results/<name>.json`` (and a Markdown table ``<name>.md``) stating the
machine, versions and parameters, and measuring against its baseline side by side in the same
run. This runner executes them one after another (never in parallel: they would disturb each
other's timings), then merges their JSON into ``benchmarks/results.json`` and their tables into
``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SKIP = {"__init__", "run", "common"}
# Run only when named (``python -m benchmarks.run converter_large``): too heavy for `make bench`.
# converter_zoo: 15 variants x 10 models, each build in its own process: hours on 2 shared
# cores (it prints its own estimate first); ocr-det-640's builds peak near 15 GB RSS.
# x86_bit_split: ~12 min (eight builds of the OCR models); mixed_precision: six real-model
# builds, ~20 min
OPT_IN = {"converter_large", "converter_zoo", "mixed_precision", "x86_bit_split"}


def discover(opt_in: bool = False) -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in SKIP and not p.stem.startswith("_")
                  and (opt_in or p.stem not in OPT_IN))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    names = args.names or discover()
    if args.list:
        print("\n".join(f"{n} (opt-in: run only when named)" if n in OPT_IN else n
                        for n in discover(opt_in=True)))
        return 0
    RESULTS.mkdir(exist_ok=True)
    status: dict[str, dict[str, object]] = {}
    for name in names:
        print(f"== benchmark {name}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent)
        status[name] = {"exit_code": rc, "seconds": round(time.monotonic() - t0, 1)}
    merged: dict[str, object] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor()},
        "runs": status, "benchmarks": {}}
    tables = ["# Benchmark results\n"]
    for name in names:
        j, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
        if j.exists():
            merged["benchmarks"][name] = json.loads(j.read_text())  # type: ignore[index]
        if md.exists():
            tables.append(md.read_text())
    (HERE / "results.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    (HERE / "results.md").write_text("\n\n".join(tables) + "\n")
    failed = [n for n, s in status.items() if s["exit_code"] != 0]
    print(f"wrote {HERE / 'results.json'} and results.md; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
