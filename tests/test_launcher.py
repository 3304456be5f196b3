"""Local worker processes: GPU lists are checked before anything starts."""

from __future__ import annotations

import pytest

from hpsearch.batch_size import visible_gpus
from hpsearch.errors import HpsearchError
from hpsearch.worker.launcher import parse_gpus


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
