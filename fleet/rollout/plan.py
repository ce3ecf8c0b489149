"""The rollout's decisions, as a pure function of persisted state and the clock.

``decide`` takes a deployment, its device rows, the strategy, telemetry health and ``now``,
and says what to do next: which devices to time out, which to notify, whether to advance a
phase, finish or abort. No I/O: the engine (``fleet.rollout.engine``) applies the plan through
the store's compare-and-set transitions, so replaying a plan after a crash is harmless.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.rollout.strategy import Strategy
from fleet.states import FAILURE_STATES, IN_FLIGHT_STATES, SUCCESS_STATES, is_terminal
from fleet.store.models import Deployment, DeploymentDevice

__all__ = ["Health", "Plan", "decide"]


@dataclass(frozen=True)
class Health:
    """Telemetry of the devices running the new bundle during the current phase."""

    inferences: int = 0
    error_rate: float | None = None
    p95_ms: float | None = None
    bundle_p95_ms: float | None = None      # the bundle's own figure (manifest metrics)


@dataclass
class Plan:
    time_out: list[str] = field(default_factory=list)
    notify: list[str] = field(default_factory=list)
    advance_to: int | None = None
    finish: str | None = None               # "completed" | "aborted"
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return not (self.time_out or self.notify or self.finish or self.advance_to is not None)


def _abort_reason(counts: Counter[str], s: Strategy, health: Health | None) -> str | None:
    failures = sum(counts[x] for x in FAILURE_STATES)
    finished = failures + sum(counts[x] for x in SUCCESS_STATES)
    if s.abort_max_failures is not None and failures >= s.abort_max_failures:
        return f"{failures} devices failed (abort at {s.abort_max_failures})"
    if finished >= s.abort_min_sample and failures * 100.0 >= s.abort_failure_pct * finished:
        return (f"{failures} of {finished} finished devices failed "
                f"({100.0 * failures / finished:.0f}% ≥ {s.abort_failure_pct:g}%)")
    if health is not None and health.inferences >= s.min_inferences:
        if (s.max_error_rate is not None and health.error_rate is not None
                and health.error_rate > s.max_error_rate):
            return (f"inference error rate {health.error_rate:.2%} is above "
                    f"{s.max_error_rate:.2%}")
        if (s.max_latency_factor is not None and health.p95_ms is not None
                and health.bundle_p95_ms and health.p95_ms > s.max_latency_factor
                * health.bundle_p95_ms):
            return (f"p95 latency {health.p95_ms:.1f} ms is over {s.max_latency_factor:g}× the "
                    f"bundle's {health.bundle_p95_ms:.1f} ms")
    return None


def decide(dep: Deployment, rows: Sequence[DeploymentDevice], strategy: Strategy, now: float,
           health: Health | None = None) -> Plan:
    """What a running deployment should do at ``now`` (a paused or finished one: nothing)."""
    plan = Plan()
    if dep.status != "running":
        return plan
    states: dict[str, str] = {}
    for r in rows:
        state = r.state
        if (state in IN_FLIGHT_STATES and r.notified_at is not None
                and now - r.notified_at >= strategy.device_timeout_s):
            plan.time_out.append(r.device_id)
            state = "timed-out"
        states[r.device_id] = state
    counts: Counter[str] = Counter(states.values())
    plan.counts = dict(counts)
    reason = _abort_reason(counts, strategy, health)
    if reason is not None:
        plan.finish, plan.reason = "aborted", reason
        return plan

    phase = dep.phase_index
    current = [r for r in rows if r.wave <= phase]
    pending = sorted((r for r in current if states[r.device_id] == "pending"),
                     key=lambda r: (r.wave, r.device_id))
    budget = len(pending)
    if strategy.max_per_minute is not None:
        recent = sum(1 for r in rows if r.notified_at is not None and now - r.notified_at < 60.0)
        budget = max(0, min(budget, strategy.max_per_minute - recent))
    plan.notify = [r.device_id for r in pending[:budget]]

    if pending or any(not is_terminal(states[r.device_id]) for r in current):
        return plan
    last_wave = max((r.wave for r in rows), default=0)
    if phase >= last_wave:
        plan.finish = "completed"
        plan.reason = _summary(counts)
        return plan
    finished_at = max((r.updated_at for r in current if r.wave == phase),
                      default=dep.phase_started_at)
    if now - max(finished_at, dep.phase_started_at) >= strategy.bake_s:
        plan.advance_to = phase + 1
    return plan


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def describe(plan: Plan) -> dict[str, Any]:
    return {"time_out": plan.time_out, "notify": plan.notify, "advance_to": plan.advance_to,
            "finish": plan.finish, "reason": plan.reason}
