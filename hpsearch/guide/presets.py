"""The search-space presets `hpsearch init` writes: one table per model family, each with sources.

Data only (no torch, no optuna): what to search, the ranges, the published default that is
enqueued first, and where each number comes from. `tests/test_guide_presets.py` validates every
preset against the study-file schema and runs each for one short trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpsearch.train.options import MODEL_INFO, ModelInfo, models_of

# Where the numbers come from, cited by key in the presets below and written as comments.
SOURCES: dict[str, str] = {
    "he2016": 'He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition" '
    "(CVPR), sec. 3.4: SGD, batch 256, lr 0.1 divided by 10 on plateaus, weight decay 1e-4, "
    "momentum 0.9, random crops and horizontal flips",
    "goyal2017": 'Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 '
    'Hour", sec. 2.1: the linear scaling rule (batch x k -> learning rate x k)',
    "sgdr2017": 'Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm '
    'Restarts" (ICLR): cosine annealing of the learning rate',
    "szegedy2016": 'Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer '
    'Vision" (CVPR), sec. 7: label smoothing with epsilon 0.1',
    "kingma2015": 'Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization" (ICLR), '
    "Algorithm 1: lr 0.001, beta1 0.9, beta2 0.999",
    "adamw2019": 'Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (ICLR): '
    "AdamW; weight decay 0.01 is torch.optim.AdamW's default",
    "li2020": 'Li et al. 2020, "Rethinking the Hyperparameters for Fine-tuning" (ICLR), sec. 1: '
    "the common fine-tuning defaults are lr 0.01, momentum 0.9, weight decay 1e-4, and the "
    "best values depend on the dataset",
    "kornblith2019": 'Kornblith, Shlens & Le 2019, "Do Better ImageNet Models Transfer '
    'Better?" (CVPR): fine-tuning beats fixed features and from-scratch training on most '
    "datasets; learning rate and weight decay tuned per dataset on a log scale",
    "kumar2022": 'Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and '
    'Underperform Out-of-Distribution" (ICLR): train the new head first, then everything',
    "howard2019": 'Howard et al. 2019, "Searching for MobileNetV3" (ICCV), sec. 6.1: weight '
    "decay 1e-5 (with RMSProp, which the trainer does not offer: SGD with momentum here)",
    "tan2019": 'Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural '
    'Networks" (ICML), sec. 5.2: weight decay 1e-5, dropout 0.2 for B0 (with RMSProp, which '
    "the trainer does not offer: SGD with momentum here)",
    "liu2022": 'Liu et al. 2022, "A ConvNet for the 2020s" (CVPR), appendix A: AdamW, lr 4e-3 at '
    "batch 4096, weight decay 0.05, cosine schedule, label smoothing 0.1; fine-tuning: AdamW "
    "lr 5e-5, weight decay 1e-8, 30 epochs, no warmup",
    "torchvision": "torchvision's model definition (its classifier dropout)",
    "hpsearch": "not from a paper: hpsearch sizes it to the data and the budget",
}


# What choosing a model needs to know, without importing torchvision: the trainer's table.
MODEL_FACTS: dict[str, ModelInfo] = MODEL_INFO


def gflops(model: str, image_size: int) -> float:
    """Forward GFLOPs of one image: convolution cost grows with the pixel count."""
    return MODEL_FACTS[model].gflops_224 * (image_size / 224) ** 2


@dataclass(frozen=True)
class Knob:
    """One trainer option of a preset: searched in `space` (or fixed), with its default."""

    name: str
    default: Any  # the published value: enqueued first, or the fixed value when not searched
    source: str  # a key of SOURCES
    why: str  # the comment written next to it
    space: dict[str, Any] | None = None  # the search-space entry, None when always fixed
    min_trainings: int = 0  # searched only with at least this many trainings of budget
    scaled: bool = False  # an lr given at `Preset.reference_batch`: scaled linearly


@dataclass(frozen=True)
class Preset:
    """A published recipe for one model family, trained from scratch or fine-tuned."""

    key: str
    models: tuple[str, ...]
    pretrained: bool
    title: str
    sources: tuple[str, ...]
    knobs: tuple[Knob, ...]
    epochs: tuple[int, int, int]  # (fewest, default, most) epochs of one training
    reference_batch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _lr(default: float, source: str, why: str, *, scaled: bool, span: float = 10.0) -> Knob:
    # A log range of `span` either side of the default: one decade is the usual "factor 10"
    # uncertainty about a learning rate on a new dataset.
    space = {"type": "float", "low": default / span, "high": min(default * span, 1.0), "log": True}
    return Knob("lr", default, source, why, space, scaled=scaled)


_WD_FINETUNE = Knob(
    "weight_decay",
    1e-4,
    "li2020",
    "the common fine-tuning default",
    {"type": "float", "low": 1e-6, "high": 1e-3, "log": True},
)
_SMOOTHING = Knob(
    "label_smoothing",
    0.1,
    "szegedy2016",
    "softer targets",
    {"type": "float", "low": 0.0, "high": 0.2},
    min_trainings=15,
)
_MOMENTUM = Knob(
    "momentum",
    0.9,
    "he2016",
    "SGD momentum",
    {"type": "float", "low": 0.8, "high": 0.99},
    min_trainings=30,
)
_FREEZE = Knob(
    "freeze_backbone_epochs",
    0,
    "kumar2022",
    "epochs training only the new head first",
    {"type": "int", "low": 0, "high": 2},
    min_trainings=20,
)
_COSINE = Knob("lr_schedule", "cosine", "sgdr2017", "cosine decay to 0 over the training")
_SGD = Knob("optimizer", "sgd", "he2016", "SGD with momentum")
_ADAMW = Knob("optimizer", "adamw", "adamw2019", "Adam with decoupled weight decay")


def _dropout(source: str) -> Knob:
    return Knob(
        "dropout",
        0.2,
        source,
        "dropout before the new head",
        {"type": "float", "low": 0.0, "high": 0.5},
        min_trainings=15,
    )


def _sgd_scratch(wd: Knob, *more: Knob) -> tuple[Knob, ...]:
    lr = _lr(0.1, "he2016", "0.1 per 256 images, scaled to this batch (goyal2017)", scaled=True)
    return (_SGD, _MOMENTUM, lr, wd, _COSINE, _SMOOTHING, *more)


def _sgd_finetune(wd: Knob, *more: Knob) -> tuple[Knob, ...]:
    # Fine-tuning is more sensitive to the learning rate (li2020): two decades each side.
    lr = _lr(0.01, "li2020", "the common fine-tuning default", scaled=False, span=100.0)
    return (_SGD, _MOMENTUM, lr, wd, _COSINE, _SMOOTHING, _FREEZE, *more)


_WD_HE = Knob(
    "weight_decay",
    1e-4,
    "he2016",
    "L2 on the weights",
    {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
)
_WD_MOBILE = Knob(
    "weight_decay",
    1e-5,
    "howard2019",
    "light weights need little decay",
    {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
)
_WD_EFFICIENT = Knob(
    "weight_decay",
    1e-5,
    "tan2019",
    "light weights need little decay",
    {"type": "float", "low": 1e-6, "high": 1e-4, "log": True},
)
_RESNETS = models_of("resnet")
_MOBILENETS = models_of("mobilenet")
_EFFICIENTNETS = models_of("efficientnet")
_SCRATCH_EPOCHS = (10, 30, 60)
_FINETUNE_EPOCHS = (3, 10, 30)

PRESETS: tuple[Preset, ...] = (
    Preset(
        "small_cnn",
        models_of("small_cnn"),
        False,
        "a small CNN trained from scratch with AdamW",
        ("kingma2015", "adamw2019", "sgdr2017"),
        (
            _ADAMW,
            Knob("momentum", 0.9, "kingma2015", "Adam's beta1"),
            _lr(1e-3, "kingma2015", "Adam's default step size", scaled=False),
            Knob(
                "weight_decay",
                1e-2,
                "adamw2019",
                "decoupled weight decay",
                {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            ),
            _COSINE,
            _SMOOTHING,
        ),
        _SCRATCH_EPOCHS,
    ),
    Preset(
        "resnet",
        _RESNETS,
        False,
        "a ResNet trained from scratch with SGD (the ResNet paper)",
        ("he2016", "goyal2017", "sgdr2017"),
        _sgd_scratch(_WD_HE),
        _SCRATCH_EPOCHS,
        256,
    ),
    Preset(
        "resnet_finetune",
        _RESNETS,
        True,
        "fine-tuning ImageNet ResNet weights with SGD",
        ("li2020", "kornblith2019", "kumar2022"),
        _sgd_finetune(_WD_FINETUNE),
        _FINETUNE_EPOCHS,
    ),
    Preset(
        "mobilenet",
        _MOBILENETS,
        False,
        "a MobileNetV3 trained from scratch with SGD",
        ("howard2019", "he2016", "goyal2017"),
        _sgd_scratch(_WD_MOBILE, _dropout("torchvision")),
        _SCRATCH_EPOCHS,
        256,
    ),
    Preset(
        "mobilenet_finetune",
        _MOBILENETS,
        True,
        "fine-tuning ImageNet MobileNetV3 weights",
        ("li2020", "howard2019", "kumar2022"),
        _sgd_finetune(_WD_FINETUNE, _dropout("torchvision")),
        _FINETUNE_EPOCHS,
    ),
    Preset(
        "efficientnet",
        _EFFICIENTNETS,
        False,
        "an EfficientNet trained from scratch with SGD",
        ("tan2019", "he2016", "goyal2017"),
        _sgd_scratch(_WD_EFFICIENT, _dropout("tan2019")),
        _SCRATCH_EPOCHS,
        256,
    ),
    Preset(
        "efficientnet_finetune",
        _EFFICIENTNETS,
        True,
        "fine-tuning ImageNet EfficientNet weights",
        ("li2020", "tan2019", "kumar2022"),
        _sgd_finetune(_WD_FINETUNE, _dropout("tan2019")),
        _FINETUNE_EPOCHS,
    ),
    Preset(
        "convnext",
        models_of("convnext"),
        False,
        "ConvNeXt trained from scratch with AdamW",
        ("liu2022", "goyal2017"),
        (
            _ADAMW,
            Knob("momentum", 0.9, "liu2022", "AdamW's beta1"),
            _lr(
                4e-3,
                "liu2022",
                "4e-3 per 4096 images, scaled to this batch (goyal2017)",
                scaled=True,
            ),
            Knob(
                "weight_decay",
                0.05,
                "liu2022",
                "decoupled weight decay",
                {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
            ),
            _COSINE,
            Knob("label_smoothing", 0.1, "liu2022", "softer targets"),
            Knob("warmup_epochs", 1, "liu2022", "a linear warmup first (20 of 300 epochs there)"),
        ),
        _SCRATCH_EPOCHS,
        4096,
    ),
    Preset(
        "convnext_finetune",
        models_of("convnext"),
        True,
        "fine-tuning ImageNet ConvNeXt weights",
        ("liu2022", "kornblith2019"),
        (
            _ADAMW,
            Knob("momentum", 0.9, "liu2022", "AdamW's beta1"),
            _lr(
                5e-5,
                "liu2022",
                "the paper's fine-tuning rate, at this batch",
                scaled=False,
                span=30.0,
            ),
            Knob(
                "weight_decay",
                1e-8,
                "liu2022",
                "almost no decay when fine-tuning",
                {"type": "float", "low": 1e-8, "high": 1e-2, "log": True},
            ),
            _COSINE,
            _SMOOTHING,
            _FREEZE,
        ),
        _FINETUNE_EPOCHS,
    ),
)


def preset_for(model: str, pretrained: bool) -> Preset:
    """The preset of `model`'s family, fine-tuning or from scratch."""
    for preset in PRESETS:
        if model in preset.models and preset.pretrained == pretrained:
            return preset
    if model == "small_cnn":
        raise ValueError("small_cnn has no pretrained weights; use pretrained=False")
    raise ValueError(f"no preset for model {model!r}; known: {', '.join(MODEL_FACTS)}")


def cite(key: str) -> str:
    """The full citation of a source key."""
    return SOURCES[key]
