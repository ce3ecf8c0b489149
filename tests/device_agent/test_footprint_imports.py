"""The agent's runtime path never imports the big ``onnx`` package, and imports lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.device_agent.bundles import Fleet, build_bundle, bundle_parts

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from pathlib import Path
import numpy as np
import device_agent.core, device_agent.cli, device_agent.installer, device_agent.policy
before = {m: m in sys.modules for m in ("onnxruntime", "http.server", "ai_edge_litert")}
from device_agent.inference import InferenceService
from device_agent.slots import SlotStore
store = SlotStore(Path(sys.argv[1]))
svc = InferenceService()
svc.load_slot(store, store.active())
svc.predict({"x": np.ones((1, 4), np.float32)})
import device_agent.local_api
print(json.dumps({"before": before, "onnx": "onnx" in sys.modules,
                  "litert": "ai_edge_litert" in sys.modules}))
"""


def test_no_onnx_and_lazy_runtimes(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> None:
    parts = bundle_parts(build_bundle(bundle_dir, fleet))
    store_dir = tmp_path / "slots"
    from device_agent.slots import SlotStore

    store = SlotStore(store_dir)
    w = store.begin_install()
    w.write_bytes("manifest.json", parts.manifest)
    w.write_bytes("model.onnx", parts.artifact)
    info = w.commit(name="classifier", version="1.0.0", target="x86-cpu",
                    model_file="model.onnx")
    store.activate(info.slot)
    r = subprocess.run([sys.executable, "-c", PROBE, str(store_dir)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["before"] == {"onnxruntime": False, "http.server": False,
                             "ai_edge_litert": False}
    assert out["onnx"] is False and out["litert"] is False


UPDATE_PROBE = """
import json, sys
import device_agent.daemon
idle = {m: m in sys.modules for m in ("tuf.ngclient", "urllib3", "device_agent.tuf_update")}
from device_agent.tuf_update import TufClient, fetch_bundle
print(json.dumps({"idle": idle, "loaded": "tuf.ngclient" in sys.modules}))
"""


def test_update_machinery_loads_with_the_first_update() -> None:
    """An agent that has not updated holds no ngclient/urllib3; the first update loads them."""
    r = subprocess.run([sys.executable, "-c", UPDATE_PROBE], cwd=REPO, capture_output=True,
                       text=True, timeout=120, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["idle"] == {"tuf.ngclient": False, "urllib3": False,
                           "device_agent.tuf_update": False}
    assert out["loaded"] is True
