"""Errors that carry a one-line, user-facing cause (the CLI prints them without a traceback)."""


class FraudstreamError(Exception):
    """A failure the user can act on; ``str(exc)`` is one line."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name when empty), cut at ``limit`` characters."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
