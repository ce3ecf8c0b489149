"""Reading and writing ``.edgebundle`` files: a deterministic, uncompressed POSIX tar.

Layout (see docs/PROTOCOL.md, "Bundle format")::

    manifest.json              canonical JSON, the signed document
    signatures.json            Ed25519 signatures over manifest.json's bytes
    artifacts/<target>/...     one artifact (and its golden samples) per target

Writing is deterministic: entries sorted, mtime 0 (or SOURCE_DATE_EPOCH), owner 0:0, mode 0644,
so two builds from the same inputs are byte-identical. Reading trusts nothing: every entry must
be a regular file with a safe relative path, listed in the manifest, of the declared size and
digest; anything else is rejected before a byte reaches the destination.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from securesystemslib.signer import Key, Signer

from edgeops.bundle.manifest import FileRef, Manifest, check_safe_path
from edgeops.bundle.signing import SignatureSet, sign_manifest, verify_signatures
from edgeops.config import DEFAULT_LIMITS, Limits
from edgeops.errors import InvalidBundleError, VerificationError
from edgeops.fsutil import atomic_open

__all__ = ["MANIFEST_NAME", "SIGNATURES_NAME", "Bundle", "cosign_bundle", "file_ref", "read_bundle",
           "write_bundle"]

MANIFEST_NAME = "manifest.json"
SIGNATURES_NAME = "signatures.json"
_CHUNK = 1024 * 1024


def file_ref(path: str, data_path: Path) -> FileRef:
    """Hash a file on disk into a manifest reference (streamed, so large models are fine)."""
    h = hashlib.sha256()
    size = 0
    with open(data_path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            size += len(block)
    return FileRef(path=path, sha256=h.hexdigest(), size=size)


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, mtime, 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_bundle(out: Path, manifest: Manifest, files: Mapping[str, Path],
                 signers: Sequence[Signer]) -> Path:
    """Sign ``manifest`` and write the bundle atomically; ``files`` maps manifest paths to disk."""
    declared = {f.path: f for f in manifest.files()}
    if set(declared) != set(files):
        raise InvalidBundleError(
            f"files given do not match the manifest: missing {sorted(set(declared) - set(files))},"
            f" extra {sorted(set(files) - set(declared))}")
    for path, ref in declared.items():
        actual = file_ref(path, files[path])
        if actual != ref:
            raise VerificationError(f"{path} changed since the manifest was made")
    manifest_bytes = manifest.to_bytes()
    sig_bytes = sign_manifest(manifest_bytes, signers).to_bytes()
    _write_tar(out, manifest_bytes, sig_bytes, files, {p: r.size for p, r in declared.items()})
    return out


def _write_tar(out: Path, manifest_bytes: bytes, sig_bytes: bytes, files: Mapping[str, Path],
               sizes: Mapping[str, int]) -> None:
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    with atomic_open(out) as raw, tarfile.open(fileobj=raw, mode="w",
                                               format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest_bytes), mtime), io.BytesIO(manifest_bytes))
        tar.addfile(_tarinfo(SIGNATURES_NAME, len(sig_bytes), mtime), io.BytesIO(sig_bytes))
        for path in sorted(files):
            with open(files[path], "rb") as f:
                tar.addfile(_tarinfo(path, sizes[path], mtime), f)
        data_end = tar.offset
        tar.close()
        # Keep the end-of-archive marker but drop tar's record padding, so any cut of the
        # file is detectable (see _check_end_of_archive).
        raw.truncate(data_end + 2 * tarfile.BLOCKSIZE)


def cosign_bundle(bundle: Bundle, signers: Sequence[Signer], out: Path) -> SignatureSet:
    """Write ``bundle`` to ``out`` with the signatures of ``signers`` added to the ones it has.

    For a targets threshold above one: each key holder adds their signature in turn. Only the
    signatures file changes; every file is re-checked against the manifest on the way.
    """
    have = {s.keyid: s for s in bundle.signatures.signatures}
    for s in sign_manifest(bundle.manifest_bytes, signers).signatures:
        have[s.keyid] = s
    sigs = SignatureSet(tuple(have.values()))
    with tempfile.TemporaryDirectory(prefix=".cosign-", dir=Path(out).parent) as tmp:
        files = {ref.path: bundle.extract_file(ref.path, Path(tmp) / ref.path)
                 for ref in bundle.manifest.files()}
        _write_tar(out, bundle.manifest_bytes, sigs.to_bytes(), files,
                   {ref.path: ref.size for ref in bundle.manifest.files()})
    return sigs


@dataclass
class Bundle:
    """An opened bundle: manifest and signatures parsed, member offsets indexed, nothing trusted.

    Call :meth:`verify` before using the content; :meth:`extract` and :meth:`read_file` always
    check size and digest as they copy.
    """

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    signatures: SignatureSet
    _members: dict[str, tarfile.TarInfo]

    def verify(self, trusted: Sequence[Key], threshold: int = 1) -> list[str]:
        """Check signatures, then every file's size and digest. Returns the signing key ids."""
        keyids = verify_signatures(self.manifest_bytes, self.signatures, trusted, threshold)
        for ref in self.manifest.files():
            self._copy(ref, None)
        return keyids

    def read_file(self, path: str) -> bytes:
        ref = self._ref(path)
        buf = io.BytesIO()
        self._copy(ref, buf)
        return buf.getvalue()

    def extract_file(self, path: str, dest: Path) -> Path:
        """Copy one pinned file to ``dest`` atomically; a mismatch leaves ``dest`` untouched."""
        ref = self._ref(path)
        with atomic_open(dest) as out:
            self._copy(ref, out)
        return dest

    def extract(self, directory: Path) -> list[Path]:
        """Write manifest, signatures and every file under ``directory`` (all verified).

        Every file is checked before the first one is written, so a bad bundle leaves
        ``directory`` as it was.
        """
        for ref in self.manifest.files():
            self._copy(ref, None)
        written = []
        for ref in self.manifest.files():
            written.append(self.extract_file(ref.path, directory / ref.path))
        for name, data in ((MANIFEST_NAME, self.manifest_bytes),
                           (SIGNATURES_NAME, self.signatures.to_bytes())):
            with atomic_open(directory / name) as f:
                f.write(data)
            written.append(directory / name)
        return written

    def _ref(self, path: str) -> FileRef:
        ref = next((f for f in self.manifest.files() if f.path == path), None)
        if ref is None:
            raise InvalidBundleError(f"{path} is not listed in the bundle's manifest")
        return ref

    def _copy(self, ref: FileRef, out: BinaryIO | None) -> None:
        member = self._members.get(ref.path)
        if member is None:
            raise InvalidBundleError(f"bundle is missing {ref.path}, which the manifest lists")
        if member.size != ref.size:
            raise VerificationError(
                f"{ref.path} is {member.size} bytes but the manifest declares {ref.size}")
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            f.seek(member.offset_data)
            left = ref.size
            while left:
                block = f.read(min(_CHUNK, left))
                if not block:
                    raise InvalidBundleError(f"bundle is truncated inside {ref.path}")
                h.update(block)
                if out is not None:
                    out.write(block)
                left -= len(block)
        if h.hexdigest() != ref.sha256:
            raise VerificationError(f"{ref.path} does not match its SHA-256 in the manifest "
                                    "(artifact altered)")


