"""Child process for the kill test: installs, activates, confirms and rolls back forever.

Run as ``python -m tests.device_agent.slot_crash_child SLOTS_DIR SEED``; the parent SIGKILLs it
at a random instant and checks the slots. Each version N installs the real ONNX model
y = x·N + 1, so the parent can tell which model it serves and that it is whole.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from device_agent.slots import SlotStore
from tests.device_agent.bundles import onnx_model

PADDING_BYTES = 512 * 1024   # widens the window in which a kill lands mid-write


def main(root: str, seed: str) -> None:
    rng = random.Random(int(seed))
    store = SlotStore(Path(root))
    p = store.recover()
    active = store.info(p.active) if p.active else None
    version = int(active.version.split(".")[0]) if active else 0
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        version += 1
        w = store.begin_install()
        w.write_bytes("model.onnx", onnx_model("affine", float(version)))
        w.write_bytes("padding.bin", rng.randbytes(PADDING_BYTES))
        info = w.commit(name="m", version=f"{version}.0.0", target="x86-cpu",
                        model_file="model.onnx")
        store.activate(info.slot, trial=True)
        if rng.random() < 0.3:
            store.rollback()
        else:
            store.confirm()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
