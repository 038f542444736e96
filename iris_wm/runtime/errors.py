"""The project's own errors: a problem with what was given (a file, an option, a pairing of models) that the user
can fix. The message names the problem and the fix in the library's terms; ``remedy``, where set, names the fix
for a front end, which phrases it its own way (``iris_wm.cli`` prints the command that does it)."""

from __future__ import annotations


class IrisError(Exception):
    """Base of the errors whose message states the fix (``iris_wm.cli`` shows them without a traceback)."""

    def __init__(self, message: str, remedy: str | None = None):
        super().__init__(message)
        self.remedy = remedy
        """A key of the fix (``"encode"``: make a token store; ``"collect"``: make an episode store; ...)."""


class ConfigError(IrisError, ValueError):
    """A setting or argument that cannot work (out of range, contradictory, of the wrong kind)."""
