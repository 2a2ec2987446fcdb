"""Which weights can be pruned, how a model carries its masks, and density accounting.

Prunable weights are the ``weight`` of every ``Conv2d`` and ``Linear`` layer (the classifier
included); biases and BatchNorm parameters are never pruned. A mask is a boolean tensor of a
weight's shape (True = kept). :func:`attach` stores it on the layer as a buffer named
``weight_mask`` (the name ``torch.nn.utils.prune`` uses), so masks follow the model through
``.to(device)`` and ``state_dict``, and parameter names stay those of ``model.named_parameters()``.

Pruned weights are kept exactly zero by multiplying each weight by its mask after every optimizer
step (:func:`apply`): whatever momentum or weight decay did to a pruned entry, it is zero again
before the next forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

PRUNABLE_LAYERS = (nn.Conv2d, nn.Linear)
MASK = "weight_mask"


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights may be pruned, keyed by the weight's parameter name."""
    return {f"{name}.weight" if name else "weight": m for name, m in model.named_modules()
            if isinstance(m, PRUNABLE_LAYERS)}


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The prunable weights, keyed by their names in ``model.named_parameters()``."""
    return {name: layer.weight for name, layer in prunable_layers(model).items()}


def attach(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Give the named layers these masks (replacing any they had) and zero what they prune."""
    layers = prunable_layers(model)
    unknown = set(masks) - set(layers)
    if unknown:
        raise KeyError(f"not prunable weights of this model: {sorted(unknown)}")
    for name, mask in masks.items():
        layer = layers[name]
        if mask.shape != layer.weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, "
                             f"weight has {tuple(layer.weight.shape)}")
        mask = mask.to(device=layer.weight.device, dtype=torch.bool)
        if hasattr(layer, MASK):
            setattr(layer, MASK, mask)
        else:
            layer.register_buffer(MASK, mask)
    apply(model)


def remove(model: nn.Module) -> None:
    """Remove every mask (the weights keep their current values), as
    ``torch.nn.utils.prune.remove`` does."""
    for layer in prunable_layers(model).values():
        if hasattr(layer, MASK):
            delattr(layer, MASK)


def get(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each prunable weight's mask; an all-True mask for a weight that has none."""
    masks = {}
    for name, layer in prunable_layers(model).items():
        mask = getattr(layer, MASK, None)
        masks[name] = torch.ones_like(layer.weight, dtype=torch.bool) if mask is None else mask
    return masks


@torch.no_grad()
def apply(model: nn.Module) -> None:
    """Zero every pruned weight in place (call after each optimizer step)."""
    for layer in prunable_layers(model).values():
        mask = getattr(layer, MASK, None)
        if mask is not None:
            layer.weight.mul_(mask)


def counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(kept, total) prunable weights of each layer."""
    return {name: (int(m.sum()), m.numel()) for name, m in get(model).items()}


def density(model: nn.Module) -> float:
    """Kept fraction of all prunable weights."""
    kept, total = map(sum, zip(*counts(model).values()))
    return kept / total


def layer_densities(model: nn.Module) -> dict[str, float]:
    """Kept fraction of each prunable weight."""
    return {name: kept / total for name, (kept, total) in counts(model).items()}


def remaining_fraction(model: nn.Module) -> float:
    """Fraction of all parameters (biases and BatchNorm included) that are not pruned."""
    pruned = sum(total - kept for kept, total in counts(model).values())
    total = sum(p.numel() for p in model.parameters())
    return (total - pruned) / total


def empty_units(model: nn.Module) -> dict[str, int]:
    """Per prunable layer, the output units (a convolution's filters, a linear layer's rows)
    that keep no weight at all. Such a unit outputs its bias alone, a constant: behind a
    BatchNorm it is a dead channel (see :func:`sparse_survey.train.dead_channels`), and the
    weights of the next layer that read it are spent on nothing."""
    return {name: int((~m.flatten(1).any(dim=1)).sum()) for name, m in get(model).items()}
