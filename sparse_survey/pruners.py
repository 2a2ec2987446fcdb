"""Pruning scores and pruning: Rand, Mag, SNIP, GraSP and SynFlow.

:func:`score` gives one score per prunable weight (higher = keep); :func:`prune` turns scores into
masks that keep an exact number of weights, in one or several rounds, and attaches them to the
model.
Conventions (``design.md`` section 4):

- ``rand``    i.i.d. standard normal;
- ``mag``     ``|w|``;
- ``snip``    ``|w * dL/dw|`` (Lee et al. 2019; the same as ``|dL/dm|`` at mask ``m = 1``);
- ``grasp``   ``w * (H g)``, signed, with logits divided by ``T = 200``, ``g`` the loss gradient
  summed over the batches and ``H g`` the gradient of ``g . dL/dw`` (Wang et al. 2020). Keeping
  the highest ``w * Hg`` is removing the largest ``-w * Hg``, as the paper states it;
- ``synflow`` ``|w * dR/dw|`` with ``R`` the summed output of the network whose parameters and
  buffers are all replaced by their absolute values, fed one all-ones input (Tanaka et al. 2020).

Scoring runs with BatchNorm in eval mode, sums gradients over all given batches (cross-entropy with
mean reduction), and leaves the model as it found it: weights, BatchNorm statistics, train/eval
mode and ``.grad`` are untouched (gradients come from ``torch.autograd.grad``; SynFlow works on a
copy).

Compression ``c`` means density ``d = 10**-c`` of the prunable weights. Pruning in ``k`` rounds
reaches ``d**(r/k)`` after round ``r``, rescoring the masked model each round; only weights still
alive compete, so masks are nested. ``global`` scope keeps exactly ``round(d * N)`` of all ``N``
prunable weights; ``local`` scope keeps ``round(d * n)`` of each layer's ``n``. Ties are broken
towards the lower flat index, so a mask is a deterministic function of its scores.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from . import masks as masking

METHODS = ("rand", "mag", "snip", "grasp", "synflow")
DATA_FREE = ("rand", "mag", "synflow")
SCOPES = ("global", "local")
SURVEY_COMPRESSIONS = (0.05, 0.1, 0.2, 0.5, 1, 2)  # the survey's grid: density 10**-c
DEFAULT_ITERATIONS = {"synflow": 100}
GRASP_TEMPERATURE = 200.0

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def score(model: nn.Module, method: str, batches: Batches | None = None, seed: int | None = None,
          input_shape: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Score every prunable weight of ``model`` (higher = more worth keeping).

    ``batches`` (``(inputs, targets)`` pairs) are needed by ``snip`` and ``grasp``; ``seed`` seeds
    ``rand`` (default: torch's global generator); ``input_shape`` (one input, no batch dimension)
    is SynFlow's, taken from the first batch when given, else guessed from the first layer
    (``(C, 32, 32)`` for a convolution).
    """
    _check_method(method)
    batches = _materialize(method, batches)
    weights = masking.prunable(model)
    if method == "rand":
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return {n: torch.randn(w.shape, generator=g).to(w.device) for n, w in weights.items()}
    if method == "mag":
        return {n: w.detach().abs() for n, w in weights.items()}
    with _eval_mode(model):
        if method == "snip":
            grads = loss_gradient(model, batches)
            return {n: (w.detach() * grads[n]).abs() for n, w in weights.items()}
        if method == "grasp":
            hg = hessian_gradient_product(model, batches)
            return {n: w.detach() * hg[n] for n, w in weights.items()}
    return synflow_scores(model, input_shape or _input_shape(model, batches))


