"""Release floors (edgeops.floors): signed in targets, only up, and the agent's downgrade rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets

from edgeops.errors import UsageError, VerificationError
from edgeops.floors import (
    FLOORS_FIELD,
    DowngradeRefused,
    check_install,
    floors_from_file,
    floors_of,
    raise_floor,
)


def test_a_floor_is_part_of_the_signed_targets() -> None:
    signer = CryptoSigner.generate_ed25519()
    md = Metadata(Targets())
    assert raise_floor(md.signed, "tiny", "2.0.0")
    md.sign(signer)
    back = Metadata[Targets].from_bytes(md.to_bytes())
    assert floors_of(back.signed) == {"tiny": "2.0.0"}
    back.signed.unrecognized_fields[FLOORS_FIELD]["tiny"] = "1.0.0"   # lowered in transit
    with pytest.raises(UnverifiedSignatureError):
        signer.public_key.verify_signature(back.signatures[signer.public_key.keyid],
                                           back.signed_bytes)


def test_floors_only_go_up() -> None:
    t = Targets()
    assert raise_floor(t, "tiny", "1.2.0")
    assert not raise_floor(t, "tiny", "1.2.0")          # the same floor again: no change
    assert raise_floor(t, "tiny", "1.10.0")             # numeric, not string, order
    with pytest.raises(UsageError, match="never go down"):
        raise_floor(t, "tiny", "1.9.9")
    assert raise_floor(t, "other", "0.1.0")
    assert floors_of(t) == {"other": "0.1.0", "tiny": "1.10.0"}
    with pytest.raises(Exception, match="semantic version"):
        raise_floor(t, "tiny", "latest")


@pytest.mark.parametrize("raw", [["tiny"], {"tiny": 2}, {"tiny": "two"}])
def test_malformed_floors_fail_closed(raw: object) -> None:
    t = Targets()
    t.unrecognized_fields[FLOORS_FIELD] = raw
    with pytest.raises(VerificationError, match="malformed"):
        floors_of(t)


def test_floors_from_the_trusted_file(tmp_path: Path) -> None:
    assert floors_from_file(tmp_path / "targets.json") == {}     # never refreshed: no floors
    md = Metadata(Targets())
    raise_floor(md.signed, "tiny", "3.0.0")
    (tmp_path / "targets.json").write_bytes(md.to_bytes())
    assert floors_from_file(tmp_path / "targets.json") == {"tiny": "3.0.0"}
    (tmp_path / "targets.json").write_text(json.dumps({"signed": "garbage"}))
    with pytest.raises(VerificationError):
        floors_from_file(tmp_path / "targets.json")


# (version, installed, floor, rollback) -> refused with (None: accepted)
CASES = [
    ("2.0.0", None, None, False, None),
    ("2.0.0", "1.0.0", "1.0.0", False, None),           # upgrade
    ("1.0.0", "1.0.0", None, False, None),              # same version again
    ("1.0.0", "2.0.0", None, False, "older than the installed 2.0.0"),
    ("1.0.0", "2.0.0", None, True, None),               # operator rollback, no floor
    ("1.5.0", "2.0.0", "1.5.0", True, None),            # operator rollback, at the floor
    ("1.0.0", "2.0.0", "1.5.0", True, "below the release floor 1.5.0"),
    ("1.0.0", None, "1.5.0", False, "below the release floor"),   # even on a fresh device
    ("1.0.0", "2.0.0", "1.5.0", False, "below the release floor"),
]


@pytest.mark.parametrize(("version", "installed", "floor", "rollback", "refused"), CASES)
def test_the_downgrade_rule(version: str, installed: str | None, floor: str | None,
                            rollback: bool, refused: str | None) -> None:
    if refused is None:
        check_install("tiny", version, installed=installed, floor=floor, rollback=rollback)
        return
    with pytest.raises(DowngradeRefused, match=refused) as info:
        check_install("tiny", version, installed=installed, floor=floor, rollback=rollback)
    assert info.value.message.startswith("downgrade refused: tiny@")
    assert info.value.hint
