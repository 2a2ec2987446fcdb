"""Real sparse execution: a pruned model's layers run with PyTorch's CSR sparse kernels.

A masked dense model multiplies by zeros: it costs exactly as much as the dense one. To find out
what sparsity can buy, :func:`sparsify` copies a model and replaces each masked ``Linear`` and
``Conv2d`` by a layer that stores only the kept weights, as a CSR matrix, and multiplies with
``torch.mm`` on a CSR matrix (MKL's sparse BLAS on x86 CPUs). A convolution becomes a matrix
product by unfolding its input (im2col): ``W (out, in*k*k)`` in CSR times each image's unfolded
columns ``(in*k*k, positions)``. One product per image measured faster than one product over the
whole batch, which needs two transposed copies and runs the CSR kernel on a very wide matrix.
The copy computes the same function as the masked model (up to float rounding) and is for
inference only.

``layout="strided"`` builds the same im2col layers with ordinary dense matrices: comparing the two
separates what the sparse kernel saves from what unfolding the input costs.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from . import masks

LAYOUTS = ("csr", "strided")


def _matrix(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """A 2-D weight as a CSR matrix of its non-zero entries, or as a plain dense copy."""
    if layout == "strided":
        return weight.detach().clone()
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": we know
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return weight.detach().to_sparse_csr()


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as a CSR matrix of its non-zero entries."""

    def __init__(self, layer: nn.Linear, layout: str = "csr"):
        super().__init__()
        self.weight = _matrix(layer.weight, layout)
        self.bias = None if layer.bias is None else layer.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.mm(self.weight, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


class SparseConv2d(nn.Module):
    """A convolution as a CSR matrix times the unfolded input (im2col)."""

    def __init__(self, conv: nn.Conv2d, layout: str = "csr"):
        super().__init__()
        if conv.groups != 1 or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError("only ungrouped convolutions with numeric zero padding are supported")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = _matrix(conv.weight.reshape(conv.out_channels, -1), layout)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        rows, cols = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip((height, width), self.padding, self.dilation,
                                        self.kernel_size, self.stride))
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        # one product per image: (out, in*k*k) x (in*k*k, positions), no transposed copies
        y = torch.stack([torch.mm(self.weight, image) for image in columns])
        y = y.view(batch, self.out_channels, rows, cols)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


def sparsify(model: nn.Module, layout: str = "csr") -> nn.Module:
    """An eval-mode copy of ``model`` whose prunable layers compute as matrix products with CSR
    (``layout="csr"``) or dense (``"strided"``) weight matrices."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    sparse = copy.deepcopy(model).eval()
    masks.apply(sparse)
    for name, layer in list(sparse.named_modules()):
        if not isinstance(layer, masks.PRUNABLE_LAYERS):
            continue
        kind = SparseConv2d if isinstance(layer, nn.Conv2d) else SparseLinear
        replacement = kind(layer, layout)
        if not name:  # the model is a single layer
            return replacement
        parent_name, _, child = name.rpartition(".")
        setattr(sparse.get_submodule(parent_name) if parent_name else sparse, child, replacement)
    return sparse
