"""A/B slots: switching rules, recovery, and a real process killed at random instants."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.slots import SlotPointer, SlotStore
from edgeops.errors import BadContentError, ConfigError
from edgeops.runtime import load_runner
from tests.device_agent.bundles import FEATURES, onnx_model
from tests.device_agent.forked_child import Zygote


def install(store: SlotStore, version: int) -> str:
    w = store.begin_install()
    w.write_bytes("model.onnx", onnx_model("affine", float(version)))
    info = w.commit(name="m", version=f"{version}.0.0", target="x86-cpu",
                    model_file="model.onnx")
    store.activate(info.slot)
    store.confirm()
    return info.slot


def test_install_switch_and_rollback(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    assert store.recover() == SlotPointer()
    assert install(store, 1) == "a"
    assert install(store, 2) == "b"
    p = store.pointer()
    assert (p.active, p.previous, p.trial) == ("b", "a", False)
    # the next install reuses the previous slot, which stops being the rollback target first
    w = store.begin_install()
    assert w.slot == "a" and store.pointer().previous is None
    assert store.rollback() is None
    assert store.active() is not None and store.active().version == "2.0.0"  # type: ignore[union-attr]


def test_partial_or_damaged_slots_never_count(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    install(store, 1)
    install(store, 2)
    model = tmp_path / "b" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-3])          # truncated active model
    assert store.recover().active == "a"
    w = store.begin_install()                            # uncommitted: never served
    w.write_bytes("model.onnx", b"half")
    (tmp_path / "pointer.json").write_text("{garbage")
    p = store.recover()
    assert p.active == "a" and store.info("b") is None
    # same size, different bytes: only the digest check catches it
    m = tmp_path / "a" / "model.onnx"
    data = bytearray(m.read_bytes())
    data[-1] ^= 0xFF
    m.write_bytes(bytes(data))
    assert store.recover(check_digests=True).active is None


def test_writer_refuses_escapes_and_mismatches(tmp_path: Path) -> None:
    store = SlotStore(tmp_path)
    w = store.begin_install()
    for bad in ("../evil", "a/b", "slot.json", ".hidden", ""):
        with pytest.raises(ValueError, match="not allowed"):
            w.write_bytes(bad, b"x")
    src = tmp_path / "src.bin"
    src.write_bytes(b"0123456789")
    with pytest.raises(BadContentError, match="larger than"):
        w.write_file("model.onnx", src, "0" * 64, 4)
    with pytest.raises(BadContentError, match="altered"):
        w.write_file("model.onnx", src, "0" * 64, 10)
    assert not (tmp_path / "a" / "model.onnx").exists()
    assert not list(tmp_path.parent.glob("evil*"))
    with pytest.raises(ValueError, match="was not written"):
        w.commit(name="m", version="1.0.0", target="t", model_file="model.onnx")
    with pytest.raises(ConfigError):
        store.activate("a")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["install", "install_trial", "rollback", "recover",
                                 "lose_pointer"]), max_size=12))
def test_any_sequence_keeps_the_invariants(tmp_path_factory: pytest.TempPathFactory,
                                           ops: list[str]) -> None:
    store = SlotStore(tmp_path_factory.mktemp("seq"))
    version = 0
    served: set[int] = set()
    for op in ops:
        if op.startswith("install"):
            version += 1
            w = store.begin_install()
            w.write_bytes("model.onnx", f"v{version}".encode())
            info = w.commit(name="m", version=f"{version}.0.0", target="t",
                            model_file="model.onnx")
            store.activate(info.slot, trial=op == "install_trial")
            if op == "install":
                store.confirm()
            served.add(version)
        elif op == "rollback":
            store.rollback()
        elif op == "lose_pointer":
            (store.root / "pointer.json").unlink(missing_ok=True)
        else:
            store.recover()
        p = store.recover()
        if p.active is not None:
            info = store.info(p.active, check_digests=True)
            assert info is not None and int(info.version.split(".")[0]) in served
        assert p.previous is None or (p.previous != p.active and store.info(p.previous))
        if version and op != "lose_pointer":
            assert p.active is not None


@pytest.mark.slow
def test_killed_at_random_instants_always_restarts_on_a_whole_model(tmp_path: Path) -> None:
    """SIGKILL a real installer process at random points; every restart serves old or new."""
    iterations = int(os.environ.get("EDGEOPS_KILL_ITERATIONS", "60"))
    rng = random.Random(1234)
    store = SlotStore(tmp_path)
    x = np.arange(FEATURES, dtype=np.float32).reshape(1, FEATURES)
    seen_versions: set[int] = set()
    last = 0
    kills = 0
    # Bounded in time without being a timed assertion: on a loaded machine fewer kills fit, but
    # never fewer than MIN_KILLS, and every kill that ran is checked in full.
    deadline = time.monotonic() + 240
    min_kills = min(iterations, 20)
    # Each child is a fork of one process that has imported it already (a real process, killed
    # for real), so a kill costs the random wait, not an interpreter start and its imports.
    with Zygote("tests.device_agent.slot_crash_child") as zygote:
        for i in range(iterations):
            if i >= min_kills and time.monotonic() > deadline:
                break
            child = zygote.start(str(tmp_path), str(i))
            assert child.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.25))
            child.kill()
            kills += 1
            p = store.recover(check_digests=True)
            if i == 0 and p.active is None:
                continue   # killed before the very first install completed: nothing to serve
            assert p.active is not None, f"iteration {i}: no model after a kill"
            info = store.info(p.active, check_digests=True)
            assert info is not None
            version = int(info.version.split(".")[0])
            assert version >= last - 1, "went back further than the previous model"
            runner = load_runner(store.path(p.active, info.model_file), runtime="onnxruntime")
            y = runner.run({"x": x})["y"]
            np.testing.assert_allclose(y, x * version + 1, rtol=1e-6)
            seen_versions.add(version)
            last = version
    # the kills landed at different points: many distinct versions were served (counted
    # against the kills that ran, which are fewer than asked when the time bound cut in)
    assert len(seen_versions) > kills // 4, (len(seen_versions), kills)


@given(st.sampled_from(["a", "b", None]), st.sampled_from(["a", "b", None]), st.booleans(),
       st.integers(0, 2**40))
def test_pointer_round_trip(active: str | None, previous: str | None, trial: bool,
                            gen: int) -> None:
    p = SlotPointer(active, previous, trial, gen)
    assert SlotPointer.from_bytes(p.to_bytes()) == p
