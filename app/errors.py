"""Errors that carry a one-line, user-facing cause (the CLI prints them without a traceback)."""


class FraudstreamError(Exception):
    """A failure the user can act on; ``str(exc)`` is one line."""
