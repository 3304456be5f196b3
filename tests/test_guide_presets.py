"""Every search-space preset is sourced, validates as a study file, and runs one short trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from data_factory import make_image_folder
from guide_helpers import CPU, cache_fake_weights, fixed_speed, photos
from optuna.trial import TrialState
from torchvision import models as tv

from hpsearch.cli import main
from hpsearch.guide import (
    MODEL_FACTS,
    PRESETS,
    SOURCES,
    BudgetChoice,
    Preset,
    inspect_folder,
    plan_study,
    preset_for,
    render,
)
from hpsearch.guide.weights import TEST_NETWORK_ENV
from hpsearch.spec import load_spec
from hpsearch.spec.reader import read_yaml
from hpsearch.train.options import MODEL_NAMES, SEARCHABLE_OPTIONS, TrainerOptions

# The cheapest model of each family: what the presets' one-trial runs train.
CHEAPEST = {"small_cnn": "small_cnn", "resnet": "resnet18", "mobilenet": "mobilenet_v3_small",
            "efficientnet": "efficientnet_b0", "convnext": "convnext_tiny"}  # fmt: skip


def _model(preset: Preset) -> str:
    return CHEAPEST[preset.key.removesuffix("_finetune")]


def test_every_model_has_a_preset_from_scratch_and_one_for_fine_tuning() -> None:
    for model in MODEL_NAMES:
        assert preset_for(model, False).pretrained is False
        if model != "small_cnn":
            assert preset_for(model, True).pretrained is True
    assert set(MODEL_FACTS) == set(MODEL_NAMES)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_number_of_a_preset_names_its_source(preset: Preset) -> None:
    assert preset.sources
    assert set(preset.sources) <= set(SOURCES)
    names = [knob.name for knob in preset.knobs]
    assert len(names) == len(set(names))
    for knob in preset.knobs:
        assert knob.source in SOURCES, knob
        assert knob.name in TrainerOptions.model_fields
        if knob.space is not None:
            assert knob.name in SEARCHABLE_OPTIONS
            assert knob.space["low"] <= knob.default <= knob.space["high"], knob
    # The published values are valid trainer options as they stand.
    TrainerOptions.model_validate(
        {"dataset": {"name": "digits"}, "model": _model(preset),
         **{k.name: k.default for k in preset.knobs}}
    )  # fmt: skip


def test_model_facts_are_torchvisions_published_numbers() -> None:
    for name, facts in MODEL_FACTS.items():
        if name == "small_cnn":
            continue
        weights = getattr(tv, next(w for w in dir(tv) if w.lower() == f"{name}_weights")).DEFAULT
        assert facts.gflops_224 == pytest.approx(weights.meta["_ops"], rel=1e-3), name
        assert facts.weights_size == weights.transforms().crop_size[0], name


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_preset_validates_as_a_study_file_with_all_its_options_searched(
    preset: Preset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_speed(monkeypatch)
    monkeypatch.setenv(TEST_NETWORK_ENV, "online" if preset.pretrained else "offline")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    plan = plan_study(
        photos(tmp_path, per_class=2000), CPU, BudgetChoice("100", trainings=100),
        name="p", data_path="data", model=_model(preset),
    )  # fmt: skip
    assert plan.preset is preset
    path = tmp_path / "study.yaml"
    text = render(plan, study_path=path, command="hpsearch init data")
    path.write_text(text)
    spec = load_spec(path).spec
    searchable = {k.name for k in preset.knobs if k.space is not None}
    assert searchable | {"batch_size", "epochs"} == set(spec.search_space)
    (first,) = spec.enqueue
    assert set(first) == set(spec.search_space)  # the published defaults, whole
    for key in {*preset.sources, *(k.source for k in preset.knobs)} - {"hpsearch"}:
        assert SOURCES[key].split(" (")[0][:40] in text.replace("\n#", ""), key


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_preset_runs_one_short_trial(
    preset: Preset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As written by the planner, on real images, with its weights in torch's cache."""
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")
    model = _model(preset)
    if preset.pretrained:
        cache_fake_weights(monkeypatch, tmp_path, model)
    else:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fixed_speed(monkeypatch)
    folder = make_image_folder(tmp_path / "data", per_class=8)
    plan = plan_study(
        inspect_folder(folder.root), CPU, BudgetChoice("100", trainings=100), name="p",
        data_path="data", model=model, max_epochs=1,
    )  # fmt: skip
    assert plan.preset is preset
    path = tmp_path / "study.yaml"
    text = render(plan, study_path=path, command="hpsearch init data")
    # One short trial: one training step per epoch. The rest is the preset as written.
    path.write_text(text.replace("objective:\n", "objective:\n  max_train_batches: 1\n", 1))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "--n-trials", "1", "-q"]) == 0
    (trial,) = optuna.load_study(study_name="p", storage=url).trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    data, _ = read_yaml(path)
    assert trial.params == {k: v for k, v in data["enqueue"][0].items() if k in trial.params}
