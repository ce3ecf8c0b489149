"""A small HTTP client for the fleet API, used by the CLI (stdlib only, no extra dependency).

Errors come back as the manager sent them (``{"error", "hint"}``) mapped onto the EdgeOpsError
tree by status, so the CLI prints the manager's own one-line message; network failures are
:class:`TransportError`.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from edgeops.errors import BadContentError, EdgeOpsError, TransportError, UsageError
from fleet.errors import AuthError, ConflictError, ForbiddenError, NotFoundError

__all__ = ["FleetClient"]

_MAX_ANSWER_BYTES = 64 * 1024 * 1024


class FleetClient:
    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 30.0,
                 ca_file: Path | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"fleet URL {url!r} is not an http(s) URL",
                             hint="pass --fleet http://HOST:PORT or set EDGEOPS_FLEET")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._ctx = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, data: bytes | None = None, raw: bool = False,
                content_type: str = "application/json") -> Any:
        url = self.url + path
        if query:
            items = [(k, str(x)) for k, v in query.items() if v is not None
                     for x in (v if isinstance(v, list | tuple) else [v])]
            if items:
                url += "?" + urllib.parse.urlencode(items)
        payload = data if data is not None else (
            json.dumps(body).encode() if body is not None else None)
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=payload, method=method, headers=headers)  # noqa: S310 - scheme checked in __init__
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ctx) as resp:  # noqa: S310
                answer = resp.read(_MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raise self._error(exc.code, exc.read(64 * 1024)) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"cannot reach the fleet manager at {self.url}: {reason}"
                                 ) from None
        if raw:
            return answer
        try:
            return json.loads(answer) if answer else None
        except ValueError:
            raise TransportError("the fleet manager sent a non-JSON answer") from None

    @staticmethod
    def _error(status: int, body: bytes) -> EdgeOpsError:
        try:
            d = json.loads(body)
            message, hint = str(d.get("error")), d.get("hint")
        except (ValueError, AttributeError):
            message, hint = body.decode("utf-8", "replace")[:200] or f"HTTP {status}", None
        cls: type[EdgeOpsError] = {401: AuthError, 403: ForbiddenError, 404: NotFoundError,
                                   409: ConflictError, 400: UsageError,
                                   422: BadContentError}.get(status, TransportError)
        err = cls(message, hint if isinstance(hint, str) and hint else None)
        if cls is UsageError:
            err.exit_code = 1      # the server rejected it: not a local command-line mistake
        return err

    # -- API -------------------------------------------------------------------------------
    def devices(self, **query: Any) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/devices", query=query))

    def device(self, device_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/devices/{_q(device_id)}"))

    def enrol(self, device_id: str, device_class: str, target: str,
              tags: dict[str, str]) -> dict[str, Any]:
        return dict(self.request("POST", "/api/v1/devices", body={
            "id": device_id, "class": device_class, "target": target, "tags": tags}))

    def telemetry(self, device_id: str, **query: Any) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/devices/{_q(device_id)}/telemetry",
                                 query=query))

    def aggregate(self, **query: Any) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/telemetry/aggregate", query=query))

    def drift(self, **query: Any) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/drift", query=query))

    def bundles(self, name: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/bundles", query={"name": name}))

    def current_targets(self) -> bytes | None:
        try:
            return bytes(self.request("GET", "/api/v1/repository/targets", raw=True))
        except NotFoundError:
            return None

    def upload(self, bundle: Path) -> dict[str, Any]:
        return dict(self.request("POST", "/api/v1/uploads", data=Path(bundle).read_bytes(),
                                 content_type="application/octet-stream"))

    def publish(self, upload: str, targets: bytes,
                deltas: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"upload": upload, "targets": targets.decode("utf-8")}
        if deltas:
            body["deltas"] = deltas          # TUF path -> upload id
        return dict(self.request("POST", "/api/v1/bundles", body=body))

    def deployed_versions(self, name: str) -> list[dict[str, Any]]:
        """Versions of ``name`` active on devices, per target, most devices first."""
        return list(self.request("GET", f"/api/v1/bundles/{_q(name)}/deployed")["items"])

    def bundle_manifest(self, name: str, version: str) -> bytes:
        """A published bundle's manifest (as canonical JSON bytes)."""
        from edgeops.bundle.manifest import canonical_json

        b = self.request("GET", f"/api/v1/bundles/{_q(name)}/{_q(version)}")
        return canonical_json(b["manifest"])

    def target_file(self, path: str, sha256: str) -> bytes:
        """A published TUF target's bytes (checked against ``sha256`` by the caller)."""
        d, _, base = path.rpartition("/")
        return bytes(self.request("GET", f"/tuf/targets/{d}/{sha256}.{base}", raw=True))

    def deploy(self, name: str, version: str | None, selector: str,
               strategy: dict[str, Any], *, alias: str | None = None) -> dict[str, Any]:
        ref = {"version": version} if alias is None else {"alias": alias}
        return dict(self.request("POST", "/api/v1/deployments", body={
            "name": name, **ref, "selector": selector, "strategy": strategy}))

    def aliases(self, name: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/aliases", query={"name": name}))

    def alias(self, name: str, alias: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/bundles/{_q(name)}/aliases/{_q(alias)}"))

    def set_alias(self, name: str, alias: str, version: str,
                  rollout: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.request("PUT", f"/api/v1/bundles/{_q(name)}/aliases/{_q(alias)}",
                                 body={"version": version, "rollout": rollout}))

    def deployments(self, status: list[str] | None = None) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/deployments", query={"status": status}))

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/deployments/{_q(deployment_id)}"))

    def deployment_devices(self, deployment_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/deployments/{_q(deployment_id)}/devices"))

    def act(self, deployment_id: str, verb: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/v1/deployments/{_q(deployment_id)}/{verb}"))

    def create_token(self, role: str, name: str | None) -> dict[str, Any]:
        return dict(self.request("POST", "/api/v1/tokens", body={"role": role, "name": name}))

    def tokens(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/tokens"))

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/tokens/{_q(token_id)}"))

    def bless(self, name: str, version: str, report: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/v1/bundles/{_q(name)}/{_q(version)}/blessings",
                                 body=report))


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
