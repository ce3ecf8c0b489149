"""The manager's HTTP API under attack: no token, bad tokens, too-low roles, unsigned publishes.

The real ``fleet.server.FleetServer`` (SQLite store, real keys, TUF repository) served by a real
uvicorn on loopback; requests are raw HTTP so every status code is observed as a client sees it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from tests.edgeops.bundles import PASSPHRASE, make_bundle, make_keystore
from tests.security._services import serve_app


@dataclass
class Api:
    url: str
    tokens: dict[str, str]
    keys: KeyStore
    tmp: Path

    def call(self, method: str, path: str, token: str | None = None, body: object = None,
             data: bytes | None = None, header: str | None = None) -> tuple[int, dict]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if header is not None:
            headers["Authorization"] = header
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(self.url + path, data=data, method=method,  # noqa: S310
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback
                raw = r.read()
                return r.status, json.loads(raw) if raw[:1] in (b"{", b"[") else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw[:1] == b"{" else {}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from fleet.server import FleetServer, ServeOptions

    tmp = tmp_path_factory.mktemp("api")
    keys = make_keystore(tmp / "home")
    server = FleetServer(ServeOptions(db=f"sqlite:///{tmp / 'fleet.db'}", data=tmp / "data",
                                      keys_home=keys.home, listen="127.0.0.1:0"))
    assert server.admin_token
    try:
        with serve_app(server.app) as url:
            a = Api(url, {"admin": server.admin_token}, keys, tmp)
            for role in ("viewer", "operator", "publisher"):
                code, out = a.call("POST", "/api/v1/tokens", a.tokens["admin"],
                                   {"role": role, "name": f"test-{role}"})
                assert code in (200, 201), out
                a.tokens[role] = out["token"]
            yield a
    finally:
        server.stop()


PROTECTED = [("GET", "/api/v1/devices"), ("POST", "/api/v1/devices"),
             ("POST", "/api/v1/deployments"), ("POST", "/api/v1/uploads"),
             ("POST", "/api/v1/bundles"), ("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens")]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_unauthenticated_calls_are_refused(api: Api, method: str, path: str, attack) -> None:
    code, out = api.call(method, path, body={} if method == "POST" else None)
    assert code == 401 and out["error"]
    attack(f"unauthenticated {method} {path}", "401", f"{code} {out['error'][:40]}")


@pytest.mark.parametrize("header", ["Bearer eot_not-a-real-token", "Basic YWRtaW46YWRtaW4=",
                                    "Bearer", "Bearer " + "x" * 300])
def test_bad_credentials_are_refused(api: Api, header: str) -> None:
    code, out = api.call("GET", "/api/v1/devices", header=header)
    assert code == 401 and out["error"]


@pytest.mark.parametrize("role, method, path, body", [
    ("viewer", "POST", "/api/v1/devices", {"device_id": "cam-9", "device_class": "camera",
                                           "target": "x86-cpu"}),
    ("viewer", "POST", "/api/v1/deployments", {"name": "tiny", "version": "1.0.0"}),
    ("viewer", "POST", "/api/v1/uploads", None),
    ("operator", "POST", "/api/v1/uploads", None),
    ("operator", "POST", "/api/v1/bundles", {"upload": "x", "targets": "{}"}),
    ("publisher", "POST", "/api/v1/tokens", {"role": "admin"}),
    ("publisher", "GET", "/api/v1/tokens", None),
])
def test_wrong_role_is_refused(api: Api, role: str, method: str, path: str, body: object,
                               attack) -> None:
    data = b"not a bundle" if path.endswith("uploads") else None
    code, out = api.call(method, path, api.tokens[role], body=body, data=data)
    assert code == 403 and role in out["error"]
    attack(f"{role} token: {method} {path}", "403", f"{code} {out['error'][:40]}")


def test_viewer_can_read(api: Api) -> None:
    """Control: the same token is accepted where its role suffices."""
    code, out = api.call("GET", "/api/v1/devices", api.tokens["viewer"])
    assert code == 200 and "items" in out


def test_revoked_token_is_refused(api: Api, attack) -> None:
    code, out = api.call("POST", "/api/v1/tokens", api.tokens["admin"],
                         {"role": "operator", "name": "leaked"})
    token, token_id = out["token"], out["token_id"]
    assert api.call("GET", "/api/v1/devices", token)[0] == 200
    assert api.call("DELETE", f"/api/v1/tokens/{token_id}", api.tokens["admin"])[0] == 200
    code, out = api.call("GET", "/api/v1/devices", token)
    assert code == 401 and "revoked" in out["error"]
    attack("revoked API token", "401", f"{code} {out['error'][:40]}")


def _publish(api: Api, bundle: Path, targets_signer: object) -> tuple[int, dict]:
    from fleet.repository import sign_targets_update

    root = Metadata[Root].from_file(str(root_path(api.keys)))
    from fleet.client import FleetClient

    cur = FleetClient(api.url, api.tokens["viewer"]).current_targets()
    targets = sign_targets_update(cur, read_bundle(bundle), root, targets_signer)  # type: ignore[arg-type]
    code, up = api.call("POST", "/api/v1/uploads", api.tokens["publisher"],
                        data=bundle.read_bytes())
    assert code in (200, 201), up
    return api.call("POST", "/api/v1/bundles", api.tokens["publisher"],
                    {"upload": up["upload"], "targets": targets.decode()})


def _targets_now(api: Api) -> bytes | None:
    """The repository's signed timestamp (None before the first publish)."""
    try:
        with urllib.request.urlopen(api.url + "/tuf/metadata/timestamp.json",  # noqa: S310
                                    timeout=10) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def test_publisher_with_a_foreign_targets_key_is_refused(api: Api, attack) -> None:
    before = _targets_now(api)
    bundle = make_bundle(api.tmp / "b-foreign-tuf", api.keys, version="9.0.0", seed=9)
    code, out = _publish(api, bundle, CryptoSigner.generate_ed25519())
    assert code in (403, 422) and out["error"]
    assert _targets_now(api) == before      # nothing new was signed or announced
    attack("publish with targets signed by a foreign key", "refused, repo unchanged",
           f"{code} {out['error'][:40]}")


def test_publisher_with_a_foreign_signed_bundle_is_refused(api: Api, attack) -> None:
    before = _targets_now(api)
    evil_keys = make_keystore(api.tmp / "evil-home")
    bundle = make_bundle(api.tmp / "b-foreign-bundle", evil_keys, version="9.1.0", seed=9)
    code, out = _publish(api, bundle, api.keys.signer("targets", PASSPHRASE))
    assert code in (403, 422) and out["error"]
    assert _targets_now(api) == before
    attack("publish a bundle signed by a foreign key", "refused, repo unchanged",
           f"{code} {out['error'][:40]}")


def test_legitimate_publish_is_accepted(api: Api) -> None:
    """Control: the right role with the right keys publishes."""
    before = _targets_now(api)
    bundle = make_bundle(api.tmp / "b-good", api.keys, version="1.0.0", seed=1)
    code, out = _publish(api, bundle, api.keys.signer("targets", PASSPHRASE))
    assert code in (200, 201), out
    assert _targets_now(api) != before


def test_tokens_are_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.call("GET", "/api/v1/devices", "eot_wrong-secret-value")
    api.call("GET", "/api/v1/tokens", api.tokens["publisher"])
    api.call("GET", "/api/v1/devices", api.tokens["viewer"])
    _, out = api.call("POST", "/api/v1/tokens", api.tokens["admin"], {"role": "viewer"})
    text = caplog.text
    for secret in (*api.tokens.values(), out["token"], "eot_wrong-secret-value"):
        assert secret not in text
