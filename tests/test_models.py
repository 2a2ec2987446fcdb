import math

import pytest
import torch
from torch import nn

from sparse_survey import masks, models


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_vgg16_parameter_counts_match_the_convention():
    model = models.build("vgg16")
    assert count(model) == 14_728_266
    assert sum(w.numel() for w in masks.prunable(model).values()) == 14_715_584
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.bias is not None for c in convs)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [10]


def test_resnet20_has_its_published_size():
    assert count(models.build("resnet20")) == 269_722


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("width", [1.0, 0.25])
def test_forward_shapes(name, width):
    channels, size = (1, 8) if name == "mlp" else (3, 32)
    model = models.build(name, num_classes=7, in_channels=channels, width=width, image_size=size)
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_width_scales_channels():
    narrow = models.build("vgg16", width=0.25)
    channels = [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    assert channels[:3] == [16, 16, 32]
    assert narrow.classifier.in_features == 128


def test_initialization_follows_the_convention():
    torch.manual_seed(0)
    model = models.build("vgg16")
    conv = model.features[3]  # 64 -> 64, fan-in 576
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.02)
    assert torch.all(conv.bias == 0)
    bn = model.features[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_seed_fixes_initialization():
    torch.manual_seed(3)
    a = models.build("vgg11", width=0.25)
    torch.manual_seed(3)
    b = models.build("vgg11", width=0.25)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="known models: vgg11"):
        models.build("vgg17")
    with pytest.raises(ValueError, match="width"):
        models.build("vgg16", width=0)
