"""The exception hierarchy every part of ``serving`` raises.

Callers catch ``ServingError`` for anything of ours; the subclasses say which part failed and carry
enough to print a message that names the field or the object and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass


class ServingError(Exception):
    """Base class of every error raised by ``serving``."""


@dataclass(frozen=True)
class FieldError:
    """One rejected field: a dotted path into the object (``spec.predictor.minReplicas``) and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class AdmissionError(ServingError):
    """An object failed admission (defaulting or validation); nothing was changed.

    ``errors`` lists every rejected field, so a user fixes them all in one pass.
    """

    def __init__(self, errors: list[FieldError] | FieldError, kind: str = "", name: str = "") -> None:
        self.errors: list[FieldError] = [errors] if isinstance(errors, FieldError) else list(errors)
        self.kind = kind
        self.name = name
        target = f"{kind} {name!r}".strip() if (kind or name) else "object"
        lines = "\n".join(f"  - {error}" for error in self.errors)
        super().__init__(f"{target} is invalid:\n{lines}")

    @property
    def field(self) -> str:
        return self.errors[0].field

    @property
    def reason(self) -> str:
        return self.errors[0].reason


class ManifestError(ServingError):
    """A manifest file cannot be read as Kubernetes objects (missing, too large, not YAML, not mappings)."""


class RuntimeResolutionError(ServingError):
    """No ServingRuntime can serve a predictor. ``reason`` is KServe's status reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class StorageError(ServingError):
    """A model could not be fetched from its storage URI."""


class UnsafeArchiveError(StorageError):
    """An archive entry would be written outside the extraction directory."""


class PlatformError(ServingError):
    """The platform refused or failed an operation."""


class NotFoundError(PlatformError):
    """The named object does not exist."""


class DaemonNotRunningError(PlatformError):
    """The embedded platform's daemon is not running (start it with ``odh up``)."""


class ReadyTimeoutError(PlatformError):
    """An object did not become Ready in time; ``status`` is the last one seen."""

    def __init__(self, message: str, status: dict | None = None) -> None:
        self.status = status or {}
        super().__init__(message)


class RegistryError(ServingError):
    """The model registry refused or failed an operation."""
