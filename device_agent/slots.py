"""A/B model slots on disk: install into the inactive slot, switch atomically, keep a fallback.

Why this shape: a device must serve a valid model after a power cut at *any* instant. Layout
under ``<data_dir>/slots``::

    a/ b/                     one model each: model.<ext>, golden.npz, manifest.json,
                              signatures.json, and slot.json written LAST (the commit mark)
    pointer.json              {"active": "a"|"b"|null, "previous": ..., "trial": bool, "gen": n}

Invariants, each kept by the order of fsynced steps:

* a slot counts only if its ``slot.json`` exists and every file matches the size and SHA-256 it
  records; ``slot.json`` is removed (and the directory fsynced) before a slot is touched, and
  written (atomically) only after every file in it is fsynced;
* the active slot is never written to; the pointer is replaced atomically (temp + rename);
* before an install starts on the inactive slot, the pointer stops naming it as ``previous``.

:meth:`SlotStore.recover` reads the pointer and falls back (active → previous → the other slot)
to a slot that passes its check, so whatever instant the agent died at, it restarts on the old
model or the new one, never on half of one. File names inside a slot are fixed by this module,
never taken from the bundle, so nothing is ever written outside the slot directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgeops.errors import BadContentError, ConfigError
from edgeops.fsutil import atomic_open, atomic_write, fsync_dir

__all__ = ["SLOT_FILES", "SLOT_NAMES", "SlotInfo", "SlotPointer", "SlotStore", "SlotWriter"]

SLOT_NAMES = ("a", "b")
# Role in the slot → fixed file name; the model's extension comes from its format.
SLOT_FILES = {"manifest": "manifest.json", "signatures": "signatures.json",
              "golden": "golden.npz"}
_META = "slot.json"
_POINTER = "pointer.json"
_CHUNK = 1024 * 1024


def _other(slot: str) -> str:
    return "b" if slot == "a" else "a"


@dataclass(frozen=True)
class SlotInfo:
    """What a committed slot holds; ``files`` maps file name → (sha256, size)."""

    slot: str
    name: str
    version: str
    target: str
    model_file: str
    files: dict[str, tuple[str, int]]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "name": self.name, "version": self.version,
                "target": self.target, "model_file": self.model_file,
                "files": {k: {"sha256": s, "size": n} for k, (s, n) in self.files.items()},
                "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SlotInfo:
        files = {str(k): (str(v["sha256"]), int(v["size"])) for k, v in d["files"].items()}
        return cls(slot=str(d["slot"]), name=str(d["name"]), version=str(d["version"]),
                   target=str(d["target"]), model_file=str(d["model_file"]), files=files,
                   extra=dict(d.get("extra", {})))

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "target": self.target,
                "slot": self.slot}


@dataclass(frozen=True)
class SlotPointer:
    """Which slot serves (``active``), which is the rollback (``previous``), and whether the
    active one is still on trial (activated, health not yet confirmed)."""

    active: str | None = None
    previous: str | None = None
    trial: bool = False
    gen: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps({"active": self.active, "previous": self.previous,
                           "trial": self.trial, "gen": self.gen}, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SlotPointer:
        d = json.loads(data)
        active, previous = d.get("active"), d.get("previous")
        if active not in (*SLOT_NAMES, None) or previous not in (*SLOT_NAMES, None):
            raise ValueError("pointer names an unknown slot")
        return cls(active, previous, bool(d.get("trial", False)), int(d.get("gen", 0)))


class SlotWriter:
    """Writes one slot's files; only :meth:`commit` makes the slot count."""

    def __init__(self, store: SlotStore, slot: str) -> None:
        self._store, self.slot = store, slot
        self.dir = store.root / slot
        self._files: dict[str, tuple[str, int]] = {}

    def _check_name(self, name: str) -> None:
        if name == _META or "/" in name or name.startswith(".") or not name:
            raise ValueError(f"slot file name {name!r} is not allowed")

    def write_bytes(self, name: str, data: bytes) -> None:
        self._check_name(name)
        atomic_write(self.dir / name, data)
        self._files[name] = (hashlib.sha256(data).hexdigest(), len(data))

    def write_stream(self, name: str, src: BinaryIO, expected_sha256: str | None = None,
                     expected_size: int | None = None) -> None:
        """Copy ``src`` in, hashing as it goes; a mismatch with the expected digest aborts."""
        self._check_name(name)
        h, size = hashlib.sha256(), 0
        with atomic_open(self.dir / name) as out:
            while block := src.read(_CHUNK):
                h.update(block)
                size += len(block)
                if expected_size is not None and size > expected_size:
                    raise BadContentError(f"{name} is larger than the {expected_size} bytes "
                                          "the manifest declares",
                                          hint="do not install this file")
                out.write(block)
            digest = h.hexdigest()
            if expected_sha256 is not None and (digest != expected_sha256
                                                or size != expected_size):
                raise BadContentError(f"{name} does not match the manifest's SHA-256/size "
                                      "(artifact altered)", hint="do not install this file")
        self._files[name] = (digest, size)

    def write_from(self, name: str, produce: Callable[[BinaryIO], object],
                   expected_sha256: str, expected_size: int) -> None:
        """Let ``produce`` write the file (a delta being applied), hashing what it writes; a
        mismatch with the expected digest or size aborts and leaves nothing behind."""
        self._check_name(name)
        with atomic_open(self.dir / name) as out:
            w = _HashingWriter(out)
            produce(w)  # type: ignore[arg-type]  # a write-only file object
            if (w.sha256.hexdigest(), w.size) != (expected_sha256, expected_size):
                raise BadContentError(f"{name} does not match the manifest's SHA-256/size "
                                      "(rebuilt wrongly)", hint="do not install this file")
        self._files[name] = (expected_sha256, expected_size)

    def write_file(self, name: str, src: Path, expected_sha256: str | None = None,
                   expected_size: int | None = None) -> None:
        with open(src, "rb") as f:
            self.write_stream(name, f, expected_sha256, expected_size)

    def commit(self, *, name: str, version: str, target: str, model_file: str,
               extra: Mapping[str, Any] | None = None) -> SlotInfo:
        if model_file not in self._files:
            raise ValueError(f"model file {model_file!r} was not written to the slot")
        info = SlotInfo(self.slot, name, version, target, model_file, dict(self._files),
                        dict(extra or {}))
        atomic_write(self.dir / _META, json.dumps(info.to_dict(), sort_keys=True).encode())
        return info


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._out.write(data)


