"""Hardware-in-the-loop checks that bless a bundle for one hardware class.

Run on the device itself: ``pytest hardware_tests --bundle FILE [--target PROFILE]`` (or
``python -m hardware_tests --bundle FILE``). The suite loads the artifact for this machine's
target in its intended runtime and provider, compares golden outputs, latency and memory with
the manifest's figures and checks repeated runs are stable; the JSON report it writes is what
``edgeops fleet bless`` uploads (:func:`fleet.bless.upload_blessing`). See
docs/HARDWARE_TESTS.md.
"""

from edgeops.blessing import CheckResult, HardwareReport, render_markdown, write_report
from hardware_tests.settings import DEFAULT_SETTINGS, HardwareSettings, default_target

__all__ = [
    "DEFAULT_SETTINGS",
    "CheckResult",
    "HardwareReport",
    "HardwareSettings",
    "default_target",
    "render_markdown",
    "write_report",
]
