"""What one trial runs: a Python function, a command, or the built-in trainer."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from hpsearch.spec._base import Duration, Problem, SpecModel, describe, parse_duration


class FunctionObjective(SpecModel):
    """A Python function `name(params, report)`; every other key is a fixed option."""

    model_config = ConfigDict(extra="allow", frozen=True)
    function: str

    @field_validator("function")
    @classmethod
    def _shape(cls, value: str) -> str:
        target, _, name = value.rpartition(":")
        if not target or not name.isidentifier():
            raise ValueError(
                f"`function` must look like `train.py:train` or `package.module:train`, "
                f"but got {value!r}"
            )
        return value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CommandObjective(SpecModel):
    """Any program; `{name}` placeholders take the trial's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    command: str
    trial_timeout: Duration | None = None

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                f"must be a command line such as `python train.py --lr {{lr}}`, but got {value!r}"
            )
        return value

    @field_validator("trial_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainerObjective(SpecModel):
    """The built-in trainer; every other key is a fixed `TrainerOptions` value."""

    model_config = ConfigDict(extra="allow", frozen=True)
    trainer: Literal["image_classification"]
    keep_checkpoints: int = Field(3, ge=0)
    # Resume checkpoints (docs/trainer.md): saved after an epoch when at least this many
    # minutes passed since the last one (0: after every epoch); `resume: false` saves none.
    resume: bool = True
    resume_every_minutes: float = Field(0.0, ge=0)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


_KINDS = ("function", "command", "trainer")
_ONE_OF = (
    "exactly one of `function: file.py:name`, `command: ...` or `trainer: image_classification`"
)


def _objective_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):  # serialising a validated spec
        value = {k: True for k in _KINDS if hasattr(value, k)}
    if isinstance(value, Mapping):
        kinds = [k for k in _KINDS if k in value]
        if len(kinds) == 1:
            return kinds[0]
    return None


def _one_kind(value: Any) -> Any:
    """Explain an objective that names no kind, two kinds, or is not a mapping at all."""
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, Mapping):
        hint = ""
        if isinstance(value, str) and value.isprintable() and len(value) <= 80:
            kind = "function" if re.fullmatch(r"[\w./-]+:\w+", value) else "command"
            hint = f"; write `objective: {{{kind}: {value}}}`"
        raise Problem((), f"must be a mapping with {_ONE_OF}, but got {describe(value)}{hint}")
    kinds = [k for k in _KINDS if k in value]
    if len(kinds) > 1:
        both = " and ".join(f"`{k}`" for k in kinds)
        raise Problem((), f"needs {_ONE_OF}, but got {both}; keep one")
    if not kinds:
        for key in value:
            close = difflib.get_close_matches(str(key), _KINDS, n=1)
            if close:
                raise Problem(str(key), f"unknown key; did you mean `{close[0]}`? {_needs()}")
        found = ", ".join(f"`{k}`" for k in value) or "an empty mapping"
        raise Problem((), f"needs {_ONE_OF}, but got only {found}")
    return value


def _needs() -> str:
    return f"the objective needs {_ONE_OF}"


ObjectiveSpec = Annotated[
    Union[  # noqa: UP007
        Annotated[FunctionObjective, Tag("function")],
        Annotated[CommandObjective, Tag("command")],
        Annotated[TrainerObjective, Tag("trainer")],
    ],
    Discriminator(
        _objective_kind,
        custom_error_type="objective_kind",
        custom_error_message=f"needs {_ONE_OF}",
    ),
    BeforeValidator(_one_kind),
]
