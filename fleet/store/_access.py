"""API tokens (hashed) and the manager's settings in SQL.
"""


# every value is bound as a parameter.
from __future__ import annotations

from fleet.store._base import SqlBase
from fleet.store.models import TokenRecord

__all__ = ["SettingRows", "TokenRows"]


class TokenRows(SqlBase):
    """The :class:`fleet.store.roles.TokenStore` role."""

    def add_token(self, token_hash: str, role: str, name: str, now: float) -> TokenRecord:
        rec = TokenRecord(token_hash[:16], role, name, now)
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO tokens (token_hash, token_id, role, name, created_at) "
                            "VALUES (?, ?, ?, ?, ?)", (token_hash, rec.token_id, role, name, now))
        return rec

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT token_id, role, name, created_at, revoked FROM tokens WHERE "
                            "token_hash = ?", (token_hash,))
            r = cur.fetchone()
            return TokenRecord(r[0], r[1], r[2], float(r[3]), bool(r[4])) if r else None

    def list_tokens(self) -> list[TokenRecord]:
        with self._tx() as cur:
            self._exec(cur, "SELECT token_id, role, name, created_at, revoked FROM tokens "
                            "ORDER BY created_at")
            return [TokenRecord(r[0], r[1], r[2], float(r[3]), bool(r[4]))
                    for r in cur.fetchall()]

    def revoke_token(self, token_id: str) -> bool:
        with self._tx() as cur:
            self._exec(cur, "UPDATE tokens SET revoked = 1 WHERE token_id = ?", (token_id,))
            return bool(cur.rowcount == 1)



class SettingRows(SqlBase):
    """The :class:`fleet.store.roles.SettingsStore` role."""

    def get_setting(self, key: str) -> str | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT value FROM settings WHERE key = ?", (key,))
            r = cur.fetchone()
            return str(r[0]) if r else None

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) "
                            "DO UPDATE SET value = excluded.value", (key, value))
