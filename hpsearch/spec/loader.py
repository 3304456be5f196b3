"""`load_spec(path)`: read the YAML, validate it into a `StudySpec`, locate every error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hpsearch.errors import SpecError
from hpsearch.spec._base import KeyPath, describe, unknown_key_message
from hpsearch.spec.messages import first_problem, format_error
from hpsearch.spec.objectives import TrainerObjective
from hpsearch.spec.params import CategoricalParam
from hpsearch.spec.reader import read_yaml
from hpsearch.spec.study import StudySpec
from hpsearch.train.options import TrainerOptions


class LoadedSpec:
    """A validated spec together with where it came from, for errors found later."""

    def __init__(self, spec: StudySpec, path: Path, lines: dict[KeyPath, int]) -> None:
        self.spec = spec
        self.path = path
        self._lines = lines

    def error(self, keys: KeyPath, message: str) -> SpecError:
        """A `SpecError` for `keys`, located at their line in the file."""
        return SpecError(format_error(self.path, self._lines, keys, message))

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate a study file.

    Raises:
        SpecError: one line, ``file:line: key.path: what is wrong and the fix``.
    """
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(format_error(path, {(): 1}, (), _not_a_mapping(data)))
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        keys, message = first_problem(e, StudySpec)
        raise SpecError(format_error(path, lines, keys, message)) from None
    loaded = LoadedSpec(spec, path, lines)
    if isinstance(spec.objective, TrainerObjective):
        _check_trainer_options(loaded, spec)
    if not spec.search_space:  # last: a more specific mistake elsewhere is said first
        raise loaded.error(
            ("search_space",),
            "names no parameter, so every trial would train the same settings; list what to "
            "search, e.g. `search_space: {lr: {type: float, low: 1e-4, high: 0.1, log: true}}` "
            "(`hpsearch init DATA_DIR` writes a study file with one)",
        )
    return loaded


def _not_a_mapping(data: Any) -> str:
    needs = "the study file must be a mapping of keys such as `name:` and `objective:`"
    if data is None:
        return f"{needs}, but it is empty (or only comments); see docs/study-file.md"
    return f"{needs}, but got {describe(data)}; see docs/study-file.md"


def _check_trainer_options(loaded: LoadedSpec, spec: StudySpec) -> None:
    """Validate the fixed trainer options with each searched option at its lowest value."""
    assert isinstance(spec.objective, TrainerObjective)
    sample: dict[str, Any] = {}
    for name, param in spec.search_space.items():
        sample[name] = param.choices[0] if isinstance(param, CategoricalParam) else param.low
    try:
        TrainerOptions.model_validate({**spec.objective.options, **sample})
    except ValidationError as e:
        keys, message = first_problem(e, TrainerOptions)
        if keys and keys[0] in spec.search_space:
            raise loaded.error(("search_space", *keys), message) from None
        if len(keys) == 1 and keys[0] not in TrainerOptions.model_fields:
            fixed = ["trainer", "keep_checkpoints", "resume", "resume_every_minutes"]
            valid = [*fixed, *sorted(TrainerOptions.model_fields)]
            message = unknown_key_message(str(keys[0]), valid)
        raise loaded.error(("objective", *keys), message) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the study file, for editor completion (yaml-language-server)."""
    schema = StudySpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hpsearch study file"
    return schema
