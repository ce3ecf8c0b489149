"""Moved to :mod:`edgeops.netloop` (shared by the agent and the manager); re-exported here."""

from edgeops.netloop import Member, NetLoop, Timer

__all__ = ["Member", "NetLoop", "Timer"]
