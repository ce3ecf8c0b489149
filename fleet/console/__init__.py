"""The fleet console: a browser UI served by the manager on the API's listener.

The pages are static files (no CDN, no build step) that call the same JSON API as the CLI;
the aggregates they need come from :mod:`fleet.console.queries` through
:mod:`fleet.api.console_routes`, so nothing in the browser ever loads a whole table.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

STATIC_DIR = Path(__file__).parent / "static"
