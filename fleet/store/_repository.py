"""Published bundles, the blob index, TUF metadata and blessings in SQL.

The bytes of a blob live in the :class:`fleet.store.blobs.BlobStore` (files by sha256); the
``blobs`` table records which of them were published, and only those are served.
"""


# every value is bound as a parameter.
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError
from fleet.store._base import SqlBase, StoreConflict
from fleet.store.blobs import BlobStore, is_sha256_hex
from fleet.store.models import Blessing, BundleRecord

__all__ = ["RepositoryRows"]


class RepositoryRows(SqlBase):
    """The :class:`fleet.store.roles.RepositoryStore` and ``BlessingStore`` roles."""

    blobs: BlobStore | None

    # -- bundles and blobs -----------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if self.blobs is None:
            raise ConfigError("this store has no data directory for artifacts",
                              hint="open the store with a data_dir (fleet serve --data DIR)")
        return self.blobs.path(sha256)

    def add_blob(self, sha256: str, size: int) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO blobs (sha256, size, added_at) VALUES (?, ?, ?) "
                            "ON CONFLICT (sha256) DO NOTHING", (sha256, size, time.time()))

    def artifact_path(self, sha256: str) -> Path | None:
        """Where the blob with this digest lives, if the store knows it and it is on disk."""
        if self.blobs is None or not is_sha256_hex(sha256):
            return None
        with self._tx() as cur:
            self._exec(cur, "SELECT size FROM blobs WHERE sha256 = ?", (sha256,))
            if cur.fetchone() is None:
                return None
        return self.blobs.existing(sha256)

    def put_bundle(self, record: BundleRecord) -> bool:
        """Store a bundle; False if this exact one exists; StoreConflict if it differs."""
        with self._tx() as cur:
            self._exec(cur, "SELECT manifest FROM bundles WHERE name = ? AND version = ?",
                       (record.name, record.version))
            r = cur.fetchone()
            if r is not None:
                if self._blob(r[0]) == record.manifest:
                    return False
                raise StoreConflict(f"bundle {record.name}@{record.version} is already published "
                                    "with different content")
            self._exec(cur, "INSERT INTO bundles (name, version, manifest, signatures, "
                            "published_at) VALUES (?, ?, ?, ?, ?)",
                       (record.name, record.version, record.manifest, record.signatures,
                        record.published_at))
            for path, (sha, size) in sorted(record.files.items()):
                self._exec(cur, "INSERT INTO bundle_files (name, version, path, sha256, size) "
                                "VALUES (?, ?, ?, ?, ?)", (record.name, record.version, path, sha,
                                                           size))
            return True

    def _bundle(self, cur: Any, r: Sequence[Any]) -> BundleRecord:
        self._exec(cur, "SELECT path, sha256, size FROM bundle_files WHERE name = ? AND "
                        "version = ? ORDER BY path", (r[0], r[1]))
        files = {p: (s, int(n)) for p, s, n in cur.fetchall()}
        return BundleRecord(r[0], r[1], self._blob(r[2]) or b"", self._blob(r[3]) or b"",
                            float(r[4]), files)

    def get_bundle(self, name: str, version: str) -> BundleRecord | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                            "bundles WHERE name = ? AND version = ?", (name, version))
            r = cur.fetchone()
            return self._bundle(cur, r) if r else None

    def list_bundles(self, name: str | None = None) -> list[BundleRecord]:
        with self._tx() as cur:
            if name is None:
                self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                                "bundles ORDER BY name, published_at")
            else:
                self._exec(cur, "SELECT name, version, manifest, signatures, published_at FROM "
                                "bundles WHERE name = ? ORDER BY published_at", (name,))
            rows = cur.fetchall()
            return [self._bundle(cur, r) for r in rows]


    # -- blessings -------------------------------------------------------------------------
    def put_blessing(self, b: Blessing) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO blessings (bundle_name, bundle_version, hardware, passed, "
                            "report, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                            "(bundle_name, bundle_version, hardware) DO UPDATE SET passed = "
                            "excluded.passed, report = excluded.report, created_at = "
                            "excluded.created_at",
                       (b.bundle_name, b.bundle_version, b.hardware, 1 if b.passed else 0,
                        json.dumps(b.report, sort_keys=True, default=str), b.created_at))

    def list_blessings(self, name: str, version: str) -> list[Blessing]:
        with self._tx() as cur:
            self._exec(cur, "SELECT bundle_name, bundle_version, hardware, passed, report, "
                            "created_at FROM blessings WHERE bundle_name = ? AND bundle_version = ? "
                            "ORDER BY hardware", (name, version))
            return [Blessing(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), float(r[5]))
                    for r in cur.fetchall()]

    def has_blessing(self, name: str, version: str, hardware: str) -> bool:
        return any(b.passed and b.hardware == hardware for b in self.list_blessings(name, version))

    # -- TUF metadata ----------------------------------------------------------------------
    def put_metadata(self, items: Sequence[tuple[str, str, int, bytes]]) -> None:
        """(filename, role, version, bytes) rows, all or nothing; same filename is replaced."""
        with self._tx() as cur:
            for filename, role, version, data in items:
                self._exec(cur, "INSERT INTO tuf_metadata (filename, role, version, data, "
                                "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (filename) DO "
                                "UPDATE SET role = excluded.role, version = excluded.version, "
                                "data = excluded.data, created_at = excluded.created_at",
                           (filename, role, version, data, time.time()))

    def get_metadata(self, filename: str) -> bytes | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT data FROM tuf_metadata WHERE filename = ?", (filename,))
            r = cur.fetchone()
            return self._blob(r[0]) if r else None

    def latest_metadata(self, role: str) -> tuple[int, bytes] | None:
        with self._tx() as cur:
            self._exec(cur, "SELECT version, data FROM tuf_metadata WHERE role = ? ORDER BY "
                            "version DESC LIMIT 1", (role,))
            r = cur.fetchone()
            return (int(r[0]), self._blob(r[1]) or b"") if r else None
