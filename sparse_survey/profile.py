"""What a pruned network costs: multiply-accumulates (MACs) per layer and the remaining fraction.

Counts are per input image and cover the prunable layers (convolutions and linear layers), which
hold all but a sliver of a CNN's arithmetic: a convolution's weight is used once per output
position, so its MACs are ``weight.numel() * H_out * W_out``; a linear layer's are
``weight.numel()``. One MAC is one multiply and one add (two FLOPs). The remaining fraction of a
masked model weighs each layer's MACs by its density, which is what an ideal sparse kernel would
execute ("FLOP sparsity" in the Synaptic-Flow paper).
"""

from __future__ import annotations

import torch
from torch import nn

from . import masks


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense MACs of each prunable layer for one input of ``input_shape`` (no batch dimension)."""
    layers = masks.prunable_layers(model)
    positions: dict[str, int] = {}  # how many times each layer's weight is applied per input

    def counter(name: str):
        def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            per_channel = output[0, 0] if isinstance(module, nn.Conv2d) else output[0, ..., 0]
            positions[name] = per_channel.numel()
        return hook

    hooks = [layer.register_forward_hook(counter(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {name: layers[name].weight.numel() * positions[name] for name in layers}


def remaining_flops_fraction(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Fraction of the prunable layers' dense MACs that the masked model still needs."""
    macs = layer_macs(model, input_shape)
    density = masks.layer_densities(model)
    return sum(macs[n] * density[n] for n in macs) / sum(macs.values())
