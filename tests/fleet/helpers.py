"""Shared test helpers: wiring a repository and a rollout engine on a store with real keys."""

from __future__ import annotations

from pathlib import Path

from tuf.api.metadata import Metadata, Root

from edgeops.bundle import read_bundle
from edgeops.keys import KeyStore
from edgeops.trust import root_path
from fleet.ports import CommandSigner
from fleet.repository import Repository, sign_targets_update
from fleet.rollout import RolloutEngine
from fleet.store import Device, Store
from tests.edgeops.bundles import PASSPHRASE
from tests.fleet.fakes import FakeDeviceChannel


def repository(store: Store, keys: KeyStore, channel: FakeDeviceChannel | None = None
               ) -> Repository:
    root = Metadata[Root].from_file(str(root_path(keys)))
    repo = Repository(store, root, keys.signer("snapshot"), keys.signer("timestamp"), channel)
    repo.import_roots(root_path(keys).parent)
    return repo


def publish(repo: Repository, keys: KeyStore, bundle: Path) -> None:
    root = Metadata[Root].from_file(str(root_path(keys)))
    targets = sign_targets_update(repo.current_targets(), read_bundle(bundle), root,
                                  keys.signer("targets", PASSPHRASE))
    repo.publish(bundle, targets)


def engine(store: Store, keys: KeyStore, channel: FakeDeviceChannel, clock=None,  # type: ignore[no-untyped-def]
           **kw) -> RolloutEngine:  # type: ignore[no-untyped-def]
    signer = CommandSigner(keys.signer("manager"), store, **({"clock": clock} if clock else {}))
    return RolloutEngine(store, channel, signer, **({"clock": clock} if clock else {}), **kw)


def enrol(store: Store, n: int, prefix: str = "cam", target: str = "x86-cpu",
          device_class: str = "camera", **tags: str) -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    for i, d in enumerate(ids):
        store.upsert_device(Device(d, device_class, target,
                                   {"city": "lyon", "district": str(i % 4), **tags}))
    return ids
