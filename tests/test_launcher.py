"""Local worker processes: GPU lists are checked before anything starts; the children."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.batch_size import visible_gpus
from hpsearch.errors import HpsearchError
from hpsearch.storage import StorageURL
from hpsearch.worker.launcher import launch, parse_gpus


def test_explicit_gpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # a machine with four GPUs
    assert parse_gpus("0,2,3") == ["0", "2", "3"]
    with pytest.raises(
        HpsearchError, match=r"--gpus must be `all` or indices like 0,2,3, but got"
    ):
        parse_gpus("zero")
    with pytest.raises(HpsearchError, match=r"--gpus 0,0: a GPU is named twice"):
        parse_gpus("0,0")


def test_gpus_this_machine_does_not_have_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--gpus 3,7` was accepted on a machine without those GPUs."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    with pytest.raises(HpsearchError, match=r"--gpus 3,7: this machine has no GPU 7; its GPUs"):
        parse_gpus("3,7")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(HpsearchError, match=r"its GPUs are none \(no GPU found\)"):
        parse_gpus("0")


def test_all_gpus_on_a_machine_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    with pytest.raises(HpsearchError, match=r"--gpus all: no GPU found .*use --workers N"):
        parse_gpus("all")


def test_visible_devices_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert parse_gpus("all") == ["1", "3"]


ENVIRONMENT_PY = '''
import json, os, sys

def record(params, report):
    """Writes what this worker process sees, one file per process."""
    seen = {
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "password": os.environ.get("HPSEARCH_DB_PASSWORD"),
        "storage": bool(os.environ.get("HPSEARCH_STORAGE")),
        "imported_by_parent": "launcher_parent_marker" in sys.modules,
    }
    with open(os.path.join(params["folder"], str(os.getpid())), "w") as f:
        json.dump(seen, f)
    return {"loss": params["x"] ** 2}
'''


@pytest.mark.slow
def test_children_are_forked_with_one_gpu_each_and_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_study: Callable[..., Path],
    unique_name: str,
) -> None:  # fmt: skip
    """The children start from the parent's imports (a fork, not a fresh interpreter: about a
    second of CPU each), each sees its own GPU, and no trial gets the password or the storage URL
    in its environment."""
    seen = tmp_path / "seen"
    seen.mkdir()
    path = write_study(f"""
        name: {unique_name}
        metric: loss
        direction: minimize
        sampler: {{type: random, seed: 1}}
        pruner: {{type: none}}
        budget: {{n_trials: 4}}
        objective: {{function: environment.py:record, folder: {seen}}}
        search_space:
          x: {{type: float, low: -5, high: 5}}
        """)  # fmt: skip
    (path.parent / "environment.py").write_text(ENVIRONMENT_PY)
    monkeypatch.setitem(sys.modules, "launcher_parent_marker", types.ModuleType("marker"))
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # what a CPU-only parent holds
    monkeypatch.setenv("HPSEARCH_DB_PASSWORD", "s3cret")
    url = StorageURL(f"sqlite:///{tmp_path / 'db.sqlite'}", "test")
    assert launch([str(path), "-q"], url, n_workers=2, gpus=["3", "5"]) == 0
    records = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert {r["gpus"] for r in records} <= {"3", "5"}
    assert all(r["imported_by_parent"] for r in records)
    assert not any(r["password"] for r in records)
    assert not any(r["storage"] for r in records)  # the URL holds it: not a trial's business
