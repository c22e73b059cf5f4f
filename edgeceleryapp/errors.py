"""The error types every layer raises, so callers decide by type, never by message text.

Tasks retry ``TransientError`` with back-off and turn ``PermanentError`` into the step's
``X_FAILED`` state at once; the command line turns ``ValidationFailed`` into exit code 2.
"""

from __future__ import annotations


class EdgeCeleryError(Exception):
    """Base of all edgecelery errors."""


class TransientError(EdgeCeleryError):
    """Worth retrying: network trouble, a command time-out, a busy scheduler, a step not ready."""


class Parked(EdgeCeleryError):
    """The site may not take this job yet (queue limit, resting site): it waits, with no
    message and no retry spent, until the site's tick admits it."""


class PermanentError(EdgeCeleryError):
    """Retrying cannot help: bad input, unknown application, missing file, non-zero exit."""


class ApplicationNotAllowed(PermanentError):
    """The job names an application that is not registered for its site (the HUST'17 paper, 2.6)."""


class UnsafePath(PermanentError):
    """A path from a job would leave the directory it is confined to."""


class ConfigurationError(PermanentError):
    """The settings file or an override is wrong; names the key."""


class NotFound(EdgeCeleryError):
    """A job, subjob or application that the caller named does not exist."""


class InvalidState(EdgeCeleryError):
    """The requested operation does not fit the record's current state."""


class ValidationFailed(PermanentError):
    """A message or record failed validation; ``errors`` lists every bad field at once."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in errors))
