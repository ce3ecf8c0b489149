"""The hooks through which the agent drives its parts from its I/O thread.

Why it exists: :class:`device_agent.daemon.Agent` composes parts (state reporter, telemetry
collector, and whatever a feature adds: a data-capture uploader, say) and drives them from one
I/O thread. A part that needs the I/O thread subclasses :class:`AgentPart` and overrides only
the hooks it uses; the agent calls them in the order of its ``parts`` list. Every hook runs on
the I/O thread and must not block (no network waits, no long disk work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["AgentPart"]


class AgentPart:
    """No-op hooks; a part overrides what it needs."""

    def subscriptions(self) -> Sequence[str]:
        """MQTT topic filters the part needs; subscribed when the agent starts."""
        return ()

    def handle(self, topic: str, payload: bytes) -> bool:
        """A message the agent's own routes did not take; True if this part consumed it."""
        return False

    def tick(self, now: float) -> None:
        """Once per pass of the I/O loop (at least every ``idle_poll_s``)."""

    def heartbeat(self) -> dict[str, Any]:
        """Fields this part adds to the heartbeat telemetry record (``HeartbeatRecord.parts``,
        sent flat beside the agent's own; a name of the record's own fields is refused)."""
        return {}

    def close(self) -> None:
        """The agent has stopped and no thread uses the part any more."""
