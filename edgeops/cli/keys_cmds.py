"""``edgeops keys``: create, list and rotate the signing keys under ``$EDGEOPS_HOME/keys``."""

from __future__ import annotations

import click

from edgeops.cli.common import emit, json_option, passphrase_from_env
from edgeops.errors import KeyError_, UsageError
from edgeops.keys import OFFLINE_ROLES, ROLES, KeyStore
from edgeops.trust import create_root, root_path, rotate_root

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """Create, list and rotate signing keys.

    \b
    Offline keys (root, targets) are encrypted with a passphrase; online keys
    (snapshot, timestamp, manager) are for the fleet manager.
    Example:
      EDGEOPS_KEY_PASSPHRASE=... edgeops keys init
      edgeops keys list --json
    """


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace existing keys (old ones are kept as .old).")
@click.option("--targets-keys", "targets_keys", type=click.IntRange(1, 99), default=1,
              show_default=True, help="How many offline targets keys (one per holder).")
@click.option("--threshold", type=click.IntRange(1, 99), default=None,
              help="How many targets keys must sign a release [default: --targets-keys].")
@json_option
def init(force: bool, targets_keys: int, threshold: int | None, as_json: bool) -> None:
    """Create the offline and online keys and the fleet's TUF root.

    With --targets-keys N the targets role gets N keys (targets, targets-2, ... targets-N),
    of which --threshold K must sign every release (bundle and TUF targets). Give each holder
    their own targets-I.pem and keep only the .pub.json files here (docs/SECURITY.md,
    "Thresholds").

    \b
    Example:
      EDGEOPS_HOME=./fleet-keys EDGEOPS_KEY_PASSPHRASE=secret edgeops keys init
      edgeops keys init --targets-keys 3 --threshold 2
    """
    store = KeyStore()
    threshold = targets_keys if threshold is None else threshold
    if threshold > targets_keys:
        raise UsageError(f"--threshold {threshold} is more than the {targets_keys} targets keys",
                         hint="--threshold must be between 1 and --targets-keys")
    if store.exists() and not force:
        raise UsageError(f"keys already exist in {store.dir}",
                         hint="use `edgeops keys list`, or --force to replace them")
    passphrase = passphrase_from_env(confirm=True, prompt="Passphrase for the offline keys")
    if not passphrase:
        raise KeyError_("the passphrase for the offline keys is empty",
                        hint="set a non-empty EDGEOPS_KEY_PASSPHRASE")
    extra = [f"targets-{i}" for i in range(2, targets_keys + 1)]
    for role in (*ROLES, *extra):
        store.generate(role, passphrase if role in OFFLINE_ROLES or role in extra else None)
    if force:  # extra targets keys of an earlier init are not part of this root
        for p in store.dir.glob("targets-*.pub.json"):
            if p.name.removesuffix(".pub.json") not in extra:
                p.rename(p.with_name(p.name + ".old"))
    root = create_root(store, passphrase, targets_threshold=threshold)
    infos = store.list()
    emit(as_json, {"home": str(store.home), "root": str(root_path(store)),
                   "targets_threshold": root.signed.roles["targets"].threshold,
                   "keys": [{"role": k.role, "keyid": k.keyid} for k in infos]},
         lambda: "\n".join([f"created keys in {store.dir}"]
                           + [f"  {k.role:<10} {k.keyid[:16]}" for k in infos]
                           + [f"trust root: {root_path(store)} (targets: {threshold} of "
                              f"{targets_keys} keys must sign)"]))


@keys.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List the keys, their ids and whether they are encrypted.

    \b
    Example:
      edgeops keys list
    """
    store = KeyStore()
    infos = store.list()
    if not infos:
        raise KeyError_(f"no keys in {store.dir}")
    emit(as_json, [{"role": k.role, "keyid": k.keyid, "scheme": k.scheme,
                    "encrypted": k.encrypted, "private": str(k.private_path)} for k in infos],
         lambda: "\n".join(f"{k.role:<10} {k.keyid}  {k.scheme}"
                           f"{'  (encrypted)' if k.encrypted else ''}" for k in infos))


@keys.command("rotate")
@click.argument("role")
@json_option
def rotate(role: str, as_json: bool) -> None:
    """Replace one role's key and sign a new TUF root naming it.

    ROLE is root, targets, snapshot, timestamp or manager, or an extra targets key of a
    threshold (targets-2, ...). The old key is kept beside the new one (``.old``); a new root
    version is signed by the root key (and, when the root key itself rotates, by the old root
    key too), so devices can walk the chain. The targets threshold is kept.

    \b
    Example:
      edgeops keys rotate timestamp
      edgeops keys rotate targets-2      # then hand the new targets-2.pem to its holder
    """
    store = KeyStore()
    if not store.exists():
        raise KeyError_(f"no keys in {store.dir}")
    known = [*ROLES, *store.targets_names()[1:]]
    if role not in known:
        raise UsageError(f"no key role {role!r} here", hint=f"roles are: {', '.join(known)}")
    passphrase = passphrase_from_env(prompt="Passphrase for the offline keys")
    store.signer("root", passphrase)  # fail on a wrong passphrase before changing anything
    offline = role in OFFLINE_ROLES or role.startswith("targets-")
    new = store.generate(role, passphrase if offline else None)
    root = rotate_root(store, passphrase)
    emit(as_json, {"role": role, "keyid": new.keyid, "root_version": root.signed.version},
         f"rotated {role}: new key {new.keyid[:16]}, trust root version {root.signed.version}")
