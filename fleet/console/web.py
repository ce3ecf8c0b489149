"""Routes that serve the console's static files at ``/console/`` (and send ``/`` there).

The pages are plain files shipped in the wheel: nothing is fetched from a CDN, so the console
works on an isolated operations network. Every answer carries a strict Content-Security-Policy
(scripts and styles only from this origin, no inline code), because the page holds an API token
in session storage and must not run anything it did not ship.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from fleet.console import STATIC_DIR

__all__ = ["ASSET_SUFFIXES", "SECURITY_HEADERS", "routes"]

# the static directory is a Python package (so the wheel ships it): serve only the assets
ASSET_SUFFIXES = frozenset({"", ".html", ".css", ".js", ".svg", ".png", ".ico", ".txt"})

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


class _Hardened:
    """Wrap an ASGI app so every response it sends carries :data:`SECURITY_HEADERS`."""

    def __init__(self, app: StaticFiles) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = PurePosixPath(str(scope.get("path", "")))
        if path.suffix not in ASSET_SUFFIXES or "__pycache__" in path.parts:
            await PlainTextResponse("Not Found", status_code=404,
                                    headers=SECURITY_HEADERS)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode("latin-1").lower() not in SECURITY_HEADERS]
                headers += [(k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _to_console(_request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


routes: list[BaseRoute] = [
    Route("/", _to_console, methods=["GET"]),
    Mount("/console", app=_Hardened(StaticFiles(directory=STATIC_DIR, html=True)),
          name="console"),
]
