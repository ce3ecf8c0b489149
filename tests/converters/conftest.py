"""Fixtures for converter tests: a key store in a temp EDGEOPS_HOME and an in-process CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeops.keys import ROLES, KeyStore

PASSPHRASE = "converter-tests"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def _keys_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("edgeops-home")
    store = KeyStore(home)
    for role in ROLES:
        store.generate(role, PASSPHRASE.encode())
    return home


@pytest.fixture
def keys_home(_keys_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """EDGEOPS_HOME with all keys (real Ed25519, targets key encrypted) and the passphrase set."""
    monkeypatch.setenv("EDGEOPS_HOME", str(_keys_home))
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE)
    yield _keys_home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``edgeops ARGS`` in-process; returns exit code, stdout and stderr."""
    from edgeops.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@contextmanager
def cheapest_bit_split() -> Iterator[None]:
    """x86-cpu builds made inside try only the first bit-split policy (``POLICIES[0]``, the
    previous default: 7-bit weights everywhere), still clamped and proved exact by the checker.

    For tests whose subject is not the split choice (a real model's intake and one-line stop,
    a refusal's wording): by default each of the four policies is quantised and validated,
    about a fifth of a zoo build. The choice itself is tested in quant/test_x86_bits.py and
    measured by benchmarks/x86_bit_split.py."""
    from converters import x86_bits

    every = x86_bits.candidates

    def first(*args, **kwargs):  # type: ignore[no-untyped-def]
        splits = every(*args, **kwargs)
        policy = next(iter(splits))
        return {policy: splits[policy]}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(x86_bits, "candidates", first)
        yield


def listing(directory: Path) -> list[str]:
    """Every file under ``directory`` (hidden temp files included), for 'nothing written'."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
