"""Text for ``edgeops fleet drift``: one line per group, then the features that drifted.

Pure: the JSON the API returns (fleet/drift/service.py) in, lines out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render"]


def _side(name: str, side: Mapping[str, Any]) -> list[str]:
    out = []
    for f in side.get("features", []):
        if f.get("drift"):
            ks = "" if f.get("ks") is None else f" ks={f['ks']:.3f}"
            out.append(f"    {name}: {f['feature']} p_adj={f['p_adjusted']:.2e} "
                       f"psi={f['psi']:.3f} js={f['js']:.3f}{ks} n={f['n_live']}")
    return out


def render(status: Mapping[str, Any]) -> str:
    p = status.get("policy", {})
    lines = [f"policy: alpha={p.get('alpha')} ({p.get('correction')}, {p.get('test')}), "
             f"alarm after {p.get('persistence')} window{'' if p.get('persistence') == 1 else 's'}"
             f", min {p.get('min_samples')} samples; false alarms <= "
             f"{p.get('false_alarm_rate_per_window', 0):.1e} per window and side"]
    groups = [g for key in ("deployments", "cohorts", "devices") for g in status.get(key, [])]
    if not groups:
        lines.append("no drift sketches yet (bundles built with real validation data send "
                     "them once a window closes)")
    for g in groups:
        lines.append(f"{g['group']:<32} {g['bundle']:<28} {g['status']:<18} "
                     f"data={g['data_drift']['status']} "
                     f"prediction={g['prediction_drift']['status']} "
                     f"devices={g['devices']} windows={g['windows']}")
        lines += _side("data", g["data_drift"]) + _side("prediction", g["prediction_drift"])
    for c in status.get("concept", []):
        last = c.get("latest") or {}
        acc, ref = last.get("accuracy"), c.get("reference_accuracy")
        lines.append(f"{c['group']:<32} {c['bundle']:<28} {'concept=' + c['status']:<18} "
                     f"accuracy={'-' if acc is None else f'{acc:.3f}'} "
                     f"reference={'-' if ref is None else f'{ref:.3f}'} "
                     f"n={last.get('total', 0)} devices={c['devices']} windows={c['windows']}")
    return "\n".join(lines)
