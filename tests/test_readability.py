"""The worker, its storage and its budget read top to bottom: no function longer than a screen.

These packages hold the code every trial of every study runs through, and the code a reader
must follow to trust that no training is lost or repeated; `ruff`'s complexity rule (C901,
pyproject.toml) bounds the branches, this bounds the length.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hpsearch"
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("package", ["worker", "storage", "budget"])
def test_no_function_over_a_screen(package: str) -> None:
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {lines}"
                    )
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_worker_loop_reads_in_one_screen() -> None:
    tree = ast.parse((ROOT / "worker" / "loop.py").read_text())
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert loop.end_lineno is not None
    assert loop.end_lineno - loop.lineno + 1 <= 50
