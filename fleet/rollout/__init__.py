"""Staged rollouts: strategy (data), plan (pure decisions), engine (store + channel I/O)."""

from fleet.rollout.engine import RolloutEngine, hardware_class, strategy_from_options
from fleet.rollout.plan import Health, Plan, decide
from fleet.rollout.strategy import PhaseSpec, Strategy, assign_waves, parse_phases

__all__ = [
    "Health",
    "PhaseSpec",
    "Plan",
    "RolloutEngine",
    "Strategy",
    "assign_waves",
    "decide",
    "hardware_class",
    "parse_phases",
    "strategy_from_options",
]
