"""What a newcomer reads is true: example files, advice on a study that only failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.cli import main


def test_examples_creates_the_folder_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "new" / "studies"
    assert main(["examples", "-o", str(folder)]) == 0
    assert (folder / "quickstart.yaml").is_file()
    (tmp_path / "file").write_text("")
    assert main(["examples", "-o", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_advise_on_a_study_whose_trials_all_failed_names_the_failure(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        budget: {{n_trials: 3, max_failures: 10}}
        objective: {{function: objective.py:fails}}
        search_space: {{x: {{type: float, low: 0.0, high: 1.0}}}}
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    main(["run", str(path), "--storage", url, "-q"])
    capsys.readouterr()
    assert main(["advise", str(path), "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "let the study run" not in out
    assert "running longer will not help: 3 failed with ValueError: boom (code)" in out


def test_advise_writes_the_next_study_with_the_files_own_comments(
    write_study: Callable[..., Path], tmp_path: Path, unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path = write_study(f"""
        # A study for the quadratic, with its sources:
        #   [smith2018] Smith, A disciplined approach to neural network hyper-parameters.
        name: {unique_name}
        metric: loss
        sampler: {{type: random, seed: 0}}
        budget: {{n_trials: 6}}            # six trials: enough to see the shape
        objective:
          function: objective.py:quadratic
          # seconds each trial sleeps (none here)
          sleep: 0
        search_space:
          x: {{type: float, low: -5.0, high: 5.0}}   # [smith2018] the range test
    """)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["run", str(path), "--storage", url, "-q"]) == 0
    out = tmp_path / "next.yaml"
    assert main(["advise", str(path), "--storage", url, "-o", str(out)]) == 0
    text = out.read_text()
    assert "#   [smith2018] Smith, A disciplined approach" in text
    assert "# six trials: enough to see the shape" in text
    assert "# seconds each trial sleeps (none here)" in text
    assert "[smith2018] the range test" in text  # beside x, changed or not
    assert main(["validate", str(out)]) == 0
