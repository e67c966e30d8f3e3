"""The one exception type a user's mistake raises: the CLI prints its message on one line, no traceback."""


class PeftrunError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""
