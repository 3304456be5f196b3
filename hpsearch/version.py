"""hpsearch's version: one place, read by the package metadata, the CLI and each trial."""

from __future__ import annotations

__version__ = "0.1.0"
