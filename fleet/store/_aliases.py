"""Bundle aliases: ``NAME@champion`` names a published version, as MLflow aliases name model
versions; moving one is recorded (who, when, from which version, which rollout it started).

Written once in the same portable ``?`` SQL as :mod:`fleet.store._sql`, which mixes this in.
"""

# ruff: noqa: S608 - SQL text is assembled only from constant fragments and "?" placeholders.
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleet.store._base import SqlBase
from fleet.store.models import AliasRecord

__all__ = ["AliasRecords"]

_COLS = "name, alias, version, moved_at, moved_by, deployment_id"


def _alias(r: Sequence[Any], previous: str | None = None) -> AliasRecord:
    return AliasRecord(r[0], r[1], r[2], float(r[3]), r[4], r[5], previous)


class AliasRecords(SqlBase):
    """The alias table and its move history; the SQL store supplies the plumbing."""

    def set_alias(self, record: AliasRecord) -> AliasRecord:
        """Point the alias at ``record.version``, append the move; returns it with ``previous``."""
        with self._tx() as cur:
            self._exec(cur, "SELECT version FROM bundle_aliases WHERE name = ? AND alias = ?",
                       (record.name, record.alias))
            row = cur.fetchone()
            previous = row[0] if row else None
            params = (record.name, record.alias, record.version, record.moved_at,
                      record.moved_by, record.deployment_id)
            self._exec(cur, f"INSERT INTO bundle_aliases ({_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, "
                            "moved_at = excluded.moved_at, moved_by = excluded.moved_by, "
                            "deployment_id = excluded.deployment_id", params)
            self._exec(cur, f"INSERT INTO bundle_alias_moves ({_COLS}, previous) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (*params, previous))
        return AliasRecord(*params, previous=previous)

    def get_alias(self, name: str, alias: str) -> AliasRecord | None:
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_COLS} FROM bundle_aliases WHERE name = ? AND alias = ?",
                       (name, alias))
            r = cur.fetchone()
            return _alias(r) if r else None

    def list_aliases(self, name: str | None = None) -> list[AliasRecord]:
        sql = f"SELECT {_COLS} FROM bundle_aliases"
        params: tuple[Any, ...] = ()
        if name is not None:
            sql, params = sql + " WHERE name = ?", (name,)
        with self._tx() as cur:
            self._exec(cur, sql + " ORDER BY name, alias", params)
            return [_alias(r) for r in cur.fetchall()]

    def alias_moves(self, name: str, alias: str, limit: int = 100) -> list[AliasRecord]:
        """Moves of one alias, newest first."""
        with self._tx() as cur:
            self._exec(cur, f"SELECT {_COLS}, previous FROM bundle_alias_moves WHERE name = ? "
                            "AND alias = ? ORDER BY id DESC LIMIT ?",
                       (name, alias, max(1, min(limit, 1000))))
            return [_alias(r, r[6]) for r in cur.fetchall()]
