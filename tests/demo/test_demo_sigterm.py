"""SIGTERM stops ``edgeops demo`` the way Ctrl-C does: every ``finally`` runs.

Python's default SIGTERM ends the process without unwinding, which left the demo's MLflow
server (a child process) running after ``kill``. The demo wraps its run in
:func:`edgeops_sim.demo.sigterm_as_interrupt`; this runs that guard in a child process, sends
the real signal and checks the cleanup ran.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

_CHILD = """
import sys, time
from pathlib import Path
from edgeops_sim.demo import sigterm_as_interrupt
done = Path(sys.argv[1])
guard = sys.argv[2] == "guard"
try:
    if guard:
        with sigterm_as_interrupt():
            print("ready", flush=True)
            time.sleep(30)
    else:
        print("ready", flush=True)
        time.sleep(30)
finally:
    done.write_text("cleaned up")
"""


def _terminate(tmp_path: Path, mode: str) -> tuple[int, bool]:
    done = tmp_path / f"done-{mode}"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(done), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(20)
    time.sleep(0.05)
    return rc, done.exists()


def test_sigterm_runs_the_cleanup_under_the_guard(tmp_path: Path) -> None:
    rc, cleaned = _terminate(tmp_path, "guard")
    assert cleaned, "the finally block did not run on SIGTERM"
    assert rc != 0


def test_without_the_guard_sigterm_skips_the_cleanup(tmp_path: Path) -> None:
    """The control: what the guard exists for (fails if Python ever unwinds on SIGTERM)."""
    rc, cleaned = _terminate(tmp_path, "plain")
    assert rc == -signal.SIGTERM
    assert not cleaned


def test_the_guard_restores_the_previous_handler() -> None:
    from edgeops_sim.demo import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