def prune(model: nn.Module, method: str, compression: float, batches: Batches | None = None,
          scope: str = "global", iterations: int | None = None, invert: bool = False,
          seed: int | None = None, input_shape: tuple[int, ...] | None = None,
          ) -> dict[str, torch.Tensor]:
    """Prune ``model`` to density ``10**-compression`` and return its masks (also attached).

    ``iterations`` rounds (default 100 for SynFlow, 1 otherwise) follow the exponential schedule;
    scores are recomputed on the masked model each round, and only surviving weights compete.
    ``invert=True`` keeps the lowest scores instead (the inversion control). Masks the model
    already carries are respected: pruning never revives a weight. A pruning that leaves a layer
    with no weight at all (layer collapse) warns.
    """
    _check_method(method)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {', '.join(SCOPES)}")
    iterations = DEFAULT_ITERATIONS.get(method, 1) if iterations is None else iterations
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    density = density_of(compression)
    sizes = {n: w.numel() for n, w in masking.prunable(model).items()}
    check_survivors(density, sizes, scope)
    batches = _materialize(method, batches)
    current = masking.get(model)
    for r in range(1, iterations + 1):
        target = density ** (r / iterations)
        round_seed = None if seed is None else seed + r
        scores = score(model, method, batches, round_seed, input_shape)
        current = select(scores, current, target, scope, invert)
        masking.attach(model, current)
    emptied = [name for name, mask in current.items() if not mask.any()]
    if emptied:
        warnings.warn(f"{method} at compression {compression:g} left {len(emptied)} of "
                      f"{len(current)} prunable layers with no weight ({', '.join(emptied)}): "
                      "no signal passes them, so the network can only guess (layer collapse)",
                      stacklevel=2)
    return current


def density_of(compression: float) -> float:
    """Density ``10**-c`` of a compression ``c >= 0``."""
    if not compression >= 0:  # also catches NaN
        raise ValueError(f"compression must be >= 0 (density 10**-c), got {compression}")
    return 10.0 ** -compression


def select(scores: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], density: float,
           scope: str = "global", invert: bool = False) -> dict[str, torch.Tensor]:
    """New masks keeping the highest-scoring ``density`` of the weights, among those alive.

    ``global``: exactly ``round(density * N)`` over all weights together; ``local``: exactly
    ``round(density * n)`` in each tensor. Never more than are alive.
    """
    for name, s in scores.items():
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"scores of {name} are not all finite")
    if scope == "local":
        return {n: _keep_top(s, alive[n], round(density * s.numel()), invert)
                for n, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    flat_alive = torch.cat([alive[n].flatten() for n in names])
    kept = _keep_top(flat, flat_alive, round(density * flat.numel()), invert)
    parts = kept.split([scores[n].numel() for n in names])
    return {n: part.view_as(scores[n]) for n, part in zip(names, parts)}


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, k: int, invert: bool) -> torch.Tensor:
    """Boolean mask of the ``k`` highest (lowest if ``invert``) alive scores; ties go to the lower
    flat index. Linear time (a k-th value and a comparison), so 100 SynFlow rounds stay cheap."""
    values = torch.where(alive, -scores if invert else scores, -torch.inf).flatten()
    k = min(k, int(alive.sum()))
    if k == 0:
        return torch.zeros_like(alive)
    threshold = values.kthvalue(values.numel() - k + 1).values  # the k-th largest, finite
    keep = values > threshold
    tied = (values == threshold).nonzero().flatten()[: k - int(keep.sum())]
    keep[tied] = True
    return keep.view_as(scores)


