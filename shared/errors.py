"""Errors a user can cause. The CLI prints them as one line (what + how to fix), no traceback."""


class LorafleetError(Exception):
    """A problem the user can fix; the message says what is wrong and the way out."""

    exit_code = 2


class ConfigError(LorafleetError):
    """A config file or setting is invalid (names the file, the field, what was expected)."""


class RetriableError(Exception):
    """A transient failure (endpoint down, out of resources): the bus redelivers the message."""
