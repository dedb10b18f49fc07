"""The one exception type that kerastl raises for problems the user can fix.

A `KerastlError` message is a single line that names the problem and the fix. The CLI prints it and
exits 1, without a traceback; the Python API lets it propagate.
"""


class KerastlError(Exception):
    """A problem with the user's input, files or environment, described in one line."""


class UsageError(KerastlError, ValueError):
    """An argument value is invalid (the CLI exits 2, as for any other usage error)."""


def one_line(value: object) -> str:
    """`value`'s text on one line: every run of whitespace, line breaks included, becomes one space (for
    quoting an exception or a path inside a `KerastlError` message)."""
    return " ".join(str(value).split())
