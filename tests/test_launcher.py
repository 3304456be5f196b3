"""Local worker processes: GPU lists are checked before anything starts."""

from __future__ import annotations

import pytest

from hpsearch.batch_size import visible_gpus
from hpsearch.errors import HpsearchError
from hpsearch.worker.launcher import parse_gpus


def test_explicit_gpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpus("0,2,3") == ["0", "2", "3"]
    with pytest.raises(
        HpsearchError, match=r"--gpus must be `all` or indices like 0,2,3, but got"
    ):
        parse_gpus("zero")


def test_all_gpus_on_a_machine_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    with pytest.raises(HpsearchError, match=r"--gpus all: no GPU found .*use --workers N"):
        parse_gpus("all")


def test_visible_devices_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert parse_gpus("all") == ["1", "3"]
