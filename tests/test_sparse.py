"""The CSR execution path computes what the dense masked model computes."""

import pytest
import torch
from torch import nn

from sparse_survey import models, pruners, sparse


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(("name", "shape"), [("vgg16", (3, 32, 32)), ("resnet20", (3, 32, 32)),
                                             ("mlp", (1, 8, 8))])
@pytest.mark.parametrize("compression", [0.5, 1, 2])
def test_sparse_outputs_equal_the_dense_masked_outputs(name, shape, compression):
    torch.manual_seed(0)
    model = models.build(name, in_channels=shape[0], width=0.25, image_size=shape[1]).eval()
    with torch.no_grad():  # non-zero biases: outputs stay non-trivial even when pruning is severe
        for key, p in model.named_parameters():
            if key.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    pruners.prune(model, "mag", compression)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        expected = model(x)
        for layout in sparse.LAYOUTS:
            assert relative_error(sparse.sparsify(model, layout)(x), expected) < 1e-4


def test_convolution_options_are_honoured():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    with torch.no_grad():
        conv.weight.mul_(torch.rand(conv.weight.shape) < 0.3)
        x = torch.randn(2, 3, 9, 7)
        assert torch.allclose(sparse.SparseConv2d(conv)(x), conv(x), atol=1e-5)


def test_sparse_layers_hold_only_the_kept_weights():
    torch.manual_seed(0)
    model = models.build("vgg16", width=0.25)
    kept = sum(int(m.sum()) for m in pruners.prune(model, "rand", 1, seed=0).values())
    csr = sparse.sparsify(model)
    stored = [m.weight for m in csr.modules()
              if isinstance(m, (sparse.SparseConv2d, sparse.SparseLinear))]
    assert all(w.layout == torch.sparse_csr for w in stored)
    assert sum(w.values().numel() for w in stored) == kept


def test_a_single_layer_model_and_bad_input():
    layer = nn.Linear(6, 3)
    assert isinstance(sparse.sparsify(layer), sparse.SparseLinear)
    with pytest.raises(ValueError, match="unknown layout"):
        sparse.sparsify(layer, "coo")
    with pytest.raises(ValueError, match="ungrouped"):
        sparse.SparseConv2d(nn.Conv2d(4, 4, 3, groups=2))
