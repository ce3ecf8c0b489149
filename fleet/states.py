"""The per-device deployment state machine: which reported phase may replace which.

Pure and tiny on purpose: the store applies it inside the transaction that records a device's
``state`` report, and the rollout engine's own transitions (notify, time out) use it too, so the
rules live in exactly one place. Ordering of reports is already guaranteed by the device's
``seq``; these rules stop a stale or confused report from undoing a terminal outcome.
"""

from __future__ import annotations

from edgeops.protocol import DevicePhase

__all__ = ["FAILURE_STATES", "IN_FLIGHT_STATES", "SUCCESS_STATES", "apply_report", "is_terminal"]

SUCCESS_STATES = frozenset({DevicePhase.HEALTHY.value})
FAILURE_STATES = frozenset({DevicePhase.FAILED.value, DevicePhase.ROLLED_BACK.value,
                            DevicePhase.TIMED_OUT.value})
IN_FLIGHT_STATES = frozenset({DevicePhase.NOTIFIED.value, DevicePhase.DOWNLOADING.value,
                              DevicePhase.VERIFYING.value, DevicePhase.INSTALLING.value,
                              DevicePhase.ACTIVATED.value, DevicePhase.DEFERRED.value})


def is_terminal(state: str) -> bool:
    return state in SUCCESS_STATES or state in FAILURE_STATES


def apply_report(current: str, reported: DevicePhase) -> str | None:
    """The state after a device reports ``reported`` while at ``current``; None = ignore.

    - a device never reports ``pending`` (only the manager puts a device there);
    - ``failed`` may still become ``rolled-back``; ``rolled-back`` is final;
    - ``healthy`` may still fail later (health checks keep running) but not regress;
    - ``timed-out`` is the manager's verdict, and a late device that reports in converges;
    - anything in flight follows the device, whose reports arrive in ``seq`` order.
    """
    if reported is DevicePhase.PENDING or current == reported.value:
        return None
    if current == DevicePhase.ROLLED_BACK.value:
        return None
    if current == DevicePhase.FAILED.value:
        return reported.value if reported is DevicePhase.ROLLED_BACK else None
    if current == DevicePhase.HEALTHY.value:
        return reported.value if reported in (DevicePhase.FAILED, DevicePhase.ROLLED_BACK) else None
    return reported.value
