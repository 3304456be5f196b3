"""TrainerOptions / DatasetOptions: defaults, range checks, the closed model list, no torch."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from hpsearch.train.options import (
    METRICS,
    MODEL_NAMES,
    SEARCHABLE_OPTIONS,
    DatasetOptions,
    TrainerOptions,
    metric_mode,
)

DIGITS = {"name": "digits"}


def make(**kwargs: Any) -> TrainerOptions:
    return TrainerOptions(dataset=DIGITS, **kwargs)


def test_defaults_are_valid_and_frozen() -> None:
    options = make()
    assert options.model == "small_cnn"
    assert options.batch_size == 32
    assert options.epochs == 10
    assert options.dataset.val_fraction == 0.2
    assert options.dataset.normalize == "dataset"
    with pytest.raises(ValidationError):
        options.lr = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", 0.0, "`lr` must be > 0, but got 0.0."),
        ("epochs", 0, "`epochs` must be >= 1, but got 0."),
        ("batch_size", 0, "`batch_size` must be >= 1, but got 0."),
        ("dropout", 1.0, "`dropout` must be in [0, 1), but got 1.0."),
        ("momentum", -0.1, "`momentum` must be in [0, 1), but got -0.1."),
        ("weight_decay", -1.0, "`weight_decay` must be >= 0, but got -1.0."),
        ("label_smoothing", 1.5, "`label_smoothing` must be in [0, 1), but got 1.5."),
        ("model", "vgg11", "`model` must be one of small_cnn, resnet18"),
        ("device", "gpu", "`device` must be auto, cpu, cuda or cuda:N, but got 'gpu'."),
    ],
)
def test_bad_values_say_what_must_hold(key: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(**{key: value})
    assert message in str(info.value)


def test_devices_accepted() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert make(device=device).device == device


def test_unknown_option_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make(learning_rate=0.1)
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("learning_rate",)


def test_dataset_needs_exactly_one_source() -> None:
    for bad in ({}, {"name": "digits", "path": "/data"}):
        with pytest.raises(ValidationError, match="exactly one of `name`"):
            DatasetOptions(**bad)
    with pytest.raises(ValidationError, match="`val_fraction` must be between 0 and 1"):
        DatasetOptions(name="digits", val_fraction=1.0)
    with pytest.raises(ValidationError, match="`dataset.val_path` needs `dataset.path`"):
        DatasetOptions(name="digits", val_path="/val")


def test_micro_batch_must_divide_batch() -> None:
    with pytest.raises(ValidationError, match="`micro_batch_size` must divide `batch_size`"):
        make(batch_size=64, micro_batch_size=24)
    assert make(batch_size=64, micro_batch_size=16).micro_batch_size == 16
    assert make(batch_size=16, micro_batch_size=64).micro_batch_size == 64  # no accumulation


def test_pretrained_rules() -> None:
    with pytest.raises(ValidationError, match="`pretrained` and `weights` are alternatives"):
        make(model="resnet18", pretrained=True, weights="w.pth")
    with pytest.raises(ValidationError, match="`pretrained` needs a torchvision model"):
        make(pretrained=True)


def test_in_channels_defaults() -> None:
    assert make().in_channels == 1
    assert make(model="resnet18").in_channels == 3
    assert TrainerOptions(dataset={"path": "/x"}).in_channels == 3
    assert TrainerOptions(dataset={"name": "digits", "channels": 3}).in_channels == 3


def test_searchable_options_are_trainer_fields() -> None:
    fields = set(TrainerOptions.model_fields)
    assert SEARCHABLE_OPTIONS <= fields
    assert {"lr", "batch_size", "epochs", "optimizer", "momentum", "weight_decay"} <= (
        SEARCHABLE_OPTIONS
    )
    assert "dataset" not in SEARCHABLE_OPTIONS
    assert "device" not in SEARCHABLE_OPTIONS


def test_metric_mode() -> None:
    assert [metric_mode(m) for m in METRICS] == ["max", "min", "min", "max"]
    with pytest.raises(ValueError, match="`metric` must be one of val_accuracy"):
        metric_mode("accuracy")


def test_model_names_match_registry() -> None:
    from hpsearch.train.models import MODEL_REGISTRY

    assert tuple(MODEL_REGISTRY) == MODEL_NAMES


def test_options_and_summary_imports_leave_torch_out() -> None:
    # `hpsearch validate` stays quick: the spec layer and the data summary need no torch.
    code = (
        "import sys, hpsearch.train, hpsearch.train.options, hpsearch.train.summary; "
        "bad = [m for m in ('torch', 'torchvision', 'sklearn', 'optuna') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_train_package_never_imports_optuna() -> None:
    from pathlib import Path

    import hpsearch.train

    for path in Path(hpsearch.train.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import optuna" not in text, path
        assert "from optuna" not in text, path