def read_bundle(path: Path, limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Open and structurally validate a bundle. Signatures are checked by :meth:`Bundle.verify`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidBundleError(f"{path} does not exist", hint="check the path") from None
    if size > limits.max_bundle_bytes:
        raise InvalidBundleError(f"{path} is {size} bytes, over the {limits.max_bundle_bytes} limit")
    members: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for ti in tar:
                _check_member(ti, members, limits)
                members[ti.name] = ti
                if ti.offset_data + ti.size > size:
                    raise InvalidBundleError(f"bundle is truncated inside {ti.name}")
            _check_end_of_archive(path, members.values(), size)
            manifest_bytes = _read_member(tar, members, MANIFEST_NAME, limits.max_manifest_bytes)
            sig_bytes = _read_member(tar, members, SIGNATURES_NAME, limits.max_manifest_bytes)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidBundleError(f"{path} is not a readable edgeops bundle ({exc})",
                                 hint="the file is truncated or not a bundle; fetch or build it again"
                                 ) from None
    manifest = Manifest.from_bytes(manifest_bytes)
    sigs = SignatureSet.from_bytes(sig_bytes)
    declared = {f.path for f in manifest.files()}
    extra = set(members) - declared - {MANIFEST_NAME, SIGNATURES_NAME}
    if extra:
        raise InvalidBundleError(f"bundle holds files the manifest does not list: {sorted(extra)}")
    absent = sorted(declared - set(members))
    if absent:
        raise InvalidBundleError(f"bundle is truncated or incomplete: missing {absent}",
                                 hint="fetch or build the bundle again")
    for ref in manifest.files():
        if ref.size > limits.max_artifact_bytes:
            raise InvalidBundleError(f"{ref.path} declares {ref.size} bytes, over the limit")
    return Bundle(path, manifest, manifest_bytes, sigs, members)


def _check_end_of_archive(path: Path, members: Iterable[tarfile.TarInfo], size: int) -> None:
    """A complete tar ends with two zero blocks after the last member; a cut file does not."""
    end = max((ti.offset_data + -(-ti.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
               for ti in members), default=0)
    with open(path, "rb") as f:
        f.seek(end)
        marker = f.read(2 * tarfile.BLOCKSIZE)
    if len(marker) < 2 * tarfile.BLOCKSIZE or marker.strip(b"\0"):
        raise InvalidBundleError(f"{path} is truncated (no end-of-archive marker)",
                                 hint="fetch or build the bundle again")


def _check_member(ti: tarfile.TarInfo, seen: Mapping[str, tarfile.TarInfo], limits: Limits) -> None:
    if not ti.isreg():
        kind = "link" if (ti.issym() or ti.islnk()) else "non-regular entry"
        raise InvalidBundleError(f"bundle entry '{ti.name}' is a {kind}; bundles hold plain files only",
                                 hint="do not install this file")
    if ti.name.startswith("/") or ".." in ti.name.split("/"):
        raise InvalidBundleError(f"bundle entry '{ti.name}' escapes the bundle (path traversal)",
                                 hint="do not install this file")
    check_safe_path(ti.name, "bundle entry")
    if ti.name in seen:
        raise InvalidBundleError(f"bundle entry '{ti.name}' appears twice")
    if len(seen) >= limits.max_bundle_entries:
        raise InvalidBundleError(f"bundle has more than {limits.max_bundle_entries} entries")


def _read_member(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str,
                 limit: int) -> bytes:
    ti = members.get(name)
    if ti is None:
        raise InvalidBundleError(f"bundle has no {name}", hint="this is not an edgeops bundle")
    if ti.size > limit:
        raise InvalidBundleError(f"{name} is {ti.size} bytes, over the {limit} limit")
    f = tar.extractfile(ti)
    assert f is not None
    data = f.read()
    if len(data) != ti.size:
        raise InvalidBundleError(f"bundle is truncated inside {name}")
    return data
