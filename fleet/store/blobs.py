"""Artifact bytes on disk, addressed by their sha256: ``ROOT/ab/abcdef…`` (content-addressed).

Why apart from the SQL store: a database is the wrong place for model artifacts of hundreds of
megabytes, and content addressing makes writes idempotent (the same bytes land on the same path,
written atomically, so a crash never leaves a half-written blob under a good name). The SQL
``blobs`` table (:mod:`fleet.store._repository`) records which blobs were published; only
those are served.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

from edgeops.errors import UsageError
from edgeops.fsutil import atomic_write

__all__ = ["BlobStore", "is_sha256_hex"]

_HEX = frozenset(string.hexdigits)


def is_sha256_hex(text: str) -> bool:
    """64 hex digits: the only names a blob may have (so none can reach outside the root)."""
    return len(text) == 64 and _HEX.issuperset(text)


class BlobStore:
    """Files under ``root``, one per sha256 digest, in 256 fan-out directories."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest is (or would be) stored."""
        if not is_sha256_hex(sha256):
            raise UsageError(f"{sha256[:80]!r} is not a sha256 digest (64 hex digits)")
        return self.root / sha256[:2] / sha256

    def existing(self, sha256: str) -> Path | None:
        """The blob's path if it is on disk; None otherwise (also for a malformed digest)."""
        if not is_sha256_hex(sha256):
            return None
        p = self.path(sha256)
        return p if p.is_file() else None

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (atomically, once); returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha)
        if not dest.is_file():
            atomic_write(dest, data)
        return sha
