"""Where batch-size limits are remembered: keys, merging, one file under concurrent writers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpsearch.batch_size.cache import (
    InMemorySharedLimits,
    LimitEntry,
    LocalCache,
    cache_key,
    default_cache_dir,
    merge_entries,
    pow2_below,
)
from hpsearch.batch_size.device import DeviceInfo, describe_device
from hpsearch.errors import BatchSizeError

ROOT = Path(__file__).resolve().parent.parent


def entry(limit: int, failure: int | None = None, updated: float = 1.0) -> LimitEntry:
    return LimitEntry(limit, failure, "probe", "cuda (X, 8.0 GiB)", "cfg", updated=updated)


def test_default_cache_dir_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert LocalCache().path == tmp_path / "c" / "batch_size.json"
    monkeypatch.delenv("HPSEARCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hpsearch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hpsearch"


def test_keys_change_with_device_memory_and_software() -> None:
    config = {"model": "resnet50", "input_shape": [3, 224, 224], "margin": 0.1}
    a = DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB", 40 * 2**30, "torch 2.14.1, CUDA 13.0")
    base = cache_key(a, config)
    assert cache_key(a, dict(config)) == base
    assert len(base) == 20
    assert cache_key(DeviceInfo("cuda", a.name, 80 * 2**30, a.software), config) != base
    assert cache_key(DeviceInfo("cuda", a.name, a.total_bytes, "torch 2.15"), config) != base
    assert cache_key(a, {**config, "margin": 0.2}) != base


def test_cpu_is_described_without_torch_or_a_child() -> None:
    info = describe_device("cpu")
    assert (info.kind, info.name) == ("cpu", "cpu")
    assert info.total_bytes > 2**28
    assert info.software.startswith("torch ")
    with pytest.raises(BatchSizeError, match="needs a concrete device .* but got 'auto'"):
        describe_device("auto")


def test_merge_is_conservative() -> None:
    assert pow2_below(64) == 32
    assert pow2_below(48) == 32
    assert pow2_below(1) == 0
    assert merge_entries(None, None) is None
    assert merge_entries(entry(64), None) == entry(64)
    # Sizes that ran anywhere run here (same device type and configuration).
    merged = merge_entries(entry(64, 128), entry(256, None, updated=2.0))
    assert merged is not None
    assert (merged.limit, merged.failure) == (64, 128)
    merged = merge_entries(entry(32), entry(256, 512, updated=2.0))
    assert merged is not None
    assert (merged.limit, merged.failure) == (256, 512)
    # A failure at or below a limit (an OOM in a trial) wins over an older probe.
    merged = merge_entries(entry(128), entry(32, 64, updated=2.0))
    assert merged is not None
    assert (merged.limit, merged.failure) == (32, 64)


def test_entries_round_trip_through_json() -> None:
    e = entry(64, 128)
    shared = InMemorySharedLimits()
    shared.put("k", e.to_dict())
    assert LimitEntry.from_dict(json.loads(json.dumps(shared.get("k")))) == e
    assert shared.get("missing") is None
    assert dict(shared.items()).keys() == {"k"}


def test_an_unreadable_cache_file_costs_a_probe_not_the_fleet(tmp_path: Path) -> None:
    cache = LocalCache(tmp_path)
    cache.path.write_text("{ half a file")
    assert cache.get("k") is None
    cache.put("k", entry(8).to_dict())
    assert cache.get("k") == entry(8).to_dict()


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from hpsearch.batch_size.cache import LocalCache
    cache = LocalCache(sys.argv[1])
    deadline = time.monotonic() + 120  # a hang guard: the reader says go at its first read
    while not os.path.exists(os.path.join(sys.argv[1], "go")) and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in range(int(sys.argv[3])):
        cache.put(f"{sys.argv[2]}-{i}", {"limit": i, "failure": None, "source": "probe"})
    """
)


def test_two_processes_writing_lose_nothing_and_never_tear_the_file(tmp_path: Path) -> None:
    """Several workers per machine share the file: writes are locked, renames are atomic."""
    n = 40
    env = {"PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(n)], env=env)
        for name in ("a", "b")
    ]
    cache = LocalCache(tmp_path)
    cache.put("seed", {"limit": 1, "failure": None, "source": "probe"})
    reads = 0
    while any(w.poll() is None for w in writers):
        # Readers take no lock: they must never see half a file. The writers start after the
        # first read, so there is a read however the processes are scheduled, then more while
        # they write.
        json.loads(cache.path.read_text())
        reads += 1
        (tmp_path / "go").touch()
        time.sleep(0.005)
    assert [w.returncode for w in writers] == [0, 0]
    keys = {key for key, _ in cache.items()}
    assert keys == {"seed"} | {f"{p}-{i}" for p in "ab" for i in range(n)}
    assert reads > 0
    assert not list(tmp_path.glob(".batch_size.*.tmp"))
