"""The device agent: verified installs into A/B slots, health checks, local inference.

It runs on every sensor, camera and vehicle and must never leave a device without a working
model. Imports here stay light (no ONNX Runtime, no paho) so ``edgeops --help`` and the agent's
resident size stay small; heavy modules load when they are used.
"""

from edgeops import __version__ as AGENT_VERSION  # noqa: N812 - the agent ships with edgeops

__all__ = ["AGENT_VERSION"]
