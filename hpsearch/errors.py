"""The one exception root of hpsearch: every error a user can cause is an HpsearchError."""

from __future__ import annotations


class HpsearchError(Exception):
    """A problem the user can fix. The CLI prints it as one line and exits with code 2.

    The message must say what must hold, what was found, and how to fix it.
    """


class SpecError(HpsearchError):
    """The study file is missing, malformed, or describes something impossible."""


class StorageError(HpsearchError):
    """The storage URL is unusable: bad URL, password in the file, server unreachable."""


class ObjectiveError(HpsearchError):
    """The objective cannot be built: import failure, bad command template, bad result."""


class DataError(HpsearchError):
    """The training data cannot be used: empty class, no readable images, bad split."""


class BatchSizeError(HpsearchError):
    """No batch size in the requested range fits the device."""
