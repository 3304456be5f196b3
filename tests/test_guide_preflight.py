"""The warnings a newcomer needs at `validate` and at the start of `run`, each on a file made to
trigger it, and none on the quickstart."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from data_factory import make_image_folder
from guide_helpers import cache_fake_weights

from hpsearch.batch_size.device import visible_gpus
from hpsearch.cli import main
from hpsearch.guide import Speed
from hpsearch.guide.weights import TEST_NETWORK_ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached there
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")
    make_image_folder(tmp_path / "data", per_class=6)  # 16x16 images


def _study(
    tmp_path: Path, objective: str = "", budget: str = "{n_trials: 2}", extra: str = ""
) -> Path:
    """A resnet18 study on the 16x16 images; `objective` and `extra` add lines to those keys."""
    more = "".join(f"  {line}\n" for line in objective.splitlines())
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: pf\nbudget: {budget}\nobjective:\n  trainer: image_classification\n"
        f"  model: resnet18\n  dataset: {{path: data, image_size: 32}}\n  epochs: 1\n"
        f"  device: cpu\n{more}search_space:\n"
        f"  lr: {{type: float, low: 0.001, high: 0.1, log: true}}\n{extra}\n"
    )
    return path


def _warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = capsys.readouterr().out
    return [line.split("warning: ", 1)[1] for line in out.splitlines()
            if line.startswith("  warning: ")]  # fmt: skip


def test_pretrained_weights_this_machine_cannot_get_stop_validate_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, "pretrained: true")
    assert main(["validate", str(path)]) == 2
    (err,) = [e for e in capsys.readouterr().err.splitlines() if e.startswith("hpsearch: error")]
    assert f"{path}:9: objective.pretrained: `pretrained: true` needs resnet18's ImageNet" in err
    assert "resnet18-f37072fd.pth" in err
    assert "download.pytorch.org cannot be reached" in err
    assert "or set `pretrained: false`" in err
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url]) == 2
    assert "objective.pretrained" in capsys.readouterr().err
    assert optuna.get_all_study_names(storage=url) == []  # stopped before any trial


def test_pretrained_weights_are_fine_when_cached_or_downloadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, "pretrained: true")
    monkeypatch.setenv(TEST_NETWORK_ENV, "online")
    assert main(["validate", str(path)]) == 0
    monkeypatch.setenv(TEST_NETWORK_ENV, "offline")
    cache_fake_weights(monkeypatch, tmp_path, "resnet18")
    assert main(["validate", str(path)]) == 0
    assert _warnings(capsys) == []


def test_images_upscaled_far_beyond_their_size_are_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path)
    path.write_text(path.read_text().replace("image_size: 32", "image_size: 128"))
    assert main(["validate", str(path)]) == 0
    (warning,) = _warnings(capsys)
    assert warning.startswith(f"{path}:6: objective.dataset.image_size: 128 upscales the images ")
    assert "8.0x (their median shorter side is 16 px)" in warning
    assert "set image_size to at most 64" in warning
    path.write_text(path.read_text().replace("image_size: 128", "image_size: 64"))  # 4x is fine
    assert main(["validate", str(path)]) == 0
    assert _warnings(capsys) == []


@pytest.mark.parametrize(
    ("objective", "extra"),
    [("freeze_backbone_epochs: 1", ""),
     ("", "  freeze_backbone_epochs: {type: int, low: 0, high: 2}")],
    ids=["fixed", "searched"],
)  # fmt: skip
def test_freezing_a_backbone_without_pretrained_weights_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], objective: str, extra: str
) -> None:
    path = _study(tmp_path, objective, extra=extra)
    assert main(["validate", str(path)]) == 0
    (warning,) = _warnings(capsys)
    assert "freeze_backbone_epochs: freezes the backbone for up to" in warning
    assert "the new head learns from random features" in warning
    assert "set `pretrained: true`" in warning


def test_an_epoch_slower_than_an_hour_is_a_warning_without_a_time_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def slow(*args: object, **kwargs: object) -> Speed:
        return Speed(200.0, 60.0, True, "cpu", 32)  # 200 s per image: a stand-in for the probe

    # The FLOP bound decides whether to probe, the probe how slow: both stand-ins here.
    monkeypatch.setattr("hpsearch.guide.preflight.upper_bound", slow)
    monkeypatch.setattr("hpsearch.guide.preflight.measure", slow)
    path = _study(tmp_path, budget="{n_trials: 20}")
    assert main(["validate", str(path)]) == 0
    (warning,) = _warnings(capsys)
    assert "objective.model: an epoch of resnet18 at 32 px on cpu takes about 61 min" in warning
    assert "20 trainings of up to 1 epochs take up to 20.2 h" in warning
    assert "use a GPU, a smaller model" in warning


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resnet50_at_224_px_on_a_cpu_cannot_finish_a_short_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real timing probe: a few ResNet-50 steps on this CPU, against a 2-second budget.

    On the CPUs seen here a training image takes 0.1 to 0.8 s (the probe's spread under load), so
    3 epochs of about 33 images take 10 s at the very least: no CPU finishes them in 2 s.
    Under a load average of 20-30 the probe outlasted its 120 s limit (then `validate` falls
    back to the FLOP bound); this test is about the probe, so its limit is only a hang guard.
    """
    monkeypatch.setattr("hpsearch.guide.timing.PROBE_TIMEOUT_S", 600.0)
    make_image_folder(tmp_path / "photos", per_class=12, size=64)  # 224 px: 3.5x, not a warning
    path = _study(tmp_path, budget="{n_trials: 4, timeout: 2s}")
    text = path.read_text().replace("model: resnet18", "model: resnet50")
    text = text.replace("epochs: 1", "epochs: 3").replace(
        "path: data, image_size: 32", "path: photos, image_size: 224"
    )
    path.write_text(text)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  time:       about " in out
    assert "(timing probe on cpu: " in out
    (warning,) = [line for line in out.splitlines() if line.startswith("  warning: ")]
    assert f"{path}:2: budget.timeout: the budget cannot finish one training: 3 epoch(s) of " \
           "resnet50 at 224 px on cpu take about" in warning  # fmt: skip
    assert "but the budget allows 2 s" in warning


