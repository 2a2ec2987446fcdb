"""The model zoo: CIFAR-style VGG (11/16/19), the CIFAR ResNet-20 and a small MLP.

Every model is made by one entry point, :func:`build`. The VGG family follows the convention of
the Synaptic-Flow code base that the survey used (the book's background chapter): 3x3 convolutions
with bias, each followed by BatchNorm and ReLU, max-pools between stages, no final max-pool, a
global average pool (the 2x2 average pool at 32x32 input) and a single ``Linear(512 * width,
num_classes)``. VGG16 at width 1 has 14,728,266 parameters, 14,715,584 of them prunable.

Weights are initialised Kaiming-normal (fan-in, ReLU gain), biases zero, BatchNorm weight 1 and
bias 0, so a seed fixes the initialisation exactly (call ``torch.manual_seed`` before ``build``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

VGG_PLANS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512],
}
MODELS = (*VGG_PLANS, "resnet20", "mlp")


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at a width multiplier (at least one)."""
    return max(1, round(channels * width))


class VGG(nn.Module):
    """A CIFAR VGG: ``features`` (conv-BN-ReLU stack) then ``classifier`` (one linear layer)."""

    def __init__(self, plan: list[int | str], num_classes: int, in_channels: int, width: float):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = scaled(item, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block; a stride-2 block's shortcut subsamples and zero-pads channels
    (option A of He et al. 2016, which keeps ResNet-20 at 0.27 M parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            half = self.extra_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016): 3 stages of ``blocks`` basic blocks with 16, 32 and
    64 channels."""

    def __init__(self, blocks: int, num_classes: int, in_channels: int, width: float):
        super().__init__()
        stages = [scaled(c, width) for c in (16, 32, 64)]
        self.conv = nn.Conv2d(in_channels, stages[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(stages[0])
        layers, channels = [], stages[0]
        for i, out in enumerate(stages):
            for b in range(blocks):
                layers.append(BasicBlock(channels, out, 2 if (i > 0 and b == 0) else 1))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    """A LeNet-300-100 style perceptron on flattened images (for the 8x8 digits set)."""

    def __init__(self, num_classes: int, in_features: int, width: float):
        super().__init__()
        h1, h2 = scaled(300, width), scaled(100, width)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, h1), nn.ReLU(True),
            nn.Linear(h1, h2), nn.ReLU(True), nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def initialize(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-in) conv and linear weights, zero biases, BatchNorm weight 1, bias 0
    and fresh running statistics. Draws from torch's global generator."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
    return model


def build(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
          image_size: int = 32) -> nn.Module:
    """Make a freshly initialised model by name.

    ``width`` multiplies every layer's channels (the small presets use a narrow VGG16);
    ``image_size`` sizes the MLP, which flattens its input, and is checked against the VGGs'
    max-pools. A model too small for its images, or too large for the machine's memory, is a
    ValueError before any weight is allocated.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if not 0 < width < math.inf:  # also refuses NaN
        raise ValueError(f"width must be a positive finite number, got {width}")
    halvings = VGG_PLANS[name].count("M") if name in VGG_PLANS else 0
    if image_size < 2**halvings:  # a max-pool of a 1x1 image fails deep inside torch
        raise ValueError(f"{name} halves its images {halvings} times, so it needs images of at "
                         f"least {2**halvings}x{2**halvings} pixels, not {image_size}x"
                         f"{image_size} (8x8 digits take mlp or resnet20)")
    check_size(name, num_classes, in_channels, width, image_size)
    return initialize(_construct(name, num_classes, in_channels, width, image_size))


def _construct(name: str, num_classes: int, in_channels: int, width: float,
               image_size: int) -> nn.Module:
    if name in VGG_PLANS:
        return VGG(VGG_PLANS[name], num_classes, in_channels, width)
    if name == "resnet20":
        return ResNet(3, num_classes, in_channels, width)
    return MLP(num_classes, in_channels * image_size * image_size, width)


def check_size(name: str, num_classes: int, in_channels: int, width: float,
               image_size: int) -> None:
    """Refuse a model whose parameters alone would not fit in this machine's memory (a width
    of 1e9, say), before allocating any: it is built on the meta device, which holds no data."""
    import psutil

    try:
        with torch.device("meta"):
            parameters = sum(p.numel() for p in _construct(name, num_classes, in_channels,
                                                           width, image_size).parameters())
    except RuntimeError as error:  # sizes beyond what a tensor can index
        raise ValueError(f"{name} at width {width:g} is too large to build ({error})") from None
    needed, memory = 4 * parameters, psutil.virtual_memory().total
    if needed > memory:
        raise ValueError(f"{name} at width {width:g} has {parameters:,} parameters, "
                         f"{needed / 2**30:,.1f} GiB in float32, more than this machine's "
                         f"{memory / 2**30:,.1f} GiB of memory")
