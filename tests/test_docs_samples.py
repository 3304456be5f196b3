"""The sample outputs in docs/getting-started.md come from real runs, and stay in step with them.

Each test runs the page's own steps on the page's own generated images (its script), then
compares the page's block with what the command prints now, after normalising what differs from
run to run: times of day, durations, paths, counts of cores and RAM, every number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.batch_size.device import visible_gpus

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started.md"

pytestmark = pytest.mark.skipif(
    bool(visible_gpus()), reason="the page's samples are from a machine without a GPU"
)


def _output_after(command: str) -> str:
    """The output block that follows the page's ```sh block running `command`."""
    text = PAGE.read_text()
    start = text.index(f"```sh\n{command}\n```\n") + len(f"```sh\n{command}\n```\n")
    opening = text.index("```\n", start) + 4
    return text[opening : text.index("```\n", opening)]


def _normalised(output: str) -> list[str]:
    lines = []
    for line in output.strip().splitlines():
        line = re.sub(r"\b\d\d:\d\d:\d\d\b", "T", line)
        line = re.sub(r"sqlite:///\S+", "URL", line)
        line = re.sub(r"/\S+", "PATH", line)
        line = re.sub(r"\d[\d.,]*(e-?\d+)?", "N", line)
        line = re.sub(r"\bN (ms|s|min|h|days)\b", "N U", line)
        lines.append(line.rstrip())
    return lines


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The page's steps 0-2, run for real: its script, `hpsearch init shapes`, `validate`."""
    folder = tmp_path_factory.mktemp("tuning")
    text = PAGE.read_text()
    script = text[text.index("```python\n") + 10 :]
    (folder / "make_shapes.py").write_text(script[: script.index("```\n")])
    subprocess.run([sys.executable, "make_shapes.py"], cwd=folder, check=True, timeout=120)
    # This user's data and cache folders stay untouched (the timing cache, the default storage).
    env = {**os.environ, "HPSEARCH_HOME": str(folder / "data")}
    env["HPSEARCH_CACHE_DIR"] = str(folder / "cache")
    outputs = {}
    for name, argv in (("init", ["init", "shapes"]), ("validate", ["validate", "study.yaml"])):
        done = subprocess.run(
            [sys.executable, "-m", "hpsearch", *argv],
            cwd=folder, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[name] = done.stderr + done.stdout  # as a terminal shows them, in this order
    return outputs


@pytest.mark.parametrize(
    ("step", "command"),
    [("init", "hpsearch init shapes"), ("validate", "hpsearch validate study.yaml")],
)
def test_the_getting_started_sample_is_what_the_command_prints(
    tutorial: dict[str, str], step: str, command: str
) -> None:
    """getting-started's `validate` sample showed `sampler: tpe pruner: median` and the old
    default storage long after both had changed."""
    assert _normalised(_output_after(command)) == _normalised(tutorial[step])