class SlotStore:
    """The two slots and the pointer; every method leaves the disk crash-consistent."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------
    def pointer(self) -> SlotPointer:
        try:
            return SlotPointer.from_bytes((self.root / _POINTER).read_bytes())
        except FileNotFoundError:
            return SlotPointer()
        except (ValueError, TypeError, OSError):
            # Only an outside hand can produce this (the pointer is replaced atomically);
            # recover() then picks a slot by checking both.
            return SlotPointer(gen=-1)

    def info(self, slot: str, *, check_digests: bool = False) -> SlotInfo | None:
        """The slot's committed description, or None if it is empty, partial or damaged."""
        d = self.root / slot
        try:
            info = SlotInfo.from_dict(json.loads((d / _META).read_bytes()))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, KeyError, TypeError, OSError):
            return None
        if info.slot != slot:
            return None
        for fname, (sha, size) in info.files.items():
            p = d / fname
            try:
                if p.stat().st_size != size:
                    return None
            except OSError:
                return None
            if check_digests and _sha256(p) != sha:
                return None
        return info

    def path(self, slot: str, fname: str) -> Path:
        return self.root / slot / fname

    def active(self) -> SlotInfo | None:
        p = self.pointer()
        return self.info(p.active) if p.active else None

    # -- the recovery rule ---------------------------------------------------------------
    def recover(self, *, check_digests: bool = True) -> SlotPointer:
        """Make the pointer name a slot that passes its check (or none); return it.

        Called at agent start. Order of preference: the pointer's active slot, its previous
        slot, then any committed slot (the pointer itself was lost or damaged).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.pointer()
        good = {s for s in SLOT_NAMES if self.info(s, check_digests=check_digests)}
        if p.active in good:
            previous = p.previous if p.previous in good and p.previous != p.active else None
            fixed = SlotPointer(p.active, previous, p.trial, max(p.gen, 0))
        elif p.previous in good:
            fixed = SlotPointer(p.previous, None, False, max(p.gen, 0) + 1)
        elif good:
            fixed = SlotPointer(sorted(good)[0], None, False, max(p.gen, 0) + 1)
        else:
            fixed = SlotPointer(None, None, False, max(p.gen, 0))
        if fixed != p:
            self._write_pointer(fixed)
        self._clean_temp()
        return fixed

    # -- writing -------------------------------------------------------------------------
    def begin_install(self) -> SlotWriter:
        """Empty the inactive slot (it stops being the rollback target first) for writing."""
        p = self.pointer()
        target = _other(p.active) if p.active else "a"
        if p.previous == target:
            self._write_pointer(SlotPointer(p.active, None, p.trial, p.gen + 1))
        d = self.root / target
        if d.exists():
            # The commit mark goes first, so a crash mid-delete leaves an uncommitted slot.
            with contextlib.suppress(FileNotFoundError):
                (d / _META).unlink()
                fsync_dir(d)
            shutil.rmtree(d)
            fsync_dir(self.root)
        d.mkdir(parents=True)
        fsync_dir(self.root)
        return SlotWriter(self, target)

    def activate(self, slot: str, *, trial: bool = True) -> SlotPointer:
        """Switch serving to a committed ``slot``; the old active becomes ``previous``."""
        if self.info(slot) is None:
            raise ConfigError(f"slot {slot} holds no committed model", hint="install one first")
        p = self.pointer()
        if p.active == slot:
            new = SlotPointer(slot, p.previous, trial, p.gen + 1)
        else:
            new = SlotPointer(slot, p.active, trial, p.gen + 1)
        self._write_pointer(new)
        return new

    def confirm(self) -> SlotPointer:
        """The active slot passed its health check: it is no longer on trial."""
        p = self.pointer()
        new = SlotPointer(p.active, p.previous, False, p.gen + 1)
        self._write_pointer(new)
        return new

    def rollback(self) -> SlotPointer | None:
        """Serve ``previous`` again; the failed slot is kept for inspection but not pointed at.

        Returns None (and changes nothing) when there is no committed previous slot.
        """
        p = self.pointer()
        if p.previous is None or self.info(p.previous) is None:
            return None
        new = SlotPointer(p.previous, None, False, p.gen + 1)
        self._write_pointer(new)
        if p.active is not None:
            self._uncommit(p.active)
        return new

    def deactivate(self) -> SlotPointer:
        """No model at all (the first install failed and there is nothing to go back to)."""
        p = self.pointer()
        new = SlotPointer(None, None, False, p.gen + 1)
        self._write_pointer(new)
        for s in SLOT_NAMES:
            self._uncommit(s)
        return new

    def status(self) -> dict[str, Any]:
        p = self.pointer()
        slots: dict[str, Any] = {}
        for s in SLOT_NAMES:
            info = self.info(s)
            slots[s] = None if info is None else info.summary() | {
                "role": "active" if s == p.active else
                "previous" if s == p.previous else "inactive"}
        active = self.info(p.active) if p.active else None
        return {"active": active.summary() if active else None, "trial": p.trial,
                "gen": p.gen, "slots": slots}

    def _uncommit(self, slot: str) -> None:
        """Keep a failed slot's files for inspection, but never serve it again."""
        d = self.root / slot
        try:
            os.replace(d / _META, d / "slot.failed.json")
            fsync_dir(d)
        except FileNotFoundError:
            pass

    def _write_pointer(self, p: SlotPointer) -> None:
        atomic_write(self.root / _POINTER, p.to_bytes())

    def _clean_temp(self) -> None:
        for d in (self.root, *(self.root / s for s in SLOT_NAMES)):
            if d.is_dir():
                for tmp in d.glob(".*.tmp"):
                    with contextlib.suppress(OSError):
                        tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()
