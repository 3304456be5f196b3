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
