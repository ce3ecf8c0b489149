"""The key store under ``$EDGEOPS_HOME/keys``: offline keys encrypted, online keys for the manager.

Roles follow TUF and Uptane's split. Offline (passphrase-encrypted, kept by the ML team):
``root`` signs the trust root; ``targets`` signs what may be installed (bundles and the TUF
targets metadata). Online (held by the fleet manager): ``snapshot`` and ``timestamp`` for TUF
freshness, ``manager`` for signed device commands, which only say which signed bundle goes where.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from edgeops.config import edgeops_home
from edgeops.errors import KeyError_
from edgeops.fsutil import atomic_write

__all__ = ["OFFLINE_ROLES", "ONLINE_ROLES", "ROLES", "KeyInfo", "KeyStore"]

OFFLINE_ROLES = ("root", "targets")
ONLINE_ROLES = ("snapshot", "timestamp", "manager")
ROLES = OFFLINE_ROLES + ONLINE_ROLES
# Extra targets keys for a threshold (``keys init --targets-keys N``): targets-2 ... targets-N.
_EXTRA_TARGETS = re.compile(r"^targets-([2-9]|[1-9][0-9])$")


@dataclass(frozen=True)
class KeyInfo:
    role: str
    keyid: str
    scheme: str
    encrypted: bool
    private_path: Path
    public_path: Path


def _private_pem(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class KeyStore:
    """Files: ``<role>.pem`` (private, 0600) and ``<role>.pub.json`` (public, securesystemslib)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or edgeops_home()
        self.dir = self.home / "keys"

    def _paths(self, role: str) -> tuple[Path, Path]:
        if role not in ROLES and not _EXTRA_TARGETS.match(role):
            raise KeyError_(f"unknown key role '{role}'", hint=f"roles are: {', '.join(ROLES)}")
        return self.dir / f"{role}.pem", self.dir / f"{role}.pub.json"

    def exists(self) -> bool:
        return all(self._paths(r)[0].exists() for r in ROLES)

    def generate(self, role: str, passphrase: bytes | None) -> SSlibKey:
        """Create a fresh key for ``role``; an existing one is kept beside it as ``.old``."""
        if _offline(role) and not passphrase:
            raise KeyError_(f"the offline '{role}' key needs a passphrase",
                            hint="set EDGEOPS_KEY_PASSPHRASE or answer the prompt")
        priv_path, pub_path = self._paths(role)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        priv = Ed25519PrivateKey.generate()
        pub = SSlibKey.from_crypto(priv.public_key())
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for p in (priv_path, pub_path):
            if p.exists():
                os.replace(p, p.with_name(f"{p.name}.{stamp}.old"))
        atomic_write(priv_path, _private_pem(priv, passphrase if _offline(role) else None),
                     mode=0o600)
        atomic_write(pub_path, json.dumps({"keyid": pub.keyid, **pub.to_dict()}, indent=2,
                                          sort_keys=True).encode() + b"\n", mode=0o644)
        return pub

    def public_key(self, role: str) -> SSlibKey:
        _, pub_path = self._paths(role)
        try:
            d = json.loads(pub_path.read_text())
        except FileNotFoundError:
            raise KeyError_(f"no '{role}' key in {self.dir}") from None
        except (OSError, ValueError) as exc:
            raise KeyError_(f"cannot read public key {pub_path}: {exc}") from None
        keyid = d.pop("keyid")
        return SSlibKey.from_dict(keyid, d)

    def signer(self, role: str, passphrase: bytes | None = None) -> CryptoSigner:
        priv_path, _ = self._paths(role)
        try:
            pem = priv_path.read_bytes()
        except FileNotFoundError:
            raise KeyError_(f"no '{role}' private key in {self.dir}") from None
        encrypted = b"ENCRYPTED" in pem
        if encrypted and not passphrase:
            raise KeyError_(f"the '{role}' key is encrypted and no passphrase was given",
                            hint="set EDGEOPS_KEY_PASSPHRASE or pass --passphrase-file")
        try:
            priv = serialization.load_pem_private_key(pem, passphrase if encrypted else None)
        except (ValueError, TypeError):
            raise KeyError_(f"cannot decrypt the '{role}' key: wrong passphrase?",
                            hint="check EDGEOPS_KEY_PASSPHRASE") from None
        if not isinstance(priv, Ed25519PrivateKey):
            raise KeyError_(f"the '{role}' key is not an Ed25519 key")
        return CryptoSigner(priv, self.public_key(role))

    def targets_names(self) -> list[str]:
        """The targets keys whose public half is here: ``targets``, ``targets-2``, ..."""
        extra = sorted((m.group(0) for p in self.dir.glob("targets-*.pub.json")
                        if (m := _EXTRA_TARGETS.match(p.name.removesuffix(".pub.json")))),
                       key=lambda n: int(n.split("-")[1]))
        return [n for n in ("targets", *extra) if (self.dir / f"{n}.pub.json").exists()]

    def targets_signers(self, passphrase: bytes | None) -> list[CryptoSigner]:
        """A signer for every targets key whose private half is on this machine.

        With a threshold, each holder keeps only their own key: this is how a holder signs
        with whatever they hold (``edgeops sign-targets``, ``bundle sign``, ``publish``).
        """
        names = [n for n in self.targets_names() if self._paths(n)[0].exists()]
        if not names:
            raise KeyError_(f"no targets private key in {self.dir}",
                            hint="run `edgeops keys init`, or copy your targets-N.pem here")
        return [self.signer(n, passphrase) for n in names]

    def list(self) -> list[KeyInfo]:
        out = []
        for role in (*ROLES, *self.targets_names()[1:]):
            priv_path, pub_path = self._paths(role)
            if not pub_path.exists():
                continue
            key = self.public_key(role)
            encrypted = priv_path.exists() and b"ENCRYPTED" in priv_path.read_bytes()
            out.append(KeyInfo(role, key.keyid, key.scheme, encrypted, priv_path, pub_path))
        return out


def _offline(role: str) -> bool:
    return role in OFFLINE_ROLES or bool(_EXTRA_TARGETS.match(role))
