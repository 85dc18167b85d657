"""User-facing errors: one line that says what was wrong and how to fix it."""


class EMOError(Exception):
    """An error caused by the user's input or environment, reported as one line without a traceback."""
