"""What every command shares: JSON output, one-line errors, progress that --json silences."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["emit", "json_option", "passphrase_from_env", "progress_printer"]

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    """``--json``: machine-readable output on stdout, no progress chatter."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON instead of text.")(f)


def emit(as_json: bool, data: Any, text: str | Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text() if callable(text) else text)


def progress_printer(as_json: bool) -> Callable[[str], None]:
    """Progress lines on stderr when attached to a terminal-ish stream, nothing under --json."""
    if as_json:
        return lambda _msg: None

    def show(msg: str) -> None:
        click.echo(f"  … {msg}", err=True)

    return show


def passphrase_from_env(confirm: bool = False, prompt: str = "Key passphrase") -> bytes:
    """``EDGEOPS_KEY_PASSPHRASE`` for automation; otherwise ask on the terminal."""
    env = os.environ.get("EDGEOPS_KEY_PASSPHRASE")
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        from edgeops.errors import KeyError_

        raise KeyError_("a key passphrase is needed and there is no terminal to ask on",
                        hint="set EDGEOPS_KEY_PASSPHRASE")
    value: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value.encode()
