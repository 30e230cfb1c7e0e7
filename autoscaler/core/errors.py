"""The project's one error tree, split by what the caller should do.

    AutoscalerError
    ├── ConfigError            reject the input; a running service keeps its last good config
    │   ├── PolicyConfigError  policy YAML problems (one or more located Problems)
    │   └── InputFormatError   traces, cluster models and other files with a location
    ├── SourceError            temporary: skip this read, mark the signal stale, never read as zero
    │   └── SourceTimeout
    └── ActuationError
        ├── ConflictError      409: re-read the object and retry on fresh state
        ├── TransientActuationError  429/5xx/timeouts: back off with jitter and retry
        └── PermanentActuationError  403/404/422: report, do not retry this tick

Every error that points into a file carries Problems with file, line and column so the CLI can
print ``FILE:LINE:COL: path: message`` and never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in an input file. line and column are 1-based; 0 means unknown."""

    file: str
    line: int
    column: int
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class AutoscalerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AutoscalerError):
    """Input that must be rejected as a whole; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PolicyConfigError(ConfigError):
    """A policy YAML file is invalid."""


class InputFormatError(ConfigError):
    """A trace, cluster model or other data file is malformed."""

    @classmethod
    def at(cls, file: str, line: int, column: int, message: str) -> InputFormatError:
        return cls([Problem(file, line, column, message)])


class SourceError(AutoscalerError):
    """A signal could not be read this time. Callers mark the signal stale; never read as zero."""


class SourceTimeout(SourceError):
    """A source did not answer within its deadline."""


class ActuationError(AutoscalerError):
    """A decision could not be applied."""


class ConflictError(ActuationError):
    """The object changed under us (HTTP 409): re-read and retry on fresh state."""


class TransientActuationError(ActuationError):
    """Rate limited, server error or timeout: retry with backoff and jitter."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentActuationError(ActuationError):
    """Forbidden, not found or rejected by schema: report and do not retry this tick."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
