"""Targets threshold 2: two holders on two machines; one signature is refused everywhere.

The keys come from the real CLI (``edgeops keys init --targets-keys 2 --threshold 2``); holder B's
"machine" is a second ``EDGEOPS_HOME`` that holds only ``targets-2.pem`` (moved off A's), the
public keys and ``root.json``. The release goes through the documented detached flow (bundle
co-signed with ``edgeops bundle sign``, targets update written with ``publish --sign-only``,
co-signed with ``edgeops sign-targets``, uploaded with ``publish --with-signatures``) to the
real manager over HTTP, and a device's TUF client (the agent's ``TufClient`` over HTTP) fetches
it. One signature is refused by the publisher's CLI, by the manager's API and by the device.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from device_agent.tuf_update import TufClient, fetch_bundle
from edgeops.bundle import read_bundle
from edgeops.errors import EdgeOpsError, VerificationError
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.client import FleetClient
from fleet.release_signing import merge_partials
from fleet.repository import targets_update
from tests.edgeops.bundles import PASSPHRASE
from tests.fleet.live import live_fleet, run_cli
from tests.security.bundles import build_bundle
from tests.tuf_repo import HttpRepoServer, TufRepo

pytestmark = pytest.mark.slow


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, home: Path,
        *argv: str) -> tuple[int, str, str]:
    """``edgeops ARGV`` on the machine whose EDGEOPS_HOME is ``home``."""
    monkeypatch.setenv("EDGEOPS_HOME", str(home))
    return run_cli(capsys, *argv)


@pytest.fixture
def holders(tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[KeyStore, KeyStore]:
    """A's machine (runs init, keeps targets.pem) and B's (gets targets-2.pem)."""
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", PASSPHRASE.decode())
    a, b = tmp_path / "holder-a", tmp_path / "holder-b"
    code, out, err = cli(capsys, monkeypatch, a, "keys", "init", "--targets-keys", "2",
                         "--threshold", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["targets_threshold"] == 2
    (b / "keys").mkdir(parents=True)
    (b / "trust").mkdir()
    shutil.copy(root_path(KeyStore(a)), b / "trust" / "root.json")
    for f in ("targets.pub.json", "targets-2.pub.json"):
        shutil.copy(a / "keys" / f, b / "keys" / f)
    shutil.move(a / "keys" / "targets-2.pem", b / "keys" / "targets-2.pem")
    return KeyStore(a), KeyStore(b)


def test_init_writes_a_root_with_two_targets_keys_and_threshold_two(
        holders: tuple[KeyStore, KeyStore], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b = holders
    root = Metadata[Root].from_file(str(root_path(a)))
    role = root.signed.roles["targets"]
    assert role.threshold == 2 and len(role.keyids) == 2
    assert {a.public_key("targets").keyid, b.public_key("targets-2").keyid} == set(role.keyids)
    assert [s.public_key.keyid for s in a.targets_signers(PASSPHRASE)] == [
        a.public_key("targets").keyid]                      # A holds only its own key now
    code, _, err = cli(capsys, monkeypatch, tmp_path / "c", "keys", "init", "--targets-keys",
                       "2", "--threshold", "3")
    assert code == 2 and "--threshold 3 is more than the 2 targets keys" in err
    assert not (tmp_path / "c" / "keys").exists()           # nothing half-written


def test_two_holders_publish_one_signature_is_refused(
        holders: tuple[KeyStore, KeyStore], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, attack) -> None:
    a, b = holders
    bundle = build_bundle(tmp_path / "bundles", list(a.targets_signers(PASSPHRASE)),
                          version="1.0.0", seed=1)           # `edgeops build` on A: 1 signature
    partial = tmp_path / "targets.partial.json"
    with live_fleet(a, tmp_path / "fleet") as lf:
        monkeypatch.setenv("EDGEOPS_FLEET", lf.url)
        monkeypatch.setenv("EDGEOPS_TOKEN", lf.admin)
        # 1. the bundle carries one of two signatures: the publisher refuses it
        code, _, err = cli(capsys, monkeypatch, a.home, "publish", str(bundle))
        assert code == 1 and "carries 1 of the 2 required targets signatures" in err
        assert "edgeops bundle sign" in err
        # 2. B co-signs the bundle on B's machine
        code, out, err = cli(capsys, monkeypatch, b.home, "bundle", "sign", str(bundle))
        assert code == 0 and "2 of 2 required" in out, err
        # 3. A alone cannot publish: it holds one key
        code, _, err = cli(capsys, monkeypatch, a.home, "publish", str(bundle))
        assert code == 1 and "holds 1 targets key(s)" in err and "1 of 2" in err
        # 4. A writes the update, signed by A, raising the floor
        code, out, err = cli(capsys, monkeypatch, a.home, "publish", str(bundle), "--sign-only",
                             "-o", str(partial), "--floor", "1.0.0", "--json")
        assert code == 0, err
        state = json.loads(out)
        assert len(state["signed_by"]) == 1 and state["threshold"] == 2
        assert state["floors"] == {"tiny": "1.0.0"}
        # 5. one signature: refused by the publisher's CLI and by the manager's API
        code, _, err = cli(capsys, monkeypatch, a.home, "publish", str(bundle),
                           "--with-signatures", str(partial))
        assert code == 1 and "1 of 2 required targets signatures" in err
        c = FleetClient(lf.url, lf.admin)
        with pytest.raises(EdgeOpsError, match="not signed by the targets key") as refused:
            c.publish(c.upload(bundle)["upload"], partial.read_bytes())
        assert c.current_targets() is None                   # nothing was published
        attack("targets update with 1 of 2 signatures (manager API)", "refused, nothing stored",
               refused.value.message[:60])
        # 6. B co-signs the update, checking it pins this bundle
        code, out, err = cli(capsys, monkeypatch, b.home, "sign-targets", str(partial),
                             "--bundle", str(bundle))
        assert code == 0 and "2 of 2 required" in out and "ready" in out, err
        # 7. A uploads: accepted
        code, out, err = cli(capsys, monkeypatch, a.home, "publish", str(bundle),
                             "--with-signatures", str(partial), "--json")
        assert code == 0, err
        assert json.loads(out)["targets_version"] == 1
        # 8. the device's TUF client (the agent's, over HTTP) accepts 2 of 2 and sees the floor
        dev = tmp_path / "device"
        dev.mkdir()
        (dev / "root.json").write_bytes(root_path(a).read_bytes())
        tuf = TufClient.over_http(dev / "root.json", dev / "tuf", lf.url)
        fetched = fetch_bundle(tuf, "tiny", "1.0.0", "x86-cpu")
        assert fetched.version == "1.0.0"
        assert tuf.trusted_floors() == {"tiny": "1.0.0"}
    attack("two holders, detached signing (2 of 2)", "published, device accepts",
           "published, device fetched tiny@1.0.0")


def test_sign_targets_refuses_an_altered_or_mismatched_update(
        holders: tuple[KeyStore, KeyStore], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = holders
    root = Metadata[Root].from_file(str(root_path(a)))
    both = [a.signer("targets", PASSPHRASE), b.signer("targets-2", PASSPHRASE)]
    v1 = build_bundle(tmp_path / "b", both, version="1.0.0", seed=1)
    v2 = build_bundle(tmp_path / "b", both, version="2.0.0", seed=2)
    md = targets_update(None, read_bundle(v1), root)
    md.sign(a.signer("targets", PASSPHRASE))
    partial = tmp_path / "p.json"
    partial.write_bytes(md.to_bytes())
    code, _, err = cli(capsys, monkeypatch, b.home, "sign-targets", str(partial), "--bundle",
                       str(v2))
    assert code == 1 and "does not pin bundles/tiny/2.0.0/manifest.json" in err
    altered = md.to_bytes().replace(b'"version":1', b'"version":7')
    assert altered != md.to_bytes()
    partial.write_bytes(altered)
    code, _, err = cli(capsys, monkeypatch, b.home, "sign-targets", str(partial))
    assert code == 1 and "does not match this targets update" in err
    assert partial.read_bytes() == altered                    # nothing written
    other = targets_update(None, read_bundle(v2), root)
    with pytest.raises(VerificationError, match="different targets update"):
        merge_partials([("a", md.to_bytes()), ("b", other.to_bytes())])


@pytest.fixture
def lying_repo(holders: tuple[KeyStore, KeyStore], tmp_path: Path
               ) -> Iterator[tuple[TufRepo, HttpRepoServer, Path]]:
    a, b = holders
    repo = TufRepo(a)                       # the root from `keys init`: targets 2 of 2
    both = [a.signer("targets", PASSPHRASE), b.signer("targets-2", PASSPHRASE)]
    repo.add_bundle(build_bundle(tmp_path / "bundles", both, version="1.0.0", seed=1))
    server = HttpRepoServer(repo)
    try:
        yield repo, server, root_path(a)
    finally:
        server.close()


def test_device_tuf_client_refuses_one_of_two_and_accepts_two(
        lying_repo: tuple[TufRepo, HttpRepoServer, Path], holders: tuple[KeyStore, KeyStore],
        tmp_path: Path, attack) -> None:
    """A repository that serves targets signed by one holder only (a stolen key, or a manager
    skipping the check): the agent's TUF client refuses; with both signatures it accepts."""
    repo, server, root_file = lying_repo
    a, b = holders
    repo.publish(targets_signers=[a.signer("targets", PASSPHRASE)])
    tuf = TufClient.over_http(root_file, tmp_path / "dev" / "tuf", server.url)
    with pytest.raises(VerificationError, match="not signed by trusted keys") as refused:
        fetch_bundle(tuf, "tiny", "1.0.0", "x86-cpu")
    attack("targets with 1 of 2 signatures (device TUF client)", "refused",
           refused.value.message[:60])
    repo.publish(targets_signers=[a.signer("targets", PASSPHRASE),
                                  b.signer("targets-2", PASSPHRASE)])
    assert fetch_bundle(tuf, "tiny", "1.0.0", "x86-cpu").version == "1.0.0"


def test_rotating_one_holders_key_keeps_the_threshold(
        holders: tuple[KeyStore, KeyStore], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = holders
    old = b.public_key("targets-2").keyid
    code, out, err = cli(capsys, monkeypatch, a.home, "keys", "rotate", "targets-2", "--json")
    assert code == 0, err
    root = Metadata[Root].from_file(str(root_path(a)))
    role = root.signed.roles["targets"]
    assert root.signed.version == 2 and role.threshold == 2
    assert json.loads(out)["keyid"] in role.keyids and old not in role.keyids
    assert a.public_key("targets").keyid in role.keyids
    code, _, err = cli(capsys, monkeypatch, a.home, "keys", "rotate", "targets-7")
    assert code == 2 and "no key role 'targets-7'" in err
