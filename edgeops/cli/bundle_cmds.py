"""``edgeops bundle``: inspect, verify and unpack bundle files offline, without a fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from securesystemslib.signer import Key, SSlibKey
from tuf.api.metadata import Metadata, Root

from edgeops.bundle import Lineage, read_bundle
from edgeops.bundle.manifest import manifest_summary
from edgeops.cli.common import emit, json_option
from edgeops.errors import KeyError_, UsageError
from edgeops.keys import KeyStore
from edgeops.trust import root_path, trusted_targets_keys

__all__ = ["bundle"]

_path = click.Path(path_type=Path, dir_okay=False)


@click.group()
def bundle() -> None:
    """Inspect, verify or unpack a bundle.

    \b
    Example:
      edgeops bundle inspect out/vehicle-classifier-1.0.0.edgebundle
      edgeops bundle verify  out/vehicle-classifier-1.0.0.edgebundle --root trust/root.json
    """


@bundle.command()
@click.argument("path", type=_path)
@json_option
def inspect(path: Path, as_json: bool) -> None:
    """Show a bundle's manifest: model, I/O signature, artifacts and metrics.

    Inspecting does not check signatures; use `edgeops bundle verify` for that.

    \b
    Example:
      edgeops bundle inspect out/vehicle-classifier-1.0.0.edgebundle --json
    """
    b = read_bundle(path)
    m = b.manifest
    summary = manifest_summary(m) | {"signed_by": [s.keyid for s in b.signatures.signatures]}
    if m.lineage is not None:
        summary["lineage"] = m.lineage.to_dict() | {"links": m.lineage.links()}

    def text() -> str:
        lines = [f"{m.name} {m.version}  (source sha256 {m.source_sha256[:12]})"]
        for t in m.inputs:
            lines.append(f"  input  {t.name}: {t.dtype} {list(t.shape)}")
        for t in m.outputs:
            lines.append(f"  output {t.name}: {t.dtype} {list(t.shape)}")
        for a in m.artifacts:
            extra = " ".join(f"{k}={v}" for k, v in sorted(a.metrics.items())
                             if isinstance(v, int | float))
            lines.append(f"  artifact {a.target:<10} {a.precision:<12} {a.file.size:>10} B  "
                         f"{a.runtime}  {extra}")
        lines.append(f"  signed by {', '.join(s.keyid[:12] for s in b.signatures.signatures)}")
        if m.lineage is not None:
            lines += _lineage_lines(m.lineage)
        return "\n".join(lines)

    emit(as_json, summary, text)


def _lineage_lines(lin: Lineage) -> list[str]:
    """Where the model came from, one fact per line, with links into MLflow."""
    lines = [f"  from {lin.source_uri}"]
    if lin.model_name:
        alias = f" (alias @{lin.alias} at build time)" if lin.alias else ""
        lines.append(f"    model {lin.model_name} version {lin.model_version}{alias}")
    if lin.tracking_uri:
        lines.append(f"    registry {lin.tracking_uri}")
    if lin.run_id:
        lines.append(f"    run {lin.run_id}" + (f"  commit {lin.git_commit}" if lin.git_commit else ""))
    for kind, d in sorted(lin.data.items()):
        digest = f"sha256 {d.sha256[:12]}" if d.sha256 else "no digest"
        dvc = f"  dvc md5 {d.dvc_md5}" if d.dvc_md5 else ""
        lines.append(f"    {kind:<11} {d.uri}  {digest}{dvc}")
    lines += [f"    {what} {url}" for what, url in sorted(lin.links().items())]
    lines.append(f"    built by edgeops {lin.edgeops_version}")
    return lines


def _trusted_keys(key: Path | None, root: Path | None) -> tuple[list[Key], int, str]:
    if key is not None and root is not None:
        raise UsageError("give either --key or --root, not both")
    if key is not None:
        try:
            d: dict[str, Any] = json.loads(key.read_text())
            keyid = d.pop("keyid")
            return [SSlibKey.from_dict(keyid, d)], 1, str(key)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"cannot read public key {key}: {exc}",
                            hint="pass a *.pub.json file from `edgeops keys`") from None
    if root is None:
        root = root_path(KeyStore())
        if not root.exists():
            raise KeyError_("no trust root to verify against",
                            hint="pass --root root.json or --key targets.pub.json, "
                                 "or run `edgeops keys init`")
    try:
        md = Metadata[Root].from_file(str(root))
    except Exception as exc:  # python-tuf raises several types for unreadable metadata
        raise KeyError_(f"cannot read TUF root {root}: {exc}") from None
    keys, threshold = trusted_targets_keys(md)
    return [k for k in keys if isinstance(k, Key)], threshold, str(root)


@bundle.command()
@click.argument("path", type=_path)
@click.option("--key", type=_path, help="Trusted targets public key (*.pub.json).")
@click.option("--root", type=_path, help="Fleet TUF root.json naming the targets keys "
                                          "(default: $EDGEOPS_HOME/trust/root.json).")
@json_option
def verify(path: Path, key: Path | None, root: Path | None, as_json: bool) -> None:
    """Check a bundle offline: structure, signatures, and every file's size and digest.

    Exit status 0 when the bundle is intact and signed by a trusted targets key, 1 otherwise.

    \b
    Example:
      edgeops bundle verify out/vehicle-classifier-1.0.0.edgebundle --root trust/root.json
    """
    trusted, threshold, source = _trusted_keys(key, root)
    b = read_bundle(path)
    keyids = b.verify(trusted, threshold)
    emit(as_json, {"bundle": str(path), "name": b.manifest.name, "version": b.manifest.version,
                   "verified": True, "signed_by": keyids, "trust": source,
                   "files": len(b.manifest.files())},
         f"OK {b.manifest.name} {b.manifest.version}: signed by {keyids[0][:12]}, "
         f"{len(b.manifest.files())} files intact")


@bundle.command()
@click.argument("path", type=_path)
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@json_option
def unpack(path: Path, directory: Path, as_json: bool) -> None:
    """Write the manifest, signatures and each artifact as plain files under DIRECTORY.

    Every file is checked against the manifest's size and digest as it is written; a file that
    fails is not written. Signatures are not checked: run `verify` first.

    \b
    Example:
      edgeops bundle unpack out/vehicle-classifier-1.0.0.edgebundle ./unpacked
    """
    b = read_bundle(path)
    written = b.extract(directory)
    emit(as_json, {"directory": str(directory), "files": [str(p) for p in written]},
         "\n".join(str(p) for p in written))


@bundle.command("sign")
@click.argument("path", type=_path)
@click.option("-o", "--out", type=_path, default=None,
              help="Write the co-signed bundle here (default: replace PATH).")
@json_option
def sign(path: Path, out: Path | None, as_json: bool) -> None:
    """Add this machine's targets signature(s) to a bundle (threshold co-signing).

    With a targets threshold above one, a bundle needs that many targets signatures before
    `edgeops publish` accepts it. The first holder builds it (`edgeops build` signs with the
    keys held there); every other holder runs this on their own machine, with their own
    targets-I.pem under $EDGEOPS_HOME/keys. The bundle is checked (structure, every file's
    digest, the signatures already on it) before anything is written.

    \b
    Example:
      EDGEOPS_KEY_PASSPHRASE=... edgeops bundle sign vehicle-classifier-2.1.0.edgebundle
    """
    from edgeops.bundle.archive import cosign_bundle
    from edgeops.bundle.signing import verify_signatures
    from edgeops.cli.common import passphrase_from_env

    store = KeyStore()
    trusted, threshold, _source = _trusted_keys(None, None)
    b = read_bundle(path)
    if b.signatures.signatures:     # a bad signature already on it is refused, not co-signed
        verify_signatures(b.manifest_bytes, b.signatures, trusted, 0)
    for ref in b.manifest.files():
        b.read_file(ref.path)
    sigs = cosign_bundle(b, store.targets_signers(passphrase_from_env()), out or path)
    trusted_ids = {k.keyid for k in trusted}
    good = sorted({s.keyid for s in sigs.signatures} & trusted_ids)
    emit(as_json, {"bundle": str(out or path), "signed_by": good, "threshold": threshold},
         f"{out or path}: {len(good)} of {threshold} required targets signatures"
         + ("" if len(good) >= threshold else " (more holders must run `edgeops bundle sign`)"))


def _artifacts(path: Path) -> dict[str, bytes]:
    """Target -> artifact bytes of a bundle (checked against its manifest as they are read)."""
    b = read_bundle(path)
    return {a.target: b.read_file(a.file.path) for a in b.manifest.artifacts}


@bundle.command()
@click.argument("old", type=_path)
@click.argument("new", type=_path)
@click.option("--target", "targets", multiple=True,
              help="Only this target (repeatable; default: every target both bundles have).")
@click.option("--level", type=click.IntRange(1, 22), default=None,
              help="zstd level of the payloads (default: the publisher's).")
@json_option
def delta(old: Path, new: Path, targets: tuple[str, ...], level: int | None,
          as_json: bool) -> None:
    """Show what a delta update from OLD to NEW would contain and its size, per target.

    For planning: nothing is signed or written. Tensors are matched by name and shape;
    unchanged ones are referenced, changed ones sent as a compressed difference, new ones in
    full. A delta that is not smaller than the full artifact is never published.

    \b
    Example:
      edgeops bundle delta out/classifier-1.0.0.edgebundle out/classifier-1.1.0.edgebundle
    """
    from edgeops.delta import DEFAULT_LEVEL, diff_artifacts

    before, after = _artifacts(old), _artifacts(new)
    common = sorted(set(before) & set(after))
    wanted = list(targets) or common
    unknown = sorted(set(wanted) - set(common))
    if unknown:
        raise UsageError(f"target(s) {', '.join(unknown)} are not in both bundles "
                         f"(common targets: {', '.join(common) or 'none'})",
                         hint="pick one of the common targets with --target")
    if not wanted:
        raise UsageError("the two bundles share no target, so no delta can be made",
                         hint="compare two versions built for the same --target")
    out = []
    for t in wanted:
        d = diff_artifacts(before[t], after[t], level=level or DEFAULT_LEVEL)
        out.append({"target": t} | d.summary()
                   | {"ops": [{"tensor": p.name, "change": p.why, "op": p.op.kind,
                               "bytes": p.op.length, "sent": p.sent}
                              for p in d.planned if p.name is not None]})

    def text() -> str:
        lines = []
        for s in out:
            verdict = "delta" if s["worthwhile"] else "full artifact (delta not smaller)"
            lines.append(f"{s['target']}: {s['format']} {s['full_bytes']} B -> delta "
                         f"{s['delta_bytes']} B ({100 * s['ratio']:.1f}% of full); ships {verdict}")
            for why, g in sorted(s["tensors"].items()):
                lines.append(f"  {why:<9} {g['count']:>5} {'parts' if why == 'graph' else 'tensors'}"
                             f" {g['bytes']:>12} B -> {g['sent']:>10} B sent")
        return "\n".join(lines)

    emit(as_json, out, text)
