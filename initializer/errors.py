"""The Initializer's error type: a message a user can act on, printed without a traceback."""


class InitializerError(Exception):
    """Bad input or a refused device: names what is wrong and what to do."""

    exit_code = 1


class UsageError(InitializerError):
    """Wrong or missing input from the caller (files, options, environment)."""

    exit_code = 2
