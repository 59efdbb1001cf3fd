"""The one exception type that reaches users as a one-line message."""


class HdiffError(Exception):
    """Bad input or an unmet precondition; the CLI prints `hdiff: <message>` and exits 2."""
