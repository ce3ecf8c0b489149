"""Goals and the Markdown table of benchmarks/drift.py, from its JSON alone.

Why apart: the run takes minutes, the reading of it does not; ``python -m benchmarks.drift
--render`` rewrites drift.md (and the goals in drift.json) from the last run's numbers.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LABELS", "POLICIES", "goals", "markdown"]

# our detectors in the goals: the default policy, one window at 0.0005 per side (two sides
# within 1e-3) and the previous default (alpha 0.01, 2 windows), when the run has them
POLICIES = {"ours": "default policy", "ours_fast": "one window at alpha 0.0005",
            "ours_slow": "alpha 0.01 and 2 windows (the previous default)"}

LABELS = {"calibration": "sim calibration drift (noise_db +15 x d)",
          "spread": "speed spread x1.5, mean kept",
          "decorrelate": "length swapped between vehicles (share d): prediction-only"}


def _labels() -> dict[str, str]:
    from benchmarks._drift_images import IMAGE_DRIFTS

    return LABELS | {d.kind: d.label for d in IMAGE_DRIFTS}


def _chance(fa: dict[str, Any], key: str, detector: str) -> float:
    """Median windows until ``detector`` first alarms on a no-drift stream of ``key``, from its
    share of flagged windows there (windows independent): an alarm that late says nothing."""
    pct = fa.get(key, {}).get("in_alarm_pct", {}).get(detector)
    if pct is None:
        return math.inf
    p = pct / 100.0
    if p <= 0.0:
        return math.inf
    if p >= 1.0:
        return 1.0
    return max(1.0, math.ceil(math.log(0.5) / math.log(1.0 - p)))


def _median(v: list[int | None]) -> float | None:
    """Median delay over seeds, a seed without alarm counting as infinite; None when most
    seeds never alarmed."""
    if sum(d is not None for d in v) * 2 <= len(v):
        return None
    vals = sorted(d if d is not None else math.inf for d in v)
    return float(vals[len(vals) // 2])


def goals(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, checked on this run's numbers."""
    fa = r["false_alarms"]
    rate = 1.0                                   # per 1,000 windows per group (the default)
    fa_ok = {k: fa[k]["per_1000"]["ours"] <= rate
             for k in ("tabular_device", "tabular_cohort", "images_device", "images_cohort")}
    fa_fast = {k: fa[k]["per_1000"]["ours_fast"] <= rate
               for k in ("tabular_device", "tabular_cohort", "images_device", "images_cohort")}
    policies = [k for k in POLICIES if all(k in row["delays"] for row in r["detection"])]
    fa_slow = {k: fa[k]["per_1000"]["ours_slow"] <= rate
               for k in ("tabular_device", "tabular_cohort", "images_device", "images_cohort")
               if "ours_slow" in policies}
    delay: dict[str, list[str]] = {k: [] for k in policies}
    chance: list[str] = []
    compared = same_budget_rows = 0
    same_budget: dict[str, list[str]] = {k: [] for k in policies}
    raw_on = r["versions"]["alibi_detect"] != "not installed"
    for row in r["detection"] if raw_on else []:
        d = {k: _median(v) for k, v in row["delays"].items()}
        d.setdefault("ks_strict", None)
        key = f"{row['stream']}_{row['scope']}"
        real = {k: v for k in ("ks", "evidently")
                if (v := d[k]) is not None and v < _chance(fa, key, k)}
        for k in ("ks", "evidently"):
            v = d[k]
            if v is not None and k not in real:
                chance.append(f"{_name(row)}: {k} {v:g} (no-drift median "
                              f"{_chance(fa, key, k):g})")
        strict = d["ks_strict"]
        if strict is not None and strict < _chance(fa, key, "ks_strict"):
            same_budget_rows += 1
            for ours in same_budget:
                mine = d[ours]
                if mine is None or mine > 1.5 * strict:
                    same_budget[ours].append(f"{_name(row)}: {_fmt(mine)} vs {strict:g}")
        best = min(real.values(), default=None)
        if best is None:
            continue
        compared += 1
        for ours in delay:
            mine = d[ours]
            if mine is None or mine > 1.5 * best:
                delay[ours].append(f"{_name(row)}: {_fmt(mine)} vs {best:g}")
    special = {}
    keys: tuple[tuple[str, str, str], ...] = (("tabular", "spread", "device"),
                                               ("tabular", "decorrelate", "device"),
                                               ("images", "contrast", "device"))
    for wanted in keys:
        rows = [x for x in r["detection"] if (x["stream"], x["drift"], x["scope"]) == wanted]
        row = max(rows, key=lambda x: x["magnitude"]) if rows else None
        if row is not None:
            special["/".join(wanted)] = {"ours": _median(row["delays"]["ours"]),
                                      "mean_shift": _median(row["delays"]["mean_shift"])}
    b = {f"{x['stream']} {x['requests_per_s']:g} req/s {x['window_s'] / 60:.0f} min":
         x["sketch_bytes_per_day"] / x["raw_input_bytes_per_day"] for x in r["bytes"]}
    before = {f"{x['stream']} {x['requests_per_s']:g} req/s {x['window_s'] / 60:.0f} min":
              x["record_bytes_by_encoding"]["json_before"] * 86_400.0 / x["window_s"]
              / x["raw_input_bytes_per_day"]
              for x in r["bytes"] if "record_bytes_by_encoding" in x}
    return {"false_alarms_at_most_1_per_1000": fa_ok, "fast_policy_false_alarms": fa_fast,
            "slow_policy_false_alarms": fa_slow,
            "rows_compared_with_raw": compared, "delay_over_1_5x_raw": delay,
            "raw_alarms_at_chance": chance, "rows_compared_with_ks_same_budget": same_budget_rows,
            "delay_over_1_5x_ks_same_budget": same_budget,
            "mean_shift_misses": special, "sketch_share_of_raw": b,
            "sketch_share_of_raw_before": before}


