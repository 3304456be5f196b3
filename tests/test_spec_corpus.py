"""Malformed study files (tests/malformed/*.yaml) through `hpsearch validate`, as users meet them.

Each file's first line is `# expect: <text>`. Every file must exit 2 with exactly one line on
stderr, `hpsearch: error: FILE:LINE: key.path: what is wrong and the fix`, holding that text and
never a traceback. Most run in-process (fast); a few also run as `python -m hpsearch validate`.
"""

from __future__ import annotations

import codecs
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.cli import main

CORPUS = Path(__file__).resolve().parent / "malformed"
FILES = sorted(CORPUS.glob("*.yaml"))
# Files where no key is to blame: the whole file is wrong.
KEYLESS = {
    "binary_garbage", "binary_png", "file_list", "file_scalar", "file_number",
    "file_only_comments", "file_null", "file_two_documents",
}  # fmt: skip
# The corpus files are each this valid study with one mistake (most of them).
VALID = """\
name: corpus
direction: minimize
metric: loss
sampler: {type: tpe, seed: 0}
pruner: {type: median}
budget: {n_trials: 10, timeout: 1h}
objective:
  function: json:loads
search_space:
  lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
  layers: {type: int, low: 1, high: 4}
  batch_size: {type: power_of_two, low: 8, high: 256}
  optimizer: {type: categorical, choices: [sgd, adam]}
  momentum: {type: float, low: 0.8, high: 0.99, when: {optimizer: sgd}}
enqueue:
  - {lr: 0.01, layers: 2, batch_size: 32, optimizer: sgd, momentum: 0.9}
"""
EMPTY = (
    "the study file must be a mapping of keys such as `name:` and `objective:`, but it is empty "
    "(or only comments); see docs/study-file.md"
)
_LOCATED = re.compile(r"hpsearch: error: (?P<file>.+?):(?P<line>\d+): (?P<message>.*)\n", re.S)
_KEY_PATH = re.compile(r"[^\s:]+: ")


def _expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")
    assert first.startswith("# expect: "), f"{path.name}: the first line must be `# expect: ...`"
    return first.removeprefix("# expect: ")


def _check(path: Path, code: int, err: str, expected: str) -> None:
    assert "Traceback" not in err
    assert code == 2, err
    assert err.count("\n") == 1, f"not exactly one line: {err!r}"
    assert err.endswith("\n"), f"not exactly one line: {err!r}"
    located = _LOCATED.fullmatch(err)
    assert located is not None, f"no `hpsearch: error: FILE:LINE: ` prefix: {err!r}"
    assert located["file"] == str(path)
    message = located["message"]
    if path.stem not in KEYLESS:
        assert _KEY_PATH.match(message), f"no key path: {message!r}"
    assert expected in message, f"{expected!r} not in {message!r}"


def test_the_corpus_is_large_and_the_unbroken_study_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(FILES) >= 60
    valid = tmp_path / "valid.yaml"
    valid.write_text(VALID)
    assert main(["validate", str(valid)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_malformed_file_gets_one_line(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(path)])
    _check(path, code, capsys.readouterr().err, _expected(path))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", EMPTY),
        (b"\n   \n\n", EMPTY),
        (codecs.BOM_UTF16_LE + "name: x\n".encode("utf-16-le"),
         "the study file must be UTF-8 text, but it is UTF-16; save it as UTF-8"),
    ],
    ids=["empty", "blank", "utf16"],
)  # fmt: skip
def test_files_without_room_for_a_comment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"hpsearch: error: {path}:1: {expected}\n"


def test_no_file_and_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.endswith("nope.yaml: no such study file; check the path\n")
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"hpsearch: error: {tmp_path}: is a folder, not a study file; give the .yaml file\n"
    )


# A few through a real process: exit code and stderr as a shell sees them.
IN_A_PROCESS = ["binary_garbage", "yaml_tab_indent", "yaml_recursive_alias", "yaml_deep_flow"]


@pytest.mark.slow
def test_in_a_process_too() -> None:
    paths = [CORPUS / f"{name}.yaml" for name in IN_A_PROCESS]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "hpsearch", "validate", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in paths
    ]
    for path, run in zip(paths, runs, strict=True):
        out, err = run.communicate(timeout=120)
        assert out == ""
        _check(path, run.returncode, err, _expected(path))
