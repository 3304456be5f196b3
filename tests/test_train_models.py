"""Models: every registry entry builds with a new head, grey input, dropout, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hpsearch.errors import HpsearchError
from hpsearch.train.models import MODEL_REGISTRY, build_model, freeze_backbone, head_parameters
from hpsearch.train.options import MODEL_NAMES

# Builds every torchvision model of the registry: tens of seconds, so not in `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_with_new_head(name: str) -> None:
    model = build_model(name, num_classes=7, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    linear = model.head[1]
    assert isinstance(linear, nn.Linear)
    assert linear.out_features == 7
    # The model's own last layer is gone: the head is the only classifier.
    assert not any(
        isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.backbone.modules()
    )


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "mobilenet_v3_small"])
def test_grey_input_adapts_first_conv(name: str) -> None:
    model = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)  # digits' native size


def test_grey_conv_responds_like_rgb_conv_on_repeated_grey() -> None:
    import torchvision

    from hpsearch.train.models import _adapt_first_conv

    net = torchvision.models.resnet18()
    rgb_conv = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    rgb_conv.load_state_dict(net.conv1.state_dict())
    _adapt_first_conv(net, 1)
    grey = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net.conv1(grey), rgb_conv(grey.expand(-1, 3, -1, -1)), atol=1e-5)


def test_dropout_default_and_override() -> None:
    assert build_model("mobilenet_v3_small", 3, 3).head[0].p == 0.2
    assert build_model("resnet18", 3, 3).head[0].p == 0.0
    assert build_model("resnet18", 3, 3, dropout=0.3).head[0].p == 0.3


def test_local_weights_initialise_backbone(tmp_path: Path) -> None:
    source = build_model("small_cnn", num_classes=5, in_channels=1)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)  # hpsearch layout: backbone.* and head.*
    loaded = build_model("small_cnn", num_classes=3, in_channels=1, weights=path)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value)
    assert loaded.head[1].out_features == 3  # the head is always new


def test_torchvision_layout_weights(tmp_path: Path) -> None:
    import torchvision

    reference = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", num_classes=4, in_channels=3, weights=path)
    key = "layer1.0.conv1.weight"
    assert torch.equal(model.backbone.state_dict()[key], reference.state_dict()[key])


def test_wrong_weights_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"something.else": torch.zeros(3)}, path)
    with pytest.raises(HpsearchError, match="`weights` must hold a state_dict of a small_cnn"):
        build_model("small_cnn", 2, 1, weights=path)
    with pytest.raises(HpsearchError, match="`weights` must be a readable PyTorch state_dict"):
        build_model("small_cnn", 2, 1, weights=tmp_path / "missing.pth")


def test_unknown_name_is_an_error() -> None:
    with pytest.raises(HpsearchError, match="`model` must be one of small_cnn"):
        build_model("__import__", 2, 3)
    assert "__import__" not in MODEL_REGISTRY


def test_freeze_backbone_leaves_only_head_trainable() -> None:
    model = build_model("small_cnn", 3, 1)
    freeze_backbone(model, True)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head_parameters(model)}
    freeze_backbone(model, False)
    assert all(p.requires_grad for p in model.parameters())
