"""The closed registry of models: a backbone from torchvision (or small_cnn) plus a new head."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tv

from hpsearch.errors import HpsearchError

logger = logging.getLogger(__name__)


class Classifier(nn.Module):
    """`backbone` (images -> features) then `head` (dropout, then the class-count linear layer).

    The split is what `freeze_backbone_epochs` freezes and what `weights` files initialise.
    """

    def __init__(self, backbone: nn.Module, features: int, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _small_cnn(in_channels: int) -> nn.Sequential:
    """Three conv-BN-ReLU-pool stages, 32/64/128 wide: ~0.6 M multiply-adds on an 8x8 image.

    `ceil_mode` pooling and the adaptive average pool accept any size from 4x4 up.
    """
    layers: list[nn.Module] = []
    for cin, cout in ((in_channels, 32), (32, 64), (64, 128)):
        layers += [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _strip_fc(model: nn.Module) -> int:
    """ResNets: `fc` becomes the identity; returns the feature width."""
    fc = model.fc
    assert isinstance(fc, nn.Linear)
    model.fc = nn.Identity()
    return fc.in_features


def _strip_classifier(model: nn.Module) -> int:
    """`classifier` Sequentials ending in [Dropout,] Linear: both go, our head replaces them."""
    classifier = model.classifier
    assert isinstance(classifier, nn.Sequential)
    assert isinstance(classifier[-1], nn.Linear)
    features = classifier[-1].in_features
    classifier[-1] = nn.Identity()
    if isinstance(classifier[-2], nn.Dropout):
        classifier[-2] = nn.Identity()
    return features


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]  # torchvision builder taking `weights=`
    weights: Any  # the torchvision weights enum; `.DEFAULT` is what `pretrained: true` loads
    strip: Callable[[nn.Module], int]
    dropout: float  # torchvision's own dropout before the last layer


# Closed: user strings index this dict, never `getattr(torchvision.models, name)`.
MODEL_REGISTRY: dict[str, _Entry | None] = {
    "small_cnn": None,
    "resnet18": _Entry(tv.resnet18, tv.ResNet18_Weights, _strip_fc, 0.0),
    "resnet34": _Entry(tv.resnet34, tv.ResNet34_Weights, _strip_fc, 0.0),
    "resnet50": _Entry(tv.resnet50, tv.ResNet50_Weights, _strip_fc, 0.0),
    "resnet101": _Entry(tv.resnet101, tv.ResNet101_Weights, _strip_fc, 0.0),
    "mobilenet_v3_small": _Entry(
        tv.mobilenet_v3_small, tv.MobileNet_V3_Small_Weights, _strip_classifier, 0.2
    ),
    "mobilenet_v3_large": _Entry(
        tv.mobilenet_v3_large, tv.MobileNet_V3_Large_Weights, _strip_classifier, 0.2
    ),
    "efficientnet_b0": _Entry(
        tv.efficientnet_b0, tv.EfficientNet_B0_Weights, _strip_classifier, 0.2
    ),
    "efficientnet_b1": _Entry(
        tv.efficientnet_b1, tv.EfficientNet_B1_Weights, _strip_classifier, 0.2
    ),
    "convnext_tiny": _Entry(tv.convnext_tiny, tv.ConvNeXt_Tiny_Weights, _strip_classifier, 0.0),
}


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Make the first convolution take `in_channels`; RGB weights are summed for grey input.

    Summing keeps a pretrained filter's response: a grey image repeated over RGB gives the same
    output as the summed filter on the single channel.
    """
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    new = copy.deepcopy(conv)  # same kernel, stride, padding, bias; only the input changes
    new.in_channels = in_channels
    summed = conv.weight.detach().sum(dim=1, keepdim=True) / in_channels
    new.weight = nn.Parameter(summed.repeat(1, in_channels, 1, 1))
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _load_weights(backbone: nn.Module, path: Path, name: str) -> None:
    """Initialise the backbone from a local state_dict or an hpsearch checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise HpsearchError(
            f"`weights` must be a readable PyTorch state_dict file, but loading {str(path)!r} "
            f"failed ({type(e).__name__}: {str(e).splitlines()[0]}); fix the path or the file."
        ) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # an hpsearch checkpoint
    if any(key.startswith("backbone.") for key in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise HpsearchError(
            f"`weights` must hold a state_dict of a {name}, but no tensor in {str(path)!r} "
            f"matches its {len(own)} parameters and buffers; use weights saved from a {name}."
        )
    backbone.load_state_dict(usable, strict=False)
    if len(usable) < len(own):
        logger.info("weights %s: loaded %d of %d tensors", path, len(usable), len(own))


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    dropout: float | None = None,
) -> Classifier:
    """Build `name` from the registry with a fresh head for `num_classes`.

    Args:
        name: a key of `MODEL_REGISTRY` (`hpsearch.train.options.MODEL_NAMES`).
        num_classes: outputs of the new head.
        in_channels: 1 or 3; the first convolution is adapted when it differs from 3.
        pretrained: load torchvision's published `DEFAULT` weights (downloads once).
        weights: a local `.pth` state_dict (torchvision layout or an hpsearch checkpoint) that
            initialises the backbone; the head is always new.
        dropout: dropout before the head; None keeps the model's default (0.2 for
            MobileNetV3 / EfficientNet, 0 otherwise).
    """
    if name not in MODEL_REGISTRY:
        raise HpsearchError(
            f"`model` must be one of {', '.join(MODEL_REGISTRY)}, but got {name!r}."
        )
    entry = MODEL_REGISTRY[name]
    if entry is None:
        backbone: nn.Module = _small_cnn(in_channels)
        features, default_dropout = 128, 0.0
    else:
        try:
            backbone = entry.factory(weights=entry.weights.DEFAULT if pretrained else None)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            raise HpsearchError(
                f"`pretrained: true` must download {name}'s weights, but that failed "
                f"({type(e).__name__}: {e}); connect to the internet once (torch hub cache) or "
                "set `weights:` to a local file."
            ) from e
        features, default_dropout = entry.strip(backbone), entry.dropout
        _adapt_first_conv(backbone, in_channels)
    if weights is not None:
        _load_weights(backbone, Path(weights).expanduser(), name)
    p = default_dropout if dropout is None else dropout
    return Classifier(backbone, features, num_classes, p)


def head_parameters(model: Classifier) -> Iterator[nn.Parameter]:
    """The parameters trained during the `freeze_backbone_epochs` stage."""
    return model.head.parameters()


def freeze_backbone(model: Classifier, frozen: bool) -> None:
    """Stop (or restart) gradients to the backbone; the loop also keeps its BatchNorm in eval."""
    model.backbone.requires_grad_(not frozen)
