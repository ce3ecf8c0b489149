"""Kill-test children started by fork from one prepared process, not by a new interpreter.

The kill tests (``test_slots``, ``test_installer``) SIGKILL a real process at random instants,
and their value is in how many instants they try. A fresh ``python -m CHILD`` spends about a
second importing ONNX, TUF and numpy before it does anything worth killing; here one *zygote*
process imports the child module once and forks a copy of itself per kill. The copy runs the
child module exactly as ``python -m CHILD ARGS`` would (``runpy`` with ``__main__``), in its own
process, so the kill is as real as before: nothing in the parent or the zygote is shared with it
but the already-imported modules.

Protocol on the zygote's pipes: the parent writes one JSON list of arguments per line on its
stdin; the zygote flushes, forks, and the copy says ``pid N`` and then whatever the child module
prints (``ready``, ...). The zygote waits for the copy and says ``reaped`` once it is gone, so
everything the copy wrote comes before that line. Run as ``python -m
tests.device_agent.forked_child MODULE``.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["ForkedChild", "Zygote"]

REPO = Path(__file__).resolve().parents[2]


class ForkedChild:
    """One forked copy: its pid and the output it shares with the zygote."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid

    def readline(self) -> bytes:
        return self.zygote.readline()

    def kill(self) -> bytes:
        """SIGKILL the copy and wait until it is reaped; what it printed meanwhile comes back."""
        os.kill(self.pid, signal.SIGKILL)
        rest = []
        while (line := self.zygote.readline()) != b"reaped\n":
            assert line, "the zygote died"
            rest.append(line)
        self.zygote.live = None
        return b"".join(rest)


class Zygote:
    """A process that has imported ``module`` and forks a copy to run it per :meth:`start`."""

    def __init__(self, module: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.device_agent.forked_child", module], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self.live: ForkedChild | None = None     # the copy not yet killed, if any
        assert self.readline() == b"zygote ready\n"

    def readline(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def start(self, *args: str) -> ForkedChild:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(list(args)).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.readline()
        assert line.startswith(b"pid "), line
        self.live = ForkedChild(self, int(line.split()[1]))
        return self.live

    def close(self) -> None:
        """Kill a copy left running (a test that failed midway), then end the zygote."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.live is not None:
            try:
                os.kill(self.live.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _serve(module: str) -> None:
    importlib.import_module(module)          # the expensive part, once
    out = sys.stdout
    out.write("zygote ready\n")
    out.flush()
    for line in sys.stdin:
        args = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:                          # the copy: run the child as `python -m` would
            code = 0
            try:
                out.write(f"pid {os.getpid()}\n")
                out.flush()
                sys.argv = [module, *args]
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                out.flush()
                os._exit(code)
        os.waitpid(pid, 0)
        out.write("reaped\n")
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
