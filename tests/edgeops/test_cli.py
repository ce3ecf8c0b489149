"""The CLI as a user runs it: exit codes, one-line errors, --json (in this process through
click's CliRunner; the subprocess smoke test of the entry point is tests/test_entry_points.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeops.keys import KeyStore
from tests.clirun import CliResult, run_edgeops
from tests.edgeops.bundles import make_bundle

PASS = "cli test passphrase"


def run(home: Path, *args: str, passphrase: str | None = PASS) -> CliResult:
    return run_edgeops(*args, clear_env_prefix="EDGEOPS_",
                       env={"EDGEOPS_HOME": str(home), "EDGEOPS_KEY_PASSPHRASE": passphrase})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("edgeops-home")
    r = run(h, "keys", "init", "--json")
    assert r.returncode == 0, r.stderr
    return h


@pytest.fixture(scope="module")
def bundle_path(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.edgeops.bundles import PASSPHRASE

    # the CLI-made keys are encrypted with PASS; make_bundle signs with PASSPHRASE, so sign
    # through a store whose passphrase matches by re-reading with the CLI passphrase.
    store = KeyStore(home)
    signer = store.signer("targets", PASS.encode())

    class _Store(KeyStore):
        def signer(self, role: str, passphrase: bytes | None = None):  # type: ignore[override]
            assert passphrase == PASSPHRASE
            return signer

    return make_bundle(tmp_path_factory.mktemp("b"), _Store(home))


def test_keys_init_creates_every_role_and_a_trust_root(home: Path) -> None:
    r = run(home, "keys", "list", "--json")
    assert r.returncode == 0
    roles = {k["role"]: k for k in json.loads(r.stdout)}
    assert set(roles) == {"root", "targets", "snapshot", "timestamp", "manager"}
    assert roles["targets"]["encrypted"] and not roles["manager"]["encrypted"]
    root = json.loads((home / "trust" / "root.json").read_text())
    assert root["signed"]["_type"] == "root" and root["signed"]["version"] == 1


def test_keys_init_twice_is_a_usage_error(home: Path) -> None:
    r = run(home, "keys", "init")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "already exist" in r.stderr


def test_keys_init_without_passphrase_or_terminal_fails_cleanly(tmp_path: Path) -> None:
    r = run(tmp_path, "keys", "init", passphrase=None)
    assert r.returncode == 1 and "EDGEOPS_KEY_PASSPHRASE" in r.stderr
    assert not (tmp_path / "keys" / "root.pem").exists()
    assert "Traceback" not in r.stderr


def test_keys_rotate_makes_a_new_root_signed_by_old_and_new(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "init").returncode == 0
    before = KeyStore(tmp_path).public_key("root").keyid
    r = run(tmp_path, "keys", "rotate", "root", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["root_version"] == 2 and out["keyid"] != before
    from tuf.api.metadata import Metadata, Root

    v1 = Metadata[Root].from_file(str(tmp_path / "trust" / "1.root.json"))
    v2 = Metadata[Root].from_file(str(tmp_path / "trust" / "2.root.json"))
    v1.signed.verify_delegate("root", v2.signed_bytes, v2.signatures)   # old root trusts new
    v2.signed.verify_delegate("root", v2.signed_bytes, v2.signatures)   # new root is self-signed


def test_keys_rotate_with_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "init").returncode == 0
    before = sorted(p.name for p in (tmp_path / "keys").iterdir())
    r = run(tmp_path, "keys", "rotate", "targets", passphrase="wrong")
    assert r.returncode == 1 and "wrong passphrase" in r.stderr
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == before


def test_bundle_verify_inspect_unpack(home: Path, bundle_path: Path, tmp_path: Path) -> None:
    r = run(home, "bundle", "verify", str(bundle_path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True
    r = run(home, "bundle", "inspect", str(bundle_path), "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["name"] == "tiny" and info["artifacts"][0]["target"] == "x86-cpu"
    r = run(home, "bundle", "unpack", str(bundle_path), str(tmp_path / "u"))
    assert r.returncode == 0
    assert (tmp_path / "u" / "artifacts" / "x86-cpu" / "model.onnx").exists()


def test_bundle_verify_against_pinned_key_file(home: Path, bundle_path: Path) -> None:
    r = run(home, "bundle", "verify", str(bundle_path), "--key",
            str(home / "keys" / "targets.pub.json"))
    assert r.returncode == 0 and r.stdout.startswith("OK tiny 1.0.0")


def test_bundle_verify_fails_for_foreign_trust(bundle_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run(other, "keys", "init").returncode == 0
    r = run(other, "bundle", "verify", str(bundle_path))
    assert r.returncode == 1
    assert r.stderr.startswith("error: bundle is not signed by a trusted targets key")
    assert r.stderr.strip().count("\n") == 0


def test_bundle_verify_of_a_missing_file_is_one_line(home: Path, tmp_path: Path) -> None:
    r = run(home, "bundle", "verify", str(tmp_path / "nope.edgebundle"))
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bundle_unpack_of_a_tampered_bundle_writes_nothing(home: Path, bundle_path: Path,
                                                           tmp_path: Path) -> None:
    import tarfile

    with tarfile.open(bundle_path) as tar:
        member = tar.getmember("artifacts/x86-cpu/model.onnx")
    data = bytearray(bundle_path.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF      # one byte inside the artifact
    bad = tmp_path / "bad.edgebundle"
    bad.write_bytes(bytes(data))
    r = run(home, "bundle", "unpack", str(bad), str(tmp_path / "u"))
    assert r.returncode == 1 and "SHA-256" in r.stderr
    assert not (tmp_path / "u").exists()


def test_unknown_option_is_usage_error(home: Path) -> None:
    r = run(home, "bundle", "verify", "--frobnicate")
    assert r.returncode == 2


def test_every_command_help_has_an_example(home: Path) -> None:
    for args in (["keys", "init"], ["keys", "list"], ["keys", "rotate"], ["bundle", "inspect"],
                 ["bundle", "verify"], ["bundle", "unpack"]):
        r = run(home, *args, "--help")
        assert r.returncode == 0 and "Example" in r.stdout, args
