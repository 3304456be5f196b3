"""Every example under studies/ loads and validates (its objective imports, its data is there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch import objective
from hpsearch.spec import load_spec

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert any(p.name == "quickstart.yaml" for p in STUDIES)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    loaded = load_spec(path)
    objective.check(loaded)
    assert loaded.spec.name
