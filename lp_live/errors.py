"""The base of every error a user can cause and fix; the CLI prints its message as one line, exit code 2."""


class UserError(Exception):
    """Bad input or environment: the message says what was wrong and what to do."""
