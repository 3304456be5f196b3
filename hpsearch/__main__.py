"""`python -m hpsearch` runs the CLI."""

from __future__ import annotations

import sys

from hpsearch.cli import main

sys.exit(main())
