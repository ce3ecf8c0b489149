"""One agent in its own process, so the simulator can cut its power (SIGKILL) mid-install.

``python -m edgeops_sim.agent_proc CONFIG MQTT_VERSION DEFERRED_RETRY_S``: the real
:func:`device_agent.daemon.run` with the simulator's settings (MQTT 3.1.1 for amqtt).
"""

from __future__ import annotations

import sys

from device_agent.config import AgentConfig
from device_agent.daemon import DaemonSettings, run
from device_agent.diskspace import DiskLimits

__all__ = ["main"]


def main(argv: list[str]) -> int:
    config, version, retry = argv[0], int(argv[1]), float(argv[2])
    return run(AgentConfig.from_file(config),
               settings=DaemonSettings(mqtt_version=version, deferred_retry_s=retry,
                                       disk=DiskLimits(reserve_bytes=0)))  # a shared host disk


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
