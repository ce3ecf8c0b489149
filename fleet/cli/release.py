"""``edgeops publish`` and ``edgeops sign-targets``: releasing a bundle with offline signatures.

Why a module of its own: the release side is the ML team's, run on the machines that
hold the offline targets keys, and with a threshold it is a small protocol of its own (one
holder writes the targets update, the others co-sign it, one uploads it; pure steps in
:mod:`fleet.release_signing`). A thin shell like the rest of the CLI; errors are EdgeOpsError
subclasses printed as one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edgeops.cli.common import emit, json_option, passphrase_from_env, progress_printer
from edgeops.errors import UsageError, VerificationError
from fleet.cli._common import api_client, fleet_options
from fleet.errors import ConflictError

__all__ = ["publish", "sign_targets"]


def _release_root(keys_home: Path | None) -> tuple[Any, Any]:
    from tuf.api.metadata import Metadata, Root

    from edgeops.errors import KeyError_
    from edgeops.keys import KeyStore
    from edgeops.trust import root_path

    keys = KeyStore(keys_home) if keys_home else KeyStore()
    rp = root_path(keys)
    if not rp.exists():
        raise KeyError_(f"no TUF root at {rp}",
                        hint="copy the fleet's trust/root.json there (or set EDGEOPS_HOME)")
    return keys, Metadata[Root].from_file(str(rp))


def _verified_bundle(bundle_path: Path, root: Any) -> Any:
    from edgeops.bundle import read_bundle
    from edgeops.bundle.signing import verify_signatures
    from edgeops.errors import VerificationError
    from edgeops.trust import trusted_targets_keys

    bundle = read_bundle(bundle_path)
    trusted, threshold = trusted_targets_keys(root)
    have = verify_signatures(bundle.manifest_bytes, bundle.signatures, trusted, 0)  # type: ignore[arg-type]
    if 0 < len(have) < threshold:       # none at all: verify() names the foreign signers
        raise VerificationError(f"{bundle_path.name} carries {len(have)} of the {threshold} "
                                "required targets signatures",
                                hint="each other targets key holder runs `edgeops bundle sign` "
                                     "on it first")
    bundle.verify(trusted, threshold)  # type: ignore[arg-type]
    return bundle


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path, dir_okay=False))
@fleet_options
@click.option("--keys", "keys_home", type=click.Path(path_type=Path), default=None,
              help="EDGEOPS_HOME with the offline targets key and trust/root.json.")
@click.option("--floor", default=None, metavar="VERSION",
              help="Raise the release floor of this model: devices refuse any version below it.")
@click.option("--sign-only", is_flag=True,
              help="Sign the targets update with the keys held here and write it to --out; "
                   "upload nothing (threshold signing).")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="With --sign-only: where to write the partly signed update.")
@click.option("--with-signatures", "partials", multiple=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Upload this signed targets update (repeatable: copies signed by different "
                   "holders are merged) instead of signing here.")
@click.option("--max-deltas", type=click.IntRange(0, 64), default=None,
              help="Deltas per target from the older versions devices still run, most "
                   "devices first (default 3; 0: none; none in threshold rounds).")
@json_option
def publish(bundle_path: Path, fleet_url: str, token: str | None, keys_home: Path | None,
            floor: str | None, sign_only: bool, out: Path | None, partials: tuple[Path, ...],
            max_deltas: int | None, as_json: bool) -> None:
    """Upload a signed bundle to a fleet manager, signing the TUF targets update offline.

    The bundle is verified here first; the new targets metadata is signed with every offline
    targets key held here (passphrase from EDGEOPS_KEY_PASSPHRASE or a prompt). --floor VERSION
    also raises the model's release floor in that signed update (it can only go up).

    With a targets threshold above one, holders sign on their own machines: one writes the
    update (--sign-only -o FILE), the others run `edgeops sign-targets FILE`, and the last
    uploads it (--with-signatures FILE). See docs/SECURITY.md, "Thresholds".

    Deltas from the versions devices still run (docs/FLEET.md, "Delta updates") are made here,
    listed in the same signed targets and uploaded with the bundle; a delta not smaller than the
    artifact is not. Threshold rounds (--sign-only, --with-signatures) publish no deltas.

    \b
    Example:
      edgeops publish out/vehicle-classifier-2.1.0.edgebundle --fleet http://manager:8080
      edgeops publish out/vehicle-classifier-2.1.0.edgebundle --floor 2.1.0
      edgeops publish vc-2.1.0.edgebundle --sign-only -o targets.partial.json
      edgeops publish vc-2.1.0.edgebundle --with-signatures targets.partial.json
    """
    import tempfile

    from edgeops.fsutil import atomic_write
    from fleet.deltas import DEFAULT_MAX_DELTAS, make_deltas
    from fleet.release_signing import (
        add_signatures,
        check_pins,
        merge_partials,
        signing_state,
    )
    from fleet.repository import targets_update

    if sign_only and out is None:
        raise UsageError("--sign-only needs -o/--out FILE for the partly signed update")
    if partials and (sign_only or floor):
        raise UsageError("--with-signatures uploads an update as it was signed",
                         hint="--floor and --sign-only belong to the round that makes the file")
    if max_deltas and (sign_only or partials):
        raise UsageError("threshold rounds publish no deltas",
                         hint="leave out --max-deltas with --sign-only/--with-signatures")
    show = progress_printer(as_json)
    keys, root = _release_root(keys_home)
    bundle = _verified_bundle(bundle_path, root)
    show(f"verified {bundle.manifest.name}@{bundle.manifest.version} locally")
    client = api_client(fleet_url, token)
    if partials:
        md = merge_partials([(str(p), p.read_bytes()) for p in partials])
        check_pins(md, bundle)
        state = signing_state(root, md)
        if not state.complete:
            raise VerificationError(f"{state.line()}; the manager would refuse it",
                                    hint="more holders must run `edgeops sign-targets` on it")
        show(state.line())
        try:
            out_ = _upload(client, bundle_path, md.to_bytes(), show)
        except ConflictError as exc:
            raise ConflictError(exc.message, hint="someone published in between: start a new "
                                                  "round with `edgeops publish --sign-only`"
                                ) from None
        _published(as_json, out_)
        return
    signers = keys.targets_signers(passphrase_from_env())
    k = 0 if sign_only else DEFAULT_MAX_DELTAS if max_deltas is None else max_deltas
    with tempfile.TemporaryDirectory(prefix="edgeops-deltas-") as work:
        deltas = make_deltas(client, bundle, Path(work), k=k, show=show) if k else []
        pins = {d.path: (d.size, d.sha256) for d in deltas}
        for attempt in range(3):
            md = targets_update(client.current_targets(), bundle, root, floor=floor,
                                deltas=pins)
            data = add_signatures(md, signers)
            state = signing_state(root, md)
            if sign_only:
                assert out is not None
                atomic_write(out, data)
                emit(as_json, {"out": str(out), "version": state.version,
                               "signed_by": list(state.signed_by), "threshold": state.threshold,
                               "floors": state.floors},
                     f"wrote {out}: {state.line()}"
                     + ("" if state.complete else
                        f"\nnext: other holders run `edgeops sign-targets {out.name}`, then "
                        f"`edgeops publish {bundle_path.name} --with-signatures {out.name}`"))
                return
            if not state.complete:
                raise VerificationError(f"this machine holds {len(signers)} targets key(s); "
                                        f"{state.line()}",
                                        hint="sign in rounds: `edgeops publish --sign-only -o FILE`, "
                                             "`edgeops sign-targets FILE`, `--with-signatures FILE`")
            try:
                out_ = _upload(client, bundle_path, data, show, deltas)
                break
            except ConflictError:
                if attempt == 2:
                    raise
                show("someone published in between; retrying with the new targets")
    out_["delta_bytes"] = {d.path: {"size": d.size, "full": d.full_bytes,
                                    "from": d.base.version, "devices": d.base.devices}
                           for d in deltas}
    _published(as_json, out_, [(d.base.version, d.base.target, d.size, d.full_bytes)
                               for d in deltas])


def _upload(client: Any, bundle_path: Path, targets: bytes, show: Callable[[str], None],
            deltas: Sequence[Any] = ()) -> dict[str, Any]:
    show(f"uploading {bundle_path} ({bundle_path.stat().st_size} bytes)")
    upload = client.upload(bundle_path)
    uploads = {d.path: client.upload(d.file)["upload"] for d in deltas}
    return dict(client.publish(upload["upload"], targets, uploads))


def _published(as_json: bool, out: dict[str, Any],
               deltas: Sequence[tuple[str, str, int, int]] = ()) -> None:
    emit(as_json, out, lambda: f"published {out['name']}@{out['version']} (targets "
                               f"v{out['targets_version']}"
                               + (")" if out["new"] else ", already published)")
                               + "".join(f"\n  delta from {v} ({t}): {size} of {full} bytes"
                                         for v, t, size, full in deltas))


@click.command("sign-targets")
@click.argument("partial", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--bundle", "bundle_path", type=click.Path(path_type=Path, exists=True,
                                                         dir_okay=False), default=None,
              help="Check that the update pins exactly this bundle before signing it.")
@click.option("--keys", "keys_home", type=click.Path(path_type=Path), default=None,
              help="EDGEOPS_HOME with your targets key and trust/root.json.")
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the signed copy here (default: replace PARTIAL).")
@json_option
def sign_targets(partial: Path, bundle_path: Path | None, keys_home: Path | None,
                 out: Path | None, as_json: bool) -> None:
    """Add your targets signature to a targets update made by `edgeops publish --sign-only`.

    Run by each further holder of a targets key, on their own machine, with their key under
    $EDGEOPS_HOME/keys. What is signed is shown first (version, floors, signatures so far);
    --bundle also checks that the update pins that bundle's files.

    \b
    Example:
      edgeops sign-targets targets.partial.json --bundle vc-2.1.0.edgebundle
    """
    from edgeops.fsutil import atomic_write
    from fleet.release_signing import add_signatures, check_pins, merge_partials, signing_state

    show = progress_printer(as_json)
    keys, root = _release_root(keys_home)
    md = merge_partials([(str(partial), partial.read_bytes())])
    before = signing_state(root, md)
    show(f"{before.line()}; floors: {before.floors or 'none'}")
    if bundle_path is not None:
        check_pins(md, _verified_bundle(bundle_path, root))
    data = add_signatures(md, keys.targets_signers(passphrase_from_env()))
    state = signing_state(root, md)
    atomic_write(out or partial, data)
    emit(as_json, {"out": str(out or partial), "version": state.version,
                   "signed_by": list(state.signed_by), "threshold": state.threshold,
                   "floors": state.floors, "complete": state.complete},
         f"{out or partial}: {state.line()}"
         + (" (ready: `edgeops publish BUNDLE --with-signatures FILE`)" if state.complete
            else ""))
