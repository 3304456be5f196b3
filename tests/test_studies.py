"""Every example under studies/ loads and validates (its objective imports, its data is there),
and every study file the tests write that loads also passes `hpsearch schema` (conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import check_against_schema

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


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_example_passes_the_json_schema(path: Path) -> None:
    """`hpsearch schema` once rejected the quickstart's own `timeout: 5m`."""
    check_against_schema(path)


def test_the_schema_still_refuses_what_the_loader_refuses(tmp_path: Path) -> None:
    import jsonschema

    path = tmp_path / "bad.yaml"
    path.write_text((STUDIES[0].read_text()).replace("timeout: 5m", "timeout: five minutes"))
    assert "five minutes" in path.read_text()
    with pytest.raises(jsonschema.ValidationError):
        check_against_schema(path)


def test_the_examples_shipped_in_the_package_are_the_ones_in_studies() -> None:
    """`hpsearch examples` writes the package's copies: they must not drift from studies/."""
    from hpsearch.commands.examples import example_files

    assert example_files() == {p.name: p.read_text() for p in STUDIES}
