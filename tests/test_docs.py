"""The README and docs/ stay in step with the code: every command, flag and YAML key is written."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

import pydantic

from hpsearch import spec as spec_module
from hpsearch.cli import build_parser
from hpsearch.train.options import MODEL_NAMES, DatasetOptions, TrainerOptions

ROOT = Path(__file__).resolve().parent.parent


def _docs() -> str:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(f.read_text() for f in files)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_flag_is_documented() -> None:
    docs = _docs()
    missing = []
    for name, sub in _subcommands().items():
        if f"hpsearch {name}" not in docs:
            missing.append(f"hpsearch {name}")
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help",) and f"`{flag}" not in docs:
                    missing.append(f"hpsearch {name} {flag}")
    assert not missing, f"not in README.md or docs/*.md: {missing}"


def test_every_documented_command_exists() -> None:
    documented = set(re.findall(r"`hpsearch ([a-z][a-z-]+)", _docs()))
    assert documented <= set(_subcommands()), documented - set(_subcommands())


def _keys(model: type[pydantic.BaseModel], seen: set[type]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    keys = set(model.model_fields)
    for field in model.model_fields.values():
        for inner in _models_in(field.annotation):
            keys |= _keys(inner, seen)
    return keys


def _models_in(annotation: object) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def test_every_study_file_key_is_documented() -> None:
    docs = _docs()
    keys = _keys(spec_module.StudySpec, set())
    for model in vars(spec_module).values():  # every sampler, pruner and parameter kind
        if isinstance(model, type) and issubclass(model, spec_module.SpecModel):
            keys |= _keys(model, set())
    keys |= _keys(TrainerOptions, set()) | _keys(DatasetOptions, set())
    missing = sorted(k for k in keys if f"`{k}`" not in docs)
    assert not missing, f"study-file keys not in README.md or docs/*.md: {missing}"


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## The two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _tree() -> set[str]:
    """Every package (`worker/`) and module (`worker/loop`, top level: `cli`) under hpsearch/."""
    names = set()
    for path in (ROOT / "hpsearch").rglob("*.py"):
        parts = path.relative_to(ROOT / "hpsearch").with_suffix("").parts
        if parts[-1] != "__init__":
            names.add("/".join(parts))
        elif len(parts) > 1:
            names.add("/".join(parts[:-1]) + "/")
    return names


def _architecture_names() -> set[str]:
    """What the Packages section names: each bullet's package, and its modules in bold."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## Packages", 1)[1].split("\n## ", 1)[0]
    names = set()
    for bullet in re.split(r"^- ", section, flags=re.M)[1:]:
        package = re.match(r"\*\*`([a-z_]+)/`\*\*", bullet)
        prefix = f"{package.group(1)}/" if package else ""
        if package:
            names.add(prefix)
            bullet = bullet[package.end() :]
        names |= {prefix + m for m in re.findall(r"\*\*`([A-Za-z_]+)`\*\*", bullet)}
    return names


def test_the_architecture_page_names_every_module_and_only_real_ones() -> None:
    named, tree = _architecture_names(), _tree()
    assert not tree - named, f"not on docs/architecture.md: {sorted(tree - named)}"
    assert not named - tree, f"no such module or package: {sorted(named - tree)}"


def test_the_trainer_page_lists_exactly_the_models_of_the_table() -> None:
    page = (ROOT / "docs" / "trainer.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `model` "))
    listed = re.findall(r"`([a-z0-9_]+)`", row.split("|")[3].split("(a closed list")[0])
    assert listed == list(MODEL_NAMES), f"docs/trainer.md lists {listed}, the table {MODEL_NAMES}"


# Files the docs tell a user to create or a command to write: not in the repository by design.
_CREATED_BY_THE_READER = {
    "docs/gpu-results.md",  # `benchmarks/gpu_check.py --out`, run on a GPU machine
    "deploy/k8s/secret.yaml",  # copied from secret.example.yaml, git-ignored
    "studies/objective.py",  # the reader's own objective
    "studies/x.yaml",  # a sample error message's file
}
_ROOT_PATH = re.compile(
    r"(?<![\w/.-])((?:hpsearch|docs|benchmarks|tests|studies|deploy|shared)/[\w./-]*"
    r"\.(?:py|md|yaml|yml|sh|toml|json|txt|html|png))\b"
)


def test_no_doc_names_a_repository_file_that_does_not_exist() -> None:
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for found in _ROOT_PATH.finditer(doc.read_text(encoding="utf-8")):
            path = found.group(1)
            if path not in _CREATED_BY_THE_READER and not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing
