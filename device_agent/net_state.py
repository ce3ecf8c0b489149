"""The agent's fleet counters that must survive restarts: last accepted command, state seq.

Why its own module: the command gate (replay protection) and the state reporter (increasing
``seq`` on every report) both read and advance it, and neither should import the daemon.
Written atomically (:func:`edgeops.fsutil.atomic_write`) on every change.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edgeops.fsutil import atomic_write

__all__ = ["NetState"]

log = logging.getLogger(__name__)


@dataclass
class NetState:
    """Counters that must survive restarts: last accepted command, last state report seq."""

    path: Path
    command_seq: int = 0
    command_digest: str = ""
    state_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> NetState:
        try:
            d = json.loads(path.read_bytes())
            return cls(path, int(d["command_seq"]), str(d.get("command_digest", "")),
                       int(d["state_seq"]))
        except FileNotFoundError:
            return cls(path)
        except (ValueError, KeyError, TypeError):
            # A damaged file must not let replays through: refuse everything until re-enrolled
            # would brick the device, so keep going with seq 0 but say so loudly.
            log.error("%s is damaged; command replay protection restarts from 0", path)
            return cls(path)

    def _save(self) -> None:
        atomic_write(self.path, json.dumps({"command_seq": self.command_seq,
                                            "command_digest": self.command_digest,
                                            "state_seq": self.state_seq}).encode())

    def next_state_seq(self) -> int:
        with self._lock:
            self.state_seq += 1
            self._save()
            return self.state_seq

    def accept_command(self, seq: int, digest: str) -> None:
        with self._lock:
            if seq > self.command_seq:
                before = self.command_seq, self.command_digest
                self.command_seq, self.command_digest = seq, digest
                try:
                    self._save()
                except BaseException:     # not saved: a retry must save it, not skip it
                    self.command_seq, self.command_digest = before
                    raise
