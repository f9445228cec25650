"""The two kinds of failure: the user's input (exit 2, one line) and edgetrim's own bugs (exit 1).

Library messages name parameters in backticks (`budget`); ``UserError.render`` swaps each for the
caller's spelling (the CLI passes its flags, e.g. ``--budget``), ``str()`` drops the backticks.
"""

from __future__ import annotations

import re

PARAMETER = re.compile(r"`([a-z_][a-z0-9_]*)`")


class NamesParameters(Exception):
    """An error whose message names parameters in backticks."""

    def __str__(self) -> str:
        return self.render({})

    def render(self, names: dict[str, str]) -> str:
        """The message with every `parameter` spelled as ``names`` says (default: its own name)."""
        return PARAMETER.sub(lambda m: names.get(m[1], m[1]), super().__str__())


class UserError(NamesParameters):
    """A problem with the user's input: the message names it and the fix, no traceback is shown."""


class EdgetrimBug(Exception):
    """An internal inconsistency (never the user's input): reported as a bug, exit 1."""
