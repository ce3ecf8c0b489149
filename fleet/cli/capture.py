"""``edgeops fleet capture start|list|stop|export``: the operator's side of data capture.

A thin shell over the ``/api/v1/captures`` routes (fleet/api/capture_routes.py). Sizes take
``K``/``M``/``G`` suffixes (powers of 1024, :func:`fleet.cli._common.parse_bytes`), ``--until``
a duration (``30m``, ``24h``, ``7d``) or an ISO 8601 time.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option
from edgeops.errors import UsageError
from edgeops.fsutil import atomic_write
from fleet.cli._common import api_client, fleet_options, parse_bytes

__all__ = ["capture", "parse_until"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_until(text: str, now: float) -> float:
    m = _DURATION.match(text.strip())
    if m:
        return now + float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--until {text!r} is neither a duration nor an ISO 8601 time",
                         hint="e.g. --until 24h or --until 2026-12-08T06:00:00+00:00") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _line(c: dict[str, Any]) -> str:
    until = dt.datetime.fromtimestamp(c["until"], dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    extra = (f" samples={c['samples']} bytes={c['bytes']} from={c['devices_sending']}"
             if "samples" in c else "")
    return (f"{c['id']}  {c['status']:<8} {c['selector']:<28} devices={len(c['devices'])} "
            f"rate={c['sample_rate']:g} cap={c['max_bytes_per_device']}/device "
            f"{c['max_bytes_per_day']}/day until={until}{extra}")


@click.group()
def capture() -> None:
    """Opt-in data capture from a cohort, exported for the next build (docs/DRIFT.md).

    \b
    Example:
      edgeops fleet capture start --selector city=lyon --sample-rate 0.05 \\
          --max-bytes-per-device 20M --max-bytes-per-day 5M --until 24h
      edgeops fleet capture export c-1a2b3c4d5e6f7a8b -o live.npz
      edgeops build model.onnx --calibration live.npz ...
    """


@capture.command("start")
@click.option("--selector", required=True, help="Tag selector of the devices, e.g. city=lyon.")
@click.option("--sample-rate", type=float, required=True,
              help="Fraction of served requests sampled, in (0, 1].")
@click.option("--max-bytes-per-device", required=True, help="Bytes per device, whole capture.")
@click.option("--max-bytes-per-day", required=True, help="Bytes per device per UTC day.")
@click.option("--max-sample-bytes", default="64K", show_default=True,
              help="A request larger than this is skipped.")
@click.option("--until", "until_text", required=True, help="Duration (24h) or ISO time.")
@fleet_options
@json_option
def start(selector: str, sample_rate: float, max_bytes_per_device: str, max_bytes_per_day: str,
          max_sample_bytes: str, until_text: str, fleet_url: str, token: str | None,
          as_json: bool) -> None:
    """Open a capture: each selected device gets a signed command stating the bounds.

    \b
    Example:
      edgeops fleet capture start --selector city=lyon --sample-rate 0.05 \\
          --max-bytes-per-device 20M --max-bytes-per-day 5M --until 24h
    """
    body = {"selector": selector, "sample_rate": sample_rate,
            "max_bytes_per_device": parse_bytes(max_bytes_per_device),
            "max_bytes_per_day": parse_bytes(max_bytes_per_day),
            "max_sample_bytes": parse_bytes(max_sample_bytes),
            "until": parse_until(until_text, time.time())}
    out = api_client(fleet_url, token).request("POST", "/api/v1/captures", body=body)
    emit(as_json, out, lambda: f"opened {_line(out)}")


@capture.command("list")
@fleet_options
@json_option
def list_(fleet_url: str, token: str | None, as_json: bool) -> None:
    """Captures, newest first, with samples and bytes received.

    \b
    Example:
      edgeops fleet capture list --json
    """
    out = api_client(fleet_url, token).request("GET", "/api/v1/captures")
    emit(as_json, out, lambda: "\n".join(_line(c) for c in out["items"]) or "no captures")


@capture.command("stop")
@click.argument("capture_id")
@fleet_options
@json_option
def stop(capture_id: str, fleet_url: str, token: str | None, as_json: bool) -> None:
    """Stop a capture now; devices stop sampling, later uploads are refused.

    \b
    Example:
      edgeops fleet capture stop c-1a2b3c4d5e6f7a8b
    """
    out = api_client(fleet_url, token).request("POST", f"/api/v1/captures/{capture_id}/stop")
    emit(as_json, out, lambda: f"stopped {_line(out)}")


@capture.command("export")
@click.argument("capture_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .npz to write (inputs keyed by name, samples first).")
@fleet_options
@json_option
def export(capture_id: str, output: Path, fleet_url: str, token: str | None,
           as_json: bool) -> None:
    """Write the capture's inputs as an .npz for `edgeops build --calibration/--validation`.

    \b
    Example:
      edgeops fleet capture export c-1a2b3c4d5e6f7a8b -o live.npz
      edgeops build model.onnx --calibration live.npz --reference live.npz ...
    """
    import io

    import numpy as np

    data = api_client(fleet_url, token).request("GET", f"/api/v1/captures/{capture_id}/export",
                                             raw=True)
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        shapes = {k: list(z[k].shape) for k in z.files}
    atomic_write(output, data)
    n = next(iter(shapes.values()))[0] if shapes else 0
    emit(as_json, {"output": str(output), "samples": n, "inputs": shapes},
         lambda: f"wrote {output}: {n} samples, inputs {shapes}")
