"""DVC's hash for a data path, read from its ``PATH.dvc`` file without DVC installed.

A ``.dvc`` file is small YAML written by ``dvc add``; the one field we need is the first
``outs`` entry's ``md5`` (DVC 3 also writes ``hash: md5``). Directories carry a ``.dir``
suffix on the md5, which we keep: it is what ``dvc`` itself shows and compares.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["dvc_md5"]

_MD5 = re.compile(r"^\s*-?\s*md5:\s*['\"]?([0-9a-f]{32}(?:\.dir)?)['\"]?\s*$", re.MULTILINE)
_MAX_DVC_FILE = 64 * 1024


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC recorded for ``path`` (``path.dvc`` beside it), or None when untracked."""
    dvc_file = path.with_name(path.name + ".dvc")
    try:
        if not dvc_file.is_file() or dvc_file.stat().st_size > _MAX_DVC_FILE:
            return None
        text = dvc_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = _MD5.search(text)
    return m.group(1) if m else None