_ENC = {"json_before": "JSON, before", "json": "JSON", "json_zlib": "JSON + zlib",
        "varint": "varints", "varint_zlib_default": "varints + zlib",
        "varint_zlib": "varints + zlib, Huffman only (sent)"}


def _pct(share: float) -> str:
    return f"{share:.2%}" if share >= 0.001 else f"{share:.4%}"


def _name(row: dict[str, Any]) -> str:
    return (f"{row['stream']} {row['drift']} {row['magnitude']:g}"
            f"{' gradual' if row['gradual'] else ''} {row['scope']}")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _cell(row: dict[str, Any], k: str, horizon: int = 20) -> str:
    """Median delay (alarms/seeds); "> n": most seeds no alarm in the n windows judged."""
    v, judged = row["delays"].get(k, []), row["judged"].get(k, [])
    if not v:
        return "not run"
    hits = sum(d is not None for d in v)
    m = _median(v)
    if m is None:
        quiet = [j for d, j in zip(v, judged, strict=True) if d is None]
        return (f"> {min(quiet)}" if min(quiet) < horizon else "-") + f" ({hits}/{len(v)})"
    return f"{m:g} ({hits}/{len(v)})"


def markdown(r: dict[str, Any]) -> str:
    s, v, g = r["settings"], r["versions"], r["goals"]
    labels = _labels()
    raw_on = v["alibi_detect"] != "not installed"
    # the second column of ours: the previous default policy when the run has it
    slow = all("ours_slow" in row["delays"] for row in r["detection"]) and "slow_alpha" in s
    col2 = "ours_slow" if slow else "ours_fast"
    second = (f"ours, alpha {s['slow_alpha']} x {s['slow_persistence']} windows" if slow
              else "ours, 1 window")
    tools = (f"Alibi Detect {v['alibi_detect']}, Evidently {v['evidently']} (own venv, Python "
             f"{v.get('driftref_python')}, scipy {v.get('driftref_scipy')}, pandas "
             f"{v.get('driftref_pandas')})" if raw_on else
             "Alibi Detect and Evidently: not installed (their columns say so)")
    out = [f"### drift: sketch tests vs raw-data detectors and the mean shift (windows of "
           f"{s['window_s'] / 60:.0f} min, {s['sampled_per_window']} sampled requests per device "
           "per window)", "",
           f"Python {v['python']}, numpy {v['numpy']}, ONNX Runtime {v['onnxruntime']} (1 "
           f"thread), {v['cpus']} CPUs (load {v['loadavg_1m']} at the end), {v['machine']}; "
           f"{tools}. References: tabular {s['reference_samples']['tabular']} samples, "
           f"{s['features_watched']['tabular']} features; images "
           f"{s['reference_samples']['images']} frames, {s['features_watched']['images']} "
           f"features. Ours: alpha {s['alpha']} per side ({s['correction']}, {s['test']}), alarm "
           f"after {s['persistence']} window(s); " + (
               f"before: alpha {s['slow_alpha']}, {s['slow_persistence']} windows; one window "
               f"at alpha {s['fast_alpha']} in the goals" if slow else
               f"one-window policy: alpha {s['fast_alpha']} per side, persistence 1") +
           ". Mean shift: alarm when a feature's shift > "
           f"{s['mean_shift_alert']}. KSDrift p_val 0.05 Bonferroni; Evidently DataDriftPreset "
           f"defaults. Wall {r['wall_s']} s.", "",
           "Detection delay: drifted windows seen until the alarm (median over seeds, 1 = the "
           "first drifted window; alarms/seeds; \"-\": most seeds no alarm within "
           f"{s['horizon_windows']} windows). Gradual drifts ramp over {s['ramp_windows']} "
           f"windows. Seeds: tabular {s['seeds']['tabular']}, images {s['seeds']['images']}; "
           f"cohorts: {s['cohort_devices']['tabular']} devices (tabular), "
           f"{s['cohort_devices']['images']} cameras (images).", "",
           f"| stream | drift | d | onset | scope | ours | {second} | mean shift | "
           "KSDrift (raw): p 0.05 / p 0.001 | Evidently (raw): dataset / any column |",
           "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    ni = "not installed"
    for row in r["detection"]:
        ev = (f"{_cell(row, 'evidently')} / {_cell(row, 'evidently_any')}" if raw_on else ni)
        ks = f"{_cell(row, 'ks')} / {_cell(row, 'ks_strict')}"
        out.append(f"| {row['stream']} | {labels.get(row['drift'], row['drift'])} | "
                   f"{row['magnitude']:g} | {'gradual' if row['gradual'] else 'abrupt'} | "
                   f"{row['scope']} | {_cell(row, 'ours')} | {_cell(row, col2)} | "
                   f"{_cell(row, 'mean_shift')} | {ks if raw_on else ni} | {ev} |")
    fa = r["false_alarms"]
    out += ["", "False alarms (alarm onsets) per 1,000 no-drift windows; in brackets the share "
            "of windows in alarm (ours: the share of windows a side flagged, inputs/outputs). "
            "Image streams resample a pool of 6,000 no-drift frames; the raw detectors judge "
            "the first windows only (count stated):", "",
            f"| stream | windows | ours | {second} | mean shift | windows KSDrift / "
            "Evidently | KSDrift p 0.05 / p 0.001 | Evidently dataset | Evidently any column |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, label in (("tabular_device", "tabular, one device"),
                     ("tabular_cohort", "tabular, cohort"),
                     ("images_device", "images, one camera"),
                     ("images_cohort", "images, cohort"),
                     ("tabular_device_sim_pinned_hour", "tabular, one device, simulator's "
                      "pinned hour")):
        f = fa[k]
        p, pct = f["per_1000"], f["in_alarm_pct"]

        def c(name: str, p: dict[str, float] = p, pct: dict[str, float] = pct) -> str:
            return f"{p[name]:.1f} ({pct[name]:.1f} %)" if name in p else "not run"

        flags = f"{pct['flag_input']:.1f} / {pct['flag_output']:.1f} % flagged"
        rawn = f"{f['windows'].get('ks', 0)} / {f['windows'].get('evidently', 0)}"
        out.append(f"| {label} | {f['windows']['ours']} | {p['ours']:.1f} ({flags}) | "
                   f"{c(col2)} | {c('mean_shift')} | {rawn if raw_on else ni} | "
                   f"{c('ks') + ' / ' + c('ks_strict') if raw_on else ni} | "
                   f"{c('evidently') if raw_on else ni} | "
                   f"{c('evidently_any') if raw_on else ni} |")
    out += ["", "Bytes per device per day (one sketch record per window, compact JSON as the "
            "agent sends it, counts packed; raw = the model's float32 inputs; today's "
            "mean-shift `drift` record is sent every 10 s telemetry interval):", "",
            "| stream | requests/s | window | features | sketch B per feature per window | "
            "sketch B/day | mean-shift B/day | raw inputs B/day | sketch / raw | under 1 % from |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in r["bytes"]:
        ms = b.get("mean_shift_bytes_per_day")
        out.append(f"| {b['stream']} | {b['requests_per_s']:g} | {b['window_s'] / 60:.0f} min | "
                   f"{b['features']} | {b['sketch_bytes_per_feature_window']} | "
                   f"{b['sketch_bytes_per_day']:,} | {'-' if ms is None else f'{ms:,}'} | "
                   f"{b['raw_input_bytes_per_day']:,} | "
                   f"{_pct(b['sketch_bytes_per_day'] / b['raw_input_bytes_per_day'])} | "
                   f"{b['under_1pct_from_requests_per_s']:g} req/s |")
    enc = [b for b in r["bytes"] if "record_bytes_by_encoding" in b]
    if enc:
        out += ["", "The record's counts encoded each way (bytes of the whole record, compact "
                "JSON, and its share of the raw inputs; the agent sends varints + zlib, Huffman "
                "only: edgeops/drift/sketch_codec.py; \"before\": the record agents sent before "
                "it, counts as JSON, the clock's float timestamps and `sample_every`):", "",
                "| stream | requests/s | window | " + " | ".join(_ENC.values()) + " |",
                "|---|---:|---:|" + "---:|" * len(_ENC)]
        for b in enc:
            per_day = 86_400.0 / b["window_s"]
            raw = b["raw_input_bytes_per_day"]
            cells = [f"{v:,} ({_pct(v * per_day / raw)})" if v is not None else "-"
                     for v in (b["record_bytes_by_encoding"].get(k) for k in _ENC)]
            out.append(f"| {b['stream']} | {b['requests_per_s']:g} | "
                       f"{b['window_s'] / 60:.0f} min | " + " | ".join(cells) + " |")
        outs = {b["stream"]: b["raw_output_bytes_per_request"] for b in enc}
        out += ["", "Raw = the model's inputs only (what the raw-data detectors test; the "
                "manager could rerun the model on them for prediction drift). Shipping the "
                "outputs too would add " + ", ".join(f"{v} B per request ({k})"
                                                     for k, v in outs.items()) + "."]
    cpu, hot = r["manager_cpu"], r["agent_us_per_request"]
    out += ["", "Manager CPU (process time, median of 3), tabular "
            "(14 features), 1,000 devices x 3 windows, merge + tests of both sides: one cohort "
            f"verdict {cpu['cohort_of_1000_s']} s ({cpu['cohort_of_1000_s'] / 3:.3f} s per "
            f"window); 1,000 per-device verdicts {cpu['per_device_x1000_s']} s "
            f"({cpu['per_device_x1000_s'] / 3:.2f} s per window).", "",
            "Agent, added time per inference request (µs, median of 5 x 20,000 calls, "
            "interleaved, batch 1, tabular): today's mean-shift observer (1 in 8) "
            f"{hot['mean_shift_observer']}; sketch (1 in 4) {hot['sketch_observer']}; "
            f"sketch counting every request {hot['sketch_every_request']}.", "", "Goals:", ""]
    fa_ok = g["false_alarms_at_most_1_per_1000"]
    out.append("- false alarms <= 1 per 1,000 windows (default policy): " + ", ".join(
        f"{k.replace('_', ' ')} {'met' if ok else 'MISSED'} ({fa[k]['per_1000']['ours']:.1f})"
        for k, ok in fa_ok.items()) + f"; {POLICIES['ours_fast']}: " + ", ".join(
        f"{k.replace('_', ' ')} {'met' if ok else 'MISSED'} "
        f"({fa[k]['per_1000']['ours_fast']:.1f})"
        for k, ok in g["fast_policy_false_alarms"].items()) + (
        "; alpha 0.01 and 2 windows (the previous default): " + ", ".join(
            f"{k.replace('_', ' ')} {'met' if ok else 'MISSED'} "
            f"({fa[k]['per_1000']['ours_slow']:.1f})"
            for k, ok in g["slow_policy_false_alarms"].items())
        if g.get("slow_policy_false_alarms") else "") + ";")
    if raw_on:
        for name, miss in g["delay_over_1_5x_raw"].items():
            label = POLICIES[name]
            out.append(f"- delay within 1.5x of the faster raw detector (KSDrift, Evidently "
                       f"dataset drift), {label}: {g['rows_compared_with_raw'] - len(miss)} of "
                       f"{g['rows_compared_with_raw']} rows where a raw detector alarmed"
                       + (f"; missed: {'; '.join(miss)}" if miss else "") + ";")
        for name, miss in g.get("delay_over_1_5x_ks_same_budget", {}).items():
            label = POLICIES[name]
            n = g.get("rows_compared_with_ks_same_budget", 0)
            out.append(f"- delay within 1.5x of KSDrift at the same false-alarm budget (p_val "
                       f"0.001), {label}: {n - len(miss)} of {n} rows where it alarmed"
                       + (f"; missed: {'; '.join(miss)}" if miss else "") + ";")
        if g.get("raw_alarms_at_chance"):
            out.append("- not compared, the raw detector's alarm no earlier than its median "
                       "first false alarm on the no-drift stream (windows): "
                       + "; ".join(g["raw_alarms_at_chance"]) + ";")
    else:
        out.append("- delay within 1.5x of the raw detectors: not checked (not installed);")
    before = g.get("sketch_share_of_raw_before", {})
    out.append("- sketch under 1 % of the raw inputs: " + ", ".join(
        f"{k} {_pct(v)} ({'met' if v < 0.01 else 'MISSED'}"
        + (f"; JSON record before: {_pct(before[k])}" if k in before else "") + ")"
        for k, v in g["sketch_share_of_raw"].items()) + ";")
    out.append("- detected by ours, missed by the mean shift (median delay, ours / mean "
               "shift): " + ", ".join(f"{k} {_fmt(v['ours'])} / {_fmt(v['mean_shift'])}"
                                      for k, v in g["mean_shift_misses"].items()) + ".")
    out.append("")
    return "\n".join(out)
