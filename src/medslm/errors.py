"""Errors a user can act on.

Every error medslm raises on bad input is a :class:`MedslmError`: the CLI prints its message as one
line (no traceback) and exits non-zero. Messages say what failed, the value, and the fix.
"""


class MedslmError(Exception):
    """An error caused by input the user can fix (a path, a flag, a file, a record)."""

    exit_code = 2


class ModelNotFound(MedslmError):
    pass


class ArtifactError(MedslmError):
    pass


class DataError(MedslmError):
    """A dataset file is missing or malformed. The message names the file, record and field."""


class ConfigError(MedslmError):
    pass
