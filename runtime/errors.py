"""Errors that the CLI turns into one line on stderr and exit code 2."""


class UserError(Exception):
    """A problem with the user's input: the message names it and the fix, no traceback is shown."""
