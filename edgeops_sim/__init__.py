"""The layer above the parts: the fleet simulator and the demo, which run real agents AND the fleet.

Nothing below imports this package (the import-linter contracts in pyproject.toml say so): the
converters, the agent, the fleet and the hardware tests stand side by side on edgeops, and only
here are a fleet manager and many device agents put together on one machine.

``streams`` (pure: profiles and signals), ``faults`` (what goes wrong and the slow-link
proxy), ``fleet`` (enrolment, agents, the driver loop), ``cli`` (``edgeops sim``), ``demo``
(``edgeops demo``: the whole story) and ``demo_mlflow`` (its ``--mlflow`` registry).
"""

from edgeops_sim.faults import FAULTS, FaultPlan, parse_faults
from edgeops_sim.fleet import SimFleet, SimOptions
from edgeops_sim.streams import DeviceSpec, smart_city

__all__ = ["FAULTS", "DeviceSpec", "FaultPlan", "SimFleet", "SimOptions", "parse_faults",
           "smart_city"]
