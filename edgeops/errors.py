"""One error tree for the whole toolchain, split the way callers must react.

``BadContentError``: the bytes we were given are wrong (unsigned, tampered, malformed, fails the
accuracy gate). Retrying will not help; the input must change. ``TransportError``: the network or
a service failed; retrying may help. ``UsageError``: the command line itself is wrong.

Every error carries a one-line ``message`` (what is wrong) and a ``hint`` (what to do). The CLI
prints both on one line and maps the class to an exit code (1 act on it, 2 usage).
"""

from __future__ import annotations

__all__ = [
    "AccuracyGateError",
    "BadContentError",
    "ConfigError",
    "ConversionError",
    "EdgeOpsError",
    "InvalidBundleError",
    "KeyError_",
    "TransportError",
    "UnsupportedModelError",
    "UsageError",
    "VerificationError",
]


class EdgeOpsError(Exception):
    """Base of every error edgeops raises on purpose."""

    exit_code: int = 1
    default_hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def diagnostics(self) -> str:
        """One line for the user: what is wrong, then what to do."""
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(EdgeOpsError):
    """The command line or its arguments are wrong."""

    exit_code = 2
    default_hint = "see --help for the expected form"


class ConfigError(EdgeOpsError):
    """Configuration (files, environment) is missing or inconsistent."""


class KeyError_(EdgeOpsError):  # noqa: N801 - trailing underscore avoids shadowing builtins.KeyError
    """A key is missing, unreadable or the passphrase is wrong."""

    default_hint = "run `edgeops keys init` or set EDGEOPS_HOME / EDGEOPS_KEY_PASSPHRASE"


class BadContentError(EdgeOpsError):
    """The content itself is wrong: retrying will not help, the input must change."""


class InvalidBundleError(BadContentError):
    """A bundle file is truncated, malformed or unsafe to unpack."""

    default_hint = "rebuild the bundle with `edgeops build`"


class VerificationError(BadContentError):
    """A signature, digest, size or trust check failed."""

    default_hint = "do not install this file; rebuild and re-sign it with the fleet's targets key"


class UnsupportedModelError(BadContentError):
    """The model uses something a target cannot handle; names every offending node."""

    default_hint = "change the model or pick another --target (see `edgeops targets`)"


class ConversionError(BadContentError):
    """Conversion produced no acceptable artifact."""


class AccuracyGateError(BadContentError):
    """An artifact missed the accuracy budget."""

    default_hint = "raise --max-accuracy-drop, use --precision fp32, or improve calibration data"


class TransportError(EdgeOpsError):
    """A network or service failure; retrying may help."""

    default_hint = "check the URL and that the service is running, then retry"
