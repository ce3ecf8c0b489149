"""The fleet simulator: many real device agents in one process, fed realistic sensor streams.

``streams`` (pure: profiles and signals), ``faults`` (what goes wrong and the slow-link
proxy), ``fleet`` (enrolment, agents, the driver loop), ``cli`` (``edgeops sim``).
"""

from fleet.sim.faults import FAULTS, FaultPlan, parse_faults
from fleet.sim.fleet import SimFleet, SimOptions
from fleet.sim.streams import DeviceSpec, smart_city

__all__ = ["FAULTS", "DeviceSpec", "FaultPlan", "SimFleet", "SimOptions", "parse_faults",
           "smart_city"]
