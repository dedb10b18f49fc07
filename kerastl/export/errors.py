"""Export's errors: `ExportRejected`, raised when the accuracy gate refuses an export, and `error_line`,
which turns the TFLite converter's and quantizer's pages of messages into one line."""

from __future__ import annotations

from kerastl.errors import KerastlError


class ExportRejected(KerastlError):
    """An export did worse than `max_accuracy_drop` allows; nothing was written. `report` holds the figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def error_line(error: BaseException) -> str:
    """The line of a converter's or quantizer's multi-line error that says what went wrong (the last one
    mentioning an error, else the last), at most 300 characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # Converter errors end with the useful line ("... op is neither a custom op nor a flex op").
    interesting = [line for line in lines if "error" in line.lower()] or lines
    text = interesting[-1] if interesting else type(error).__name__
    return text[:300]
