"""`hpsearch init`'s reasoning: what it reads from the data and the machine, what it decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from data_factory import make_image_folder
from guide_helpers import BIG_GPU, CPU, fixed_speed, photos

from hpsearch.errors import HpsearchError
from hpsearch.guide import (
    BudgetChoice,
    Plan,
    inspect_folder,
    parse_budget,
    plan_study,
    render,
    scalar,
)
from hpsearch.guide.weights import TEST_NETWORK_ENV
from hpsearch.spec import load_spec
from hpsearch.spec.reader import read_yaml

TWENTY = BudgetChoice("20", trainings=20)


def _plan(data: Any, machine: Any = CPU, budget: BudgetChoice = TWENTY, **kw: Any) -> Plan:
    return plan_study(data, machine, budget, name="pets", data_path="data", **kw)


def _written(plan: Plan, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The study file as written, after checking that it validates."""
    path = tmp_path / "study.yaml"
    text = render(plan, study_path=path, command="hpsearch init data")
    path.write_text(text)
    load_spec(path)
    data, _ = read_yaml(path)
    return text, data


@pytest.mark.parametrize(
    ("text", "trainings", "seconds"),
    [("20", 20, None), ("8h", None, 28800.0), ("90m", None, 5400.0), ("1h30m", None, 5400.0),
     ("8gpu-hours", None, 28800.0), ("2.5 gpu-hours", None, 9000.0), ("1gpuh", None, 3600.0)],
)  # fmt: skip
def test_budget_is_trainings_or_device_time(
    text: str, trainings: int | None, seconds: float | None
) -> None:
    choice = parse_budget(text)
    assert (choice.trainings, choice.seconds) == (trainings, seconds)


@pytest.mark.parametrize("text", ["0", "-3", "lots", "8 hours", "20 trainings", ""])
def test_a_budget_that_is_neither_says_how_to_write_one(text: str) -> None:
    with pytest.raises(HpsearchError, match=r"--budget must be .*8h"):
        parse_budget(text)


@pytest.mark.parametrize(
    "value", [1e-5, 0.0125, 3.0, 0.0, 12, True, None, "yes", "on", "a b", "data/pets", "1e3", ""]
)
def test_written_values_read_back_as_the_same_values(value: Any, tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(f"v: {scalar(value)}\nl: {scalar([value])}\n")
    data, _ = read_yaml(path)
    assert data == {"v": value, "l": [value]}
    assert type(data["v"]) is type(value)


def test_a_folder_is_read_as_training_will_read_it(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "shapes", per_class=10)
    facts = inspect_folder(folder.root)
    assert facts.classes == folder.classes
    assert facts.num_images == folder.readable  # the truncated file is not counted
    assert [Path(p).name for p, _ in facts.skipped] == ["truncated.png"]
    assert facts.short_side == 16
    assert facts.one_size
    assert {"L", "RGBA", "P", "RGB"} <= set(facts.modes)
    assert "1 unreadable file(s) will be skipped: truncated.png" in facts.lines()


def test_small_images_on_a_cpu_get_the_small_cnn_at_their_own_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    plan = _plan(photos(tmp_path, size=(28, 28)))
    _, data = _written(plan, tmp_path)
    objective = data["objective"]
    assert objective["model"] == "small_cnn"
    assert "pretrained" not in objective
    assert "image_size" not in objective["dataset"]  # never upscaled
    assert objective["dataset"]["normalize"] == "dataset"
    assert objective["cpu_threads"] == 1
    assert objective["device"] == "cpu"
    assert plan.preset.key == "small_cnn"
    assert data["enqueue"] == [{k: data["enqueue"][0][k] for k in data["search_space"]}]
    assert data["enqueue"][0]["lr"] == 0.001  # Adam's published default, run first
    assert data["budget"] == {"n_trials": 20}
    assert "sampler" not in data
    assert "pruner" not in data


def test_photos_on_a_big_gpu_fine_tune_resnet50_when_weights_can_be_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    monkeypatch.setenv(TEST_NETWORK_ENV, "online")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached there
    plan = _plan(photos(tmp_path, per_class=2000), BIG_GPU)
    text, data = _written(plan, tmp_path)
    objective = data["objective"]
    assert (objective["model"], objective["pretrained"]) == ("resnet50", True)
    assert objective["dataset"]["image_size"] == 224  # what the weights were trained at
    assert objective["dataset"]["normalize"] == "imagenet"
    assert objective["device"] == "auto"
    batch = {"type": "power_of_two", "low": 16, "high": "auto"}
    assert data["search_space"]["batch_size"] == batch
    assert plan.preset.key == "resnet_finetune"
    assert data["enqueue"][0]["lr"] == 0.01  # Li et al. 2020's common fine-tuning default
    assert "download once from download.pytorch.org" in text
    assert 'Li et al. 2020, "Rethinking the Hyperparameters for Fine-tuning"' in text


def test_without_weights_it_trains_from_scratch_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    plan = _plan(photos(tmp_path), BIG_GPU)
    text, data = _written(plan, tmp_path)
    assert data["objective"]["pretrained"] is False
    assert plan.preset.key == "resnet"
    assert "no ImageNet weights here" in text
    assert "trained from scratch" in text
    # He et al.'s 0.1 per 256 images, scaled to the enqueued batch of 32 (linear scaling rule).
    assert data["enqueue"][0]["lr"] == 0.0125
    assert data["objective"]["dataset"]["normalize"] == "dataset"


def test_a_time_budget_steps_down_to_an_input_the_cpu_can_afford(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # Seconds per image grow with the pixels: at 224 px, 1 hour buys under 8 trainings of 30
    # epochs (the preset's usual length); at 160 px it buys 11.
    timed = fixed_speed(monkeypatch, lambda options, size: 0.02 * (size / 224) ** 2)
    plan = _plan(photos(tmp_path), CPU, BudgetChoice("1h", seconds=3600.0))
    _, data = _written(plan, tmp_path)
    assert timed == [("resnet18", 224), ("resnet18", 160)]
    assert data["objective"]["dataset"]["image_size"] == 160
    assert data["budget"] == {"gpu_hours": 1.0}
    assert plan.epoch_s is not None
    high = data["search_space"]["epochs"]["high"]
    assert high * 8 * plan.epoch_s <= 3600 < (high + 1) * 8 * plan.epoch_s  # 8+ full trainings


def test_imbalanced_grey_data_gets_balanced_accuracy_and_one_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    facts = photos(tmp_path, grey=True, size=(40, 40))
    facts = type(facts)(**{**facts.__dict__, "train_counts": (300, 60, 30)})
    _, data = _written(_plan(facts), tmp_path)
    assert data["metric"] == "val_balanced_accuracy"
    assert data["objective"]["dataset"]["channels"] == 1


def test_max_epochs_bounds_every_training_and_the_budget_gates_extra_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    small = _plan(photos(tmp_path, size=(28, 28)), budget=BudgetChoice("5", trainings=5))
    large = _plan(photos(tmp_path, size=(28, 28)), budget=BudgetChoice("40", trainings=40),
                  max_epochs=3)  # fmt: skip
    assert "label_smoothing" not in small.space  # searched only with 15+ trainings
    assert small.objective["label_smoothing"].value == 0.1  # fixed at its published value
    assert "label_smoothing" in large.space
    assert large.space["epochs"].value == {"type": "int", "low": 1, "high": 3}
