"""device_agent.memory: freed heap goes back to the OS (glibc), and nothing happens elsewhere.

Each case runs in a fresh interpreter: the allocator's thresholds are process-wide and this test
process's heap history would blur the numbers.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")

_RSS = """
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
"""

# Freeing a 4 MiB block raises glibc's dynamic mmap threshold to 4 MiB and its trim threshold
# to 8 MiB; 7 MiB of 1 MiB blocks then come from the heap and, freed, stay resident.
_DYNAMIC = _RSS + """
import json, sys
from device_agent.memory import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tuned" else None
big = bytearray(4 << 20); del big
blocks = [bytearray(1 << 20) for _ in range(7)]
held = rss_mb()
del blocks
print(json.dumps({"tuned": tuned, "kept_mb": rss_mb() - held + 7}))
"""

# Free blocks below a live one at the heap's top are only returned by malloc_trim.
_HOLE = _RSS + """
import json
from device_agent.memory import release_free_memory
blocks = [bytes(60_000) for _ in range(1500)]
pin = bytes(60_000)
del blocks
before = rss_mb()
ok = release_free_memory()
print(json.dumps({"ok": ok, "released_mb": before - rss_mb()}))
"""


def _run(code: str, *args: str) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                       text=True, timeout=60, check=True)
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


@glibc
def test_tuned_allocator_does_not_keep_freed_blocks() -> None:
    default = _run(_DYNAMIC, "default")
    tuned = _run(_DYNAMIC, "tuned")
    assert tuned["tuned"] is True
    # default glibc keeps the 7 MiB it freed; with fixed thresholds they were mapped and unmapped
    assert default["kept_mb"] > 5
    assert tuned["kept_mb"] < 2


@glibc
def test_release_free_memory_returns_a_hole_below_the_top() -> None:
    out = _run(_HOLE)
    assert out["ok"] is True
    assert out["released_mb"] > 40  # about 86 MiB of freed 60 KB blocks under one live block


def test_not_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from device_agent import memory

    memory._glibc.cache_clear()
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    try:
        assert memory.tune_allocator() is False
        assert memory.release_free_memory() is False
    finally:
        memory._glibc.cache_clear()


@glibc
def test_daemon_entry_point_tunes_and_model_swap_releases(monkeypatch: pytest.MonkeyPatch) -> None:
    """run() tunes the allocator before it builds the agent; load_slot trims after a swap."""
    from device_agent import daemon, inference

    calls: list[str] = []

    def record(name: str) -> bool:
        calls.append(name)
        return True

    monkeypatch.setattr(daemon, "tune_allocator", lambda: record("tune"))
    monkeypatch.setattr(inference, "release_free_memory", lambda: record("release"))

    class Boom(daemon.Agent):
        def __init__(self, *a: object, **k: object) -> None:
            calls.append("agent")
            from edgeops.errors import ConfigError
            raise ConfigError("stop here", hint="test")

    monkeypatch.setattr(daemon, "Agent", Boom)
    assert daemon.run(object()) != 0  # type: ignore[arg-type]
    assert calls == ["tune", "agent"]
    svc = inference.InferenceService()
    svc.load_slot(None, None)  # type: ignore[arg-type]  # None: unload, then trim
    assert calls[-1] == "release"
