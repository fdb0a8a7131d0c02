"""The base of every error a user can cause and fix; the CLI prints its message as one line, exit code 2."""


class UserError(Exception):
    """Bad input or environment: the message says what was wrong and what to do."""


def one_line(what: object) -> str:
    """`what` (an exception or a text) on one line, whitespace runs collapsed; an exception
    without a message gives its type name."""
    text = " ".join(str(what).split())
    if not text and isinstance(what, BaseException):
        return type(what).__name__
    return text
