"""The plumbing every SQL role module shares: a connection, one lock, a dialect, ``?`` SQL.

Why a base of its own: the role mixins (:mod:`._devices`, :mod:`._telemetry`,
:mod:`._repository`, :mod:`._deployments`, :mod:`._access`, :mod:`._aggregates`,
:mod:`._aliases`) each hold one role's SQL and need only these few methods; the backends
(:mod:`.sqlite`, :mod:`.postgres`) override ``_tx`` and ``_sql``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edgeops.errors import ConfigError

__all__ = ["Dialect", "SqlBase", "StoreConflict", "num_or_none"]


class StoreConflict(ConfigError):
    """A write would contradict what is stored (same key, different content)."""

    default_hint = "pick a new name/version; published content is immutable"


@dataclass(frozen=True)
class Dialect:
    name: str
    blob: str
    real: str
    serial_pk: str
    for_update: str


def num_or_none(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def bytes_or_none(v: Any) -> bytes | None:
    return bytes(v) if v is not None else None


class SqlBase:
    """Connection, lock and dialect; every public method of a role is one ``_tx()``."""

    dialect: Dialect
    _conn: Any
    _lock: threading.RLock

    def _sql(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover - makes this a generator for contextmanager

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _blob(self, v: Any) -> bytes | None:
        return bytes_or_none(v)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as cur:
            self._exec(cur, sql, params)
            return [tuple(r) for r in cur.fetchall()]
