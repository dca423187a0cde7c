"""The errors users see.

Every error a user can cause (an unknown name, a bad config key, a malformed data
file) is a :class:`GafError`. The CLI prints its message without a traceback and
exits with :attr:`GafError.exit_code` (2 for usage and data errors).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GafError(Exception):
    """Base class of the errors gaf reports to users (printed without a traceback)."""

    exit_code = 2


class UnknownComponent(GafError, KeyError):
    """A kind or a component name that the registry does not know."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(self._message())

    def _message(self) -> str:
        msg = f"unknown {self.kind} {self.name!r}"
        hint = did_you_mean(self.name, self.known)
        if hint:
            return msg + hint
        if self.known:
            return msg + "; known: " + ", ".join(self.known)
        return msg

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateComponent(GafError):
    """A second registration of a name that is already taken (pass replace=True)."""


class BadConfig(GafError):
    """A config file or override that does not fit the config's fields or types."""


class BadData(GafError):
    """A data file that cannot be read; the message names the file, line and field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            if field is not None:
                where += f": field {field!r}"
            where += ": "
        super().__init__(where + message)


class PluginError(GafError):
    """A third-party plugin that cannot be imported or does not fit its interface."""


class NonFiniteLoss(GafError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""

    exit_code = 3


class Interrupted(GafError):
    """The user interrupted a run (Ctrl-C); it can be continued with ``--resume``."""

    exit_code = 130


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for close matches of ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
