"""Dependencies flow one way: the spec imports neither torch nor optuna; the trainer and the
batch-size fitter never import optuna."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hpsearch"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path",
    [*sorted((PACKAGE / "train").glob("*.py")), PACKAGE / "batch_size.py", PACKAGE / "oom.py"],
    ids=lambda p: p.name,
)
def test_trainer_and_fitter_never_import_optuna(path: Path) -> None:
    if path.exists():
        assert "optuna" not in _imports(path)


@pytest.mark.parametrize("module", ["hpsearch.spec", "hpsearch.train.options", "hpsearch.cli"])
def test_light_modules_leave_torch_out(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