@pytest.mark.slow  # a real resnet18 trial
def test_run_says_the_warnings_before_its_first_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, "max_train_batches: 1")
    path.write_text(path.read_text().replace("image_size: 32", "image_size: 128"))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "--n-trials", "1"]) == 0
    err = capsys.readouterr().err
    warned = err.index("objective.dataset.image_size: 128 upscales the images 8.0x")
    assert warned < err.index("trial 0 COMPLETE")


def test_the_quickstart_gets_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "studies" / "quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert "  time:       at most " in out  # the upper bound sufficed: no probe ran


@pytest.mark.skipif(bool(visible_gpus()), reason="needs a machine without a GPU")
def test_a_gpu_model_on_device_auto_without_a_gpu_is_said_plainly_with_the_study_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path)
    path.write_text(path.read_text().replace("device: cpu", "device: auto"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "objective.device: no GPU here, so resnet18 will train on this machine's CPU" in out
    assert "; the study: 2 trainings of up to 1 epochs, " in out
    assert " on this machine (pruning shortens it)" in out


def test_validate_states_the_time_init_measured_not_a_second_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`init` said "about 6 min" (its timing probe); `validate` then said "at most 5.2 h" (the
    FLOP bound) for the same study on the same machine: one fact, one figure."""
    out_file = tmp_path / "init.yaml"
    argv = ["init", str(tmp_path / "data"), "--model", "small_cnn", "-o", str(out_file)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    note = next(line for line in said.splitlines() if "per epoch (timing probe" in line)
    figure = note.split("note:", 1)[1].strip()  # "about 0.1 s per epoch (...); the study: ..."
    assert main(["validate", str(out_file)]) == 0
    time_line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("  time:")
    )
    assert time_line.split("time:", 1)[1].strip() == figure
