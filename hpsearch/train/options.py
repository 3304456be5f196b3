"""The built-in trainer's options: frozen, validated pydantic models with no torch import."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator


@dataclass(frozen=True)
class ModelInfo:
    """One model of the built-in trainer, as everything without torch needs to know it."""

    name: str
    family: str  # the search-space presets' family (`hpsearch.guide.presets`)
    gflops_224: float  # torchvision's published GFLOPS at 224x224 (the weights' `_ops`)
    weights_size: int  # the input side torchvision's DEFAULT weights were trained at (0: none)
    min_size: int  # the smallest sensible input side (the stem downsamples this much)


# The one table of models: `MODEL_NAMES`, the guide's facts and families and docs/trainer.md's
# list follow it, and `hpsearch.train.models.MODEL_REGISTRY` (the torchvision builders) must
# have exactly these keys (tests check both). Kept here, not in models.py, so the spec layer can
# validate without torch. Figures: torchvision 0.29's `Weights.DEFAULT.meta["_ops"]` and crop
# sizes (a test compares them); small_cnn: ~0.6 M multiply-adds at 8x8, x784 at 224x224.
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("small_cnn", "small_cnn", 0.47, 0, 4),
    ModelInfo("resnet18", "resnet", 1.814, 224, 32),
    ModelInfo("resnet34", "resnet", 3.664, 224, 32),
    ModelInfo("resnet50", "resnet", 4.089, 224, 32),
    ModelInfo("resnet101", "resnet", 7.801, 224, 32),
    ModelInfo("mobilenet_v3_small", "mobilenet", 0.057, 224, 32),
    ModelInfo("mobilenet_v3_large", "mobilenet", 0.217, 224, 32),
    ModelInfo("efficientnet_b0", "efficientnet", 0.386, 224, 32),
    ModelInfo("efficientnet_b1", "efficientnet", 0.687, 240, 32),
    ModelInfo("convnext_tiny", "convnext", 4.456, 224, 32),
)
MODEL_NAMES: tuple[str, ...] = tuple(m.name for m in MODELS)
MODEL_INFO: dict[str, ModelInfo] = {m.name: m for m in MODELS}


def models_of(family: str) -> tuple[str, ...]:
    """The names of one family's models, in the table's order."""
    return tuple(m.name for m in MODELS if m.family == family)


DATASET_NAMES: tuple[str, ...] = ("digits",)
METRICS: tuple[str, ...] = ("val_accuracy", "val_loss", "train_loss", "val_balanced_accuracy")
_MAXIMIZED = frozenset({"val_accuracy", "val_balanced_accuracy"})

# Options a study's `search_space` may set: scalar `TrainerOptions` fields that change training
# but not the data pipeline. `image_size` (in `dataset`) is deliberately absent: it would change
# the cached normalisation statistics and make trials incomparable in cost.
SEARCHABLE_OPTIONS: frozenset[str] = frozenset(
    {
        "model",
        "batch_size",
        "lr",
        "epochs",
        "optimizer",
        "momentum",
        "weight_decay",
        "lr_schedule",
        "warmup_epochs",
        "label_smoothing",
        "dropout",
        "freeze_backbone_epochs",
    }
)

Augment = Literal["hflip", "random_crop", "rotate", "color_jitter"]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def metric_mode(name: str) -> Literal["max", "min"]:
    """Return whether a trainer metric improves upwards ("max") or downwards ("min")."""
    if name not in METRICS:
        raise ValueError(f"`metric` must be one of {', '.join(METRICS)}, but got {name!r}.")
    return "max" if name in _MAXIMIZED else "min"


# Range checks as (predicate, rule text), one table per model, so every message has the same
# shape (Optuna's template: what must hold, then what was given).
_Rules = dict[str, tuple[Callable[[Any], bool], str]]
_DATASET_RULES: _Rules = {
    "val_fraction": (lambda v: 0 < v < 1, "between 0 and 1 exclusive"),
    "image_size": (lambda v: 4 <= v <= 4096, "between 4 and 4096"),
    "max_imbalance": (lambda v: v >= 1, ">= 1"),
}
_TRAINER_RULES: _Rules = {
    "freeze_backbone_epochs": (lambda v: v >= 0, ">= 0"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "micro_batch_size": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "num_workers": (lambda v: v >= 0, ">= 0"),
    "cpu_threads": (lambda v: v >= 1, ">= 1"),
    "max_train_batches": (lambda v: v >= 1, ">= 1"),
}


def _check(rules: _Rules, name: str, value: Any) -> Any:
    ok, text = rules[name]
    if value is not None and not ok(value):
        raise ValueError(f"`{name}` must be {text}, but got {value!r}.")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetOptions(_Frozen):
    """Where the images come from and how they are prepared; exactly one of `name` or `path`."""

    name: Literal["digits"] | None = None
    path: str | None = None
    val_path: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    image_size: int | None = None
    channels: Literal[1, 3] | None = None
    normalize: Literal["imagenet", "dataset", "none"] = "dataset"
    augment: tuple[Augment, ...] = ()
    max_imbalance: float = 10.0

    @field_validator(*_DATASET_RULES)
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        return _check(_DATASET_RULES, str(info.field_name), value)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetOptions:
        if (self.name is None) == (self.path is None):
            got = f"name={self.name!r} and path={self.path!r}"
            raise ValueError(
                f"`dataset` needs exactly one of `name` (one of {', '.join(DATASET_NAMES)}) "
                f"or `path` (an image folder with one sub-folder per class), but got {got}."
            )
        if self.val_path is not None and self.path is None:
            raise ValueError(
                "`dataset.val_path` needs `dataset.path` (a built-in dataset makes its own "
                f"validation split), but got val_path={self.val_path!r}; remove `val_path`."
            )
        return self


class TrainerOptions(_Frozen):
    """Every option of the built-in image-classification trainer (see docs/trainer.md)."""

    dataset: DatasetOptions
    model: str = "small_cnn"
    pretrained: bool = False
    weights: str | None = None
    freeze_backbone_epochs: int = 0
    batch_size: int = 32
    micro_batch_size: int | None = None
    lr: float = 0.01
    epochs: int = 10
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine", "step", "onecycle"] = "constant"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    dropout: float | None = None
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    num_workers: int | None = None
    cpu_threads: int | None = None
    seed: int = 0
    max_train_batches: int | None = None

    @field_validator(*_TRAINER_RULES)
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        return _check(_TRAINER_RULES, str(info.field_name), value)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(
                f"`model` must be one of {', '.join(MODEL_NAMES)}, but got {value!r}."
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"`device` must be auto, cpu, cuda or cuda:N, but got {value!r}.")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainerOptions:
        micro = self.micro_batch_size
        if micro is not None and micro < self.batch_size and self.batch_size % micro:
            raise ValueError(
                f"`micro_batch_size` must divide `batch_size`, but got micro_batch_size={micro} "
                f"and batch_size={self.batch_size}; use a divisor such as a power of two."
            )
        if self.pretrained and self.weights is not None:
            raise ValueError(
                "`pretrained` and `weights` are alternatives, but got pretrained=True and "
                f"weights={self.weights!r}; keep one."
            )
        if self.model == "small_cnn" and self.pretrained:
            raise ValueError(
                "`pretrained` needs a torchvision model, but got model='small_cnn', which has "
                "no published weights; set pretrained: false or pick e.g. resnet18."
            )
        return self

    @property
    def in_channels(self) -> int:
        """Image channels fed to the model: `dataset.channels`, else the model's natural input.

        torchvision models take 3 (RGB); `small_cnn` takes 1 for the grey `digits` set and 3 for
        an image folder.
        """
        if self.dataset.channels is not None:
            return self.dataset.channels
        return 1 if self.model == "small_cnn" and self.dataset.name == "digits" else 3
