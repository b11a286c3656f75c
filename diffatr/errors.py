"""The one exception type for user errors (bad input, missing files, wrong options).

The CLI prints a `UserError` as a one-line message with no traceback; any other exception is a
bug in diffatr and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: the message names the file or option and says what to do."""


class ConfigError(UserError, ValueError):
    """A setting out of its range: a user error for the CLI, a ValueError for API callers."""