def layerwise_shuffle(masks: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The shuffle control: each layer keeps as many weights, at new random positions."""
    g = torch.Generator().manual_seed(seed)
    return {n: m.flatten()[torch.randperm(m.numel(), generator=g).to(m.device)].view_as(m)
            for n, m in masks.items()}


# ------------------------------------------------------------------------------ the scores

def _batch_gradient(model: nn.Module, weights: dict[str, nn.Parameter], x: torch.Tensor,
                    y: torch.Tensor, temperature: float, create_graph: bool = False):
    """Gradients of one batch's mean cross-entropy (logits divided by ``temperature``)."""
    device = weights[next(iter(weights))].device
    loss = F.cross_entropy(model(x.to(device)) / temperature, y.to(device))
    return torch.autograd.grad(loss, list(weights.values()), create_graph=create_graph)


def loss_gradient(model: nn.Module, batches: list,
                  temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """``dL/dw`` for each prunable weight, summed over batches (cross-entropy, mean reduction,
    logits divided by ``temperature``)."""
    weights = masking.prunable(model)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y in batches:
        for n, g in zip(weights, _batch_gradient(model, weights, x, y, temperature)):
            total[n] += g
    return total


def hessian_gradient_product(model: nn.Module, batches: list,
                             temperature: float = GRASP_TEMPERATURE) -> dict[str, torch.Tensor]:
    """GraSP's ``H g``: with ``g`` the summed gradient held constant, the gradient of
    ``g . dL/dw`` summed over batches, by double backward (logits divided by ``temperature``)."""
    g = loss_gradient(model, batches, temperature)  # computed without a graph: a constant
    weights = masking.prunable(model)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y in batches:
        grads = _batch_gradient(model, weights, x, y, temperature, create_graph=True)
        z = sum((gi * g[n]).sum() for n, gi in zip(weights, grads))
        for n, h in zip(weights, torch.autograd.grad(z, list(weights.values()))):
            total[n] += h
    return total


def synflow_scores(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """SynFlow's ``|w * dR/dw|`` on an absolute-valued copy of the model, all-ones input.

    Computed in float32 first; if ``R`` or a score overflows there, again in float64. Pruned
    weights are zero in the copy, so they carry no flow."""
    for dtype in (torch.float32, torch.float64):
        scores = _synflow_in(model, input_shape, dtype)
        if all(torch.isfinite(s).all() for s in scores.values()):
            return scores
    raise FloatingPointError("SynFlow scores overflow even in float64; prune in more rounds or "
                             "use a shallower model")


def _synflow_in(model: nn.Module, input_shape, dtype) -> dict[str, torch.Tensor]:
    net = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.abs_()
    weights = masking.prunable(net)
    device = next(net.parameters()).device
    r = net(torch.ones(1, *input_shape, dtype=dtype, device=device)).sum()
    grads = torch.autograd.grad(r, list(weights.values()))
    return {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}


# ------------------------------------------------------------------------------ checks and helpers

def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known methods: {', '.join(METHODS)}")


def _materialize(method: str, batches: Batches | None) -> list | None:
    """Batches as a list (they are used once per round); an error if a method needs data."""
    if batches is None:
        if method not in DATA_FREE:
            raise ValueError(f"{method} scores weights by the loss on data: pass batches=... "
                             "(an iterable of (inputs, targets) pairs)")
        return None
    batches = batches if isinstance(batches, list) else list(batches)
    if not batches and method not in DATA_FREE:
        raise ValueError(f"{method} was given an empty iterable of batches")
    return batches


def check_survivors(density: float, sizes: dict[str, int], scope: str) -> None:
    """Refuse a compression at which fewer than one weight per layer could survive."""
    if scope == "local":
        starved = [n for n, size in sizes.items() if round(density * size) < 1]
        if starved:
            raise ValueError(f"density {density:.3g} keeps no weight of {', '.join(starved)} "
                             "under local scope; lower the compression")
    elif round(density * sum(sizes.values())) < len(sizes):
        raise ValueError(f"density {density:.3g} keeps {round(density * sum(sizes.values()))} "
                         f"weights, fewer than one per prunable layer ({len(sizes)} layers); "
                         "lower the compression")


def _input_shape(model: nn.Module, batches: list | None) -> tuple[int, ...]:
    if batches:
        return tuple(batches[0][0].shape[1:])
    first = next(iter(masking.prunable_layers(model).values()))
    return (first.in_channels, 32, 32) if isinstance(first, nn.Conv2d) else (first.in_features,)


@contextmanager
def _eval_mode(model: nn.Module):
    """Put a model in eval mode for a block and restore every module's mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
