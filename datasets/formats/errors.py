"""The one error type raised by every raw-format parser.

Ingest catches :class:`FormatError` per file and turns it into a row of the rejects table
(``path``, ``check``, ``reason``), so parsers must never leak ``IndexError``, ``struct.error``,
``json.JSONDecodeError`` and the like for bad *content*.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pathlib import Path

Check = Literal[
    "size", "header", "payload", "finite", "empty", "label", "calib", "pose", "class",
    "box_size", "path", "missing", "duplicate", "time_gap",
]
CHECKS: frozenset[str] = frozenset(Check.__args__)  # type: ignore[attr-defined]


class FormatError(ValueError):
    """A raw input file failed one named check.

    Attributes:
        path: The offending file (as given, stringified).
        check: Short machine name of the failed check, one of :data:`CHECKS`.
        reason: One readable sentence saying what is wrong.
    """

    def __init__(self, path: str | Path, check: Check, reason: str) -> None:
        if check not in CHECKS:
            raise ValueError(f"unknown FormatError check {check!r}")
        self.path = str(path)
        self.check: str = check
        self.reason = reason
        super().__init__(f"{self.path}: {check}: {reason}")

    def __reduce__(self) -> tuple[type[FormatError], tuple[str, str, str]]:
        # Keeps the error picklable across dask workers (ValueError pickles only args).
        return (type(self), (self.path, self.check, self.reason))
