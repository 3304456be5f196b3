"""Data: the digits set, image folders with awkward files, the split, preprocessing, summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from data_factory import Folder, make_image_folder
from PIL import Image

from hpsearch.errors import DataError
from hpsearch.train import data as data_module
from hpsearch.train import images
from hpsearch.train.data import load_data
from hpsearch.train.images import load_image, scan_folder
from hpsearch.train.options import DatasetOptions, TrainerOptions
from hpsearch.train.sources import build_index, stratified_split
from hpsearch.train.summary import summarize
from hpsearch.train.transforms import BatchTransform, channel_stats

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return make_image_folder(tmp_path / "images")


def test_stratified_split_keeps_proportions_and_is_stable() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 20, 5])
    train, val = stratified_split(labels, 0.2, seed=7)
    assert np.bincount(labels[val]).tolist() == [20, 10, 4, 1]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    again = stratified_split(labels, 0.2, seed=7)
    assert np.array_equal(train, again[0])
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(labels, 0.2, seed=8)[1])


def test_split_keeps_a_training_image_per_class() -> None:
    train, val = stratified_split(np.array([0, 0, 1, 2, 2, 2]), 0.9, seed=0)
    assert set(np.array([0, 0, 1, 2, 2, 2])[train]) == {0, 1, 2}
    assert 2 not in val  # the single image of class 1 (index 2) stays in training


def test_digits_index_is_stratified_and_identical_across_trials() -> None:
    first = build_index(DatasetOptions(name="digits"))
    second = build_index(DatasetOptions(name="digits"))
    assert first.classes == tuple(str(i) for i in range(10))
    assert len(first.train) + len(first.val) == 1797
    assert np.array_equal(first.val.labels, second.val.labels)
    assert first.val.pixels is not None
    assert second.val.pixels is not None
    assert np.array_equal(first.val.pixels, second.val.pixels)
    fractions = np.array(first.val.counts(10)) / (
        np.array(first.val.counts(10)) + np.array(first.train.counts(10))
    )
    assert np.allclose(fractions, 0.2, atol=0.01)


def test_digits_loaders_cover_every_image_once_per_epoch() -> None:
    options = TrainerOptions(dataset={"name": "digits"}, batch_size=100)
    data = load_data(options, device=CPU)
    assert len(data.train) == math.ceil(data.num_train / 100)  # last partial batch kept
    batches = list(data.train)
    assert sum(len(y) for _, y in batches) == data.num_train
    assert batches[0][0].dtype == torch.uint8
    assert batches[0][0].shape[1:] == (1, 8, 8)
    x = data.transform(batches[0][0], train=True)
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.2  # `normalize: dataset` centres the training data


def test_digits_resized_to_rgb() -> None:
    options = TrainerOptions(
        dataset={"name": "digits", "image_size": 16, "channels": 3, "normalize": "imagenet"}
    )
    data = load_data(options, device=CPU)
    x, _ = next(iter(data.val))
    assert x.shape[1:] == (3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 2])


def test_scan_skips_corrupt_counts_and_ignores_non_images(folder: Folder, tmp_path: Path) -> None:
    scan = scan_folder(folder.root, cache_dir=tmp_path / "cache")
    assert scan.classes == folder.classes
    assert len(scan.files) == folder.readable
    assert [rel for rel, _ in scan.bad] == [folder.corrupt.relative_to(folder.root).as_posix()]
    assert all(not rel.endswith(".txt") for rel, _ in scan.files)
    assert set(scan.sizes.values()) == {(16, 16)}


def test_scan_result_is_cached(
    folder: Folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = scan_folder(folder.root, cache_dir=cache)

    def no_decoding(path: Path) -> str:
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(images, "_check", no_decoding)
    assert scan_folder(folder.root, cache_dir=cache) == first
    (folder.root / folder.classes[2] / "new.png").write_bytes(folder.grey.read_bytes())
    with pytest.raises(AssertionError, match="decoded"):  # a new file invalidates the cache
        scan_folder(folder.root, cache_dir=cache)


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_rgba_palette_become_model_channels(folder: Folder, channels: int) -> None:
    for path in (folder.grey, folder.rgba, folder.palette):
        assert load_image(path, channels=channels, size=8).shape == (channels, 8, 8)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 6), (0, 0, 0, 0)).save(path)
    pixels = load_image(path, channels=3, size=None)
    assert pixels.shape == (3, 6, 6)
    assert int(pixels.min()) == 255


def test_folder_training_data_skips_corrupt_file(folder: Folder, tmp_path: Path) -> None:
    options = TrainerOptions(dataset={"path": str(folder.root)}, batch_size=8)
    data = load_data(options, device=CPU, cache_dir=tmp_path / "cache")
    assert data.num_train + sum(len(y) for _, y in data.val) == folder.readable
    assert [path for path, _ in data.index.skipped] == [str(folder.corrupt)]
    assert data.index.warnings
    assert "skipped 1 unreadable" in data.index.warnings[0]
    x, _ = next(iter(data.train))
    assert x.shape[1:] == (3, 16, 16)
    assert list((tmp_path / "cache").glob("stats-*.json"))  # dataset mean/std cached


def test_a_worker_says_a_dataset_problem_once_not_every_trial(
    folder: Folder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = DatasetOptions(path=str(folder.root))
    for _ in range(3):  # a worker builds the index for each of its trials
        index = build_index(options, cache_dir=tmp_path / "cache")
        assert "skipped 1 unreadable" in index.warnings[0]  # still in every summary
    said = [r.getMessage() for r in caplog.records if "unreadable image(s)" in r.getMessage()]
    assert len(said) == 1  # the message names this test's own folder: no earlier test said it


def test_streaming_loader_matches_preloaded(
    folder: Folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = TrainerOptions(dataset={"path": str(folder.root), "image_size": 12}, batch_size=8)
    preloaded = load_data(options, device=CPU)
    monkeypatch.setattr(data_module, "PRELOAD_BYTES", 0)
    streamed = load_data(options, device=CPU)
    assert isinstance(streamed.train, torch.utils.data.DataLoader)
    assert len(streamed.train) == len(preloaded.train)
    stream_x = torch.cat([x for x, _ in streamed.val])
    memory_x = torch.cat([x for x, _ in preloaded.val])
    assert torch.equal(stream_x, memory_x)
    assert torch.allclose(streamed.transform.mean, preloaded.transform.mean, atol=0.02)


def test_val_path_uses_its_own_folder(folder: Folder, tmp_path: Path) -> None:
    val = make_image_folder(tmp_path / "val", per_class=2, seed=1)
    index = build_index(DatasetOptions(path=str(folder.root), val_path=str(val.root)))
    assert len(index.train) == folder.readable
    assert len(index.val) == val.readable


def test_empty_class_folder_is_an_error(folder: Folder) -> None:
    (folder.root / "empty").mkdir()
    with pytest.raises(DataError, match=r"every class folder must hold a readable image.*empty"):
        build_index(DatasetOptions(path=str(folder.root)))


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="`dataset.path` must be a folder"):
        build_index(DatasetOptions(path=str(tmp_path / "nope")))


def test_mixed_sizes_need_image_size(folder: Folder) -> None:
    Image.new("RGB", (40, 30)).save(folder.root / folder.classes[0] / "big.png")
    with pytest.raises(DataError, match="`dataset.image_size` must be set"):
        summarize(DatasetOptions(path=str(folder.root)))
    assert summarize(DatasetOptions(path=str(folder.root), image_size=16)).image_size == 16


def test_imbalance_is_a_warning(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imb", classes=("a", "b"), per_class=2).root
    for i in range(30):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(root / "a" / f"extra{i}.png")
    summary = summarize(DatasetOptions(path=str(root), max_imbalance=5))
    assert any("classes are imbalanced" in w for w in summary.warnings)


def test_summary_lines(folder: Folder) -> None:
    summary = summarize(DatasetOptions(path=str(folder.root)))
    assert summary.classes == folder.classes
    assert summary.num_train + summary.num_val == folder.readable
    lines = summary.lines()
    assert lines[0].startswith(f"data: {folder.root}: 3 classes, ")
    assert "16x16 (39)" in "\n".join(lines)
    assert any(str(folder.corrupt) in line for line in lines)
    digits = summarize(DatasetOptions(name="digits")).lines()
    assert "10 classes, 1438 train / 359 val images, resized to 8x8" in digits[0]
    assert digits[2] == "  image sizes seen: 8x8 (1797)"


def test_augmentations_keep_shape_and_range() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    augment = ("hflip", "random_crop", "rotate", "color_jitter")
    transform = BatchTransform([0.0] * 3, [1.0] * 3, augment=augment)
    out = transform(images, train=True)
    assert out.shape == images.shape
    assert 0.0 <= float(out.min())
    assert float(out.max()) <= 1.0
    assert not torch.allclose(out, images.float() / 255)
    assert torch.allclose(transform(images, train=False), images.float() / 255)  # eval: none


def test_channel_stats() -> None:
    images = torch.stack([torch.zeros(2, 4, 4), torch.full((2, 4, 4), 255.0)]).to(torch.uint8)
    mean, std = channel_stats([images])
    assert mean == pytest.approx([0.5, 0.5])
    assert std == pytest.approx([0.5, 0.5])
