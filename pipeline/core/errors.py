"""One error type per kind of bad input; the CLI turns them into one clear message and exit code 2."""

from __future__ import annotations


class RecdagError(Exception):
    """Base class for errors the user can fix (bad config, bad data)."""


class ConfigError(RecdagError):
    """params.yaml (or a declared table) has an unknown key, a wrong type or an inconsistent value."""


class DataError(RecdagError):
    """An input file is not what the pipeline expects.

    The message always names the file and, where it applies, the row (1-based line number in the file,
    header included, for CSV) and the field, then says what was expected.
    """

    def __init__(self, file, problem: str, *, row: int | None = None, field: str | None = None,
                 expected: str | None = None):
        self.file = str(file)
        self.row = row
        self.field = field
        self.problem = problem
        self.expected = expected
        where = self.file
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        msg = f"{where}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
