"""The CLIs in this process, through click's ``CliRunner`` isolation: exit code, stdout, stderr.

A subprocess costs an interpreter start and every heavy import again (seconds each on a busy
2-core machine); most CLI tests check behaviour (exit codes, one-line errors, ``--json``), which
is the same in-process. ``CliRunner.isolation`` swaps stdin/stdout/stderr and ``os.environ`` for
the call and restores them after, and ``edgeops.cli.main.main`` keeps its own error-to-exit-code
mapping (``CliRunner.invoke`` would bypass it). What only a real process shows (the installed
console scripts start, nothing leaks into a traceback on a real stderr) is covered by one
subprocess smoke test per entry point: ``edgeops`` in tests/fleet/test_cli.py, ``edgeops-agent``
in tests/device_agent/test_cli.py, ``edgeops-tuf-client`` in tests/device_agent/test_tuf_cli.py
(plus the tests whose subject is a process: servers stopped by signals, crash children, the
hardware suite run as a device runs it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner

__all__ = ["CliResult", "run_edgeops", "run_main"]


@dataclass
class CliResult:
    """What a caller of a CLI sees; field names as ``subprocess.CompletedProcess``."""

    returncode: int
    stdout: str
    stderr: str

    # the names tests/converters and tests/fleet used for the same thing
    @property
    def code(self) -> int:
        return self.returncode

    @property
    def out(self) -> str:
        return self.stdout

    @property
    def err(self) -> str:
        return self.stderr


def run_main(main: Callable[[list[str]], Any], args: list[str], *,
             env: Mapping[str, str | None] | None = None, input: str | None = None,
             clear_env_prefix: str | None = None) -> CliResult:
    """Call ``main(args)`` with isolated streams and ``env`` overrides (None unsets a variable).

    ``clear_env_prefix`` unsets every inherited variable with that prefix first, as a test that
    built its subprocess environment from scratch did.
    """
    overrides: dict[str, str | None] = {}
    if clear_env_prefix:
        overrides.update({k: None for k in os.environ if k.startswith(clear_env_prefix)})
    overrides.update(env or {})
    with CliRunner().isolation(input=input, env=overrides) as (out, err, _):
        try:
            rc = main(args)
            code = rc if isinstance(rc, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                err.write(exc.code.encode() + b"\n")
        sys.stdout.flush()      # what was written without a flush (print, pytest's terminal)
        sys.stderr.flush()
        return CliResult(code, out.getvalue().decode(errors="replace"),
                         err.getvalue().decode(errors="replace"))


def run_edgeops(*args: object, env: Mapping[str, str | None] | None = None,
                input: str | None = None, clear_env_prefix: str | None = None) -> CliResult:
    """``edgeops ARGS`` in this process."""
    from edgeops.cli.main import main

    return run_main(main, [str(a) for a in args], env=env, input=input,
                    clear_env_prefix=clear_env_prefix)
