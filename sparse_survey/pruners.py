"""Pruning scores and pruning: Rand, Mag, SNIP, GraSP and SynFlow.

:data:`METHODS` is the one registry of the methods: each :class:`Method` names its score function,
the survey's label, whether it scores on data and its default number of rounds; everything else
(the command line, run configurations, the survey's grid, the order of table columns) reads it.
:func:`score` gives one score per prunable weight (higher = keep); :func:`prune` turns scores into
masks that keep an exact number of weights, in one or several rounds, and attaches them to the
model. The conventions (stated in the book's method chapters):

- ``rand``    i.i.d. standard normal;
- ``mag``     ``|w|``;
- ``snip``    ``|w * dL/dw|`` (Lee et al. 2019; the same as ``|dL/dm|`` at mask ``m = 1``);
- ``grasp``   ``w * (H g)``, signed, with logits divided by ``T = 200``, ``g`` the loss gradient
  summed over the batches and ``H g`` the gradient of ``g . dL/dw`` (Wang et al. 2020). Keeping
  the highest ``w * Hg`` is removing the largest ``-w * Hg``, as the paper states it;
- ``synflow`` ``|w * dR/dw|`` with ``R`` the summed output of the network whose parameters and
  buffers are all replaced by their absolute values, fed one all-ones input (Tanaka et al. 2020).

Scoring sums gradients over all given batches (cross-entropy with mean reduction) with BatchNorm
in eval mode, the Synaptic-Flow code's convention; ``bn_mode="train"`` scores SNIP and GraSP with
batch statistics instead, as their original code does. Scoring leaves the model as it found it:
weights, BatchNorm statistics, train/eval mode and ``.grad`` are untouched (gradients come from
``torch.autograd.grad``; SynFlow works on a copy).

Compression ``c`` means density ``d = 10**-c`` of the prunable weights. Pruning in ``k`` rounds
(``iterations``) reaches ``d**(r/k)`` after round ``r``, rescoring the masked model each round;
only weights still alive compete, so masks are nested. ``global`` scope keeps exactly
``round(d * N)`` of all ``N`` prunable weights; ``local`` scope keeps ``round(d * n)`` of each
layer's ``n``. ``rounding="up"`` keeps ``N - floor((1 - d) * N)`` instead, as Synaptic-Flow's own
code does in every round (it truncates the count it prunes): one weight more at most per round, a
convention that decides a share of SynFlow's kept weights (the book's sanity checks). Ties are
broken towards the lower flat index, so a mask is a deterministic function of its scores.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import masks as masking
from . import threads
from .train import ieee_fp32

SCOPES = ("global", "local")
BN_MODES = ("eval", "train")
ROUNDINGS = ("nearest", "up")  # how a round's kept count d * N is made whole (see kept_count)
SURVEY_COMPRESSIONS = (0.05, 0.1, 0.2, 0.5, 1, 2)  # the survey's grid: density 10**-c
SURVEY_IMP_ITERATIONS = (2, 3, 4)  # its IMP columns: "IMP (k Iters)"
GRASP_TEMPERATURE = 200.0

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Scores = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------ the scores

def random_scores(model: nn.Module, batches: list | None = None, seed: int | None = None,
                  input_shape: tuple[int, ...] | None = None) -> Scores:
    """Rand: i.i.d. standard normal scores (``seed``: default, torch's global generator)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return {n: torch.randn(w.shape, generator=g).to(w.device)
            for n, w in masking.prunable(model).items()}


def magnitude_scores(model: nn.Module, batches: list | None = None, seed: int | None = None,
                     input_shape: tuple[int, ...] | None = None) -> Scores:
    """Mag: ``|w|``."""
    return {n: w.detach().abs() for n, w in masking.prunable(model).items()}


def snip_scores(model: nn.Module, batches: list, seed: int | None = None,
                input_shape: tuple[int, ...] | None = None) -> Scores:
    """SNIP: ``|w * dL/dw|``, the loss gradient summed over ``batches``."""
    grads = loss_gradient(model, batches)
    return {n: (w.detach() * grads[n]).abs() for n, w in masking.prunable(model).items()}


def grasp_scores(model: nn.Module, batches: list, seed: int | None = None,
                 input_shape: tuple[int, ...] | None = None) -> Scores:
    """GraSP: ``w * (H g)``, signed (see :func:`hessian_gradient_product`)."""
    hg = hessian_gradient_product(model, batches)
    return {n: w.detach() * hg[n] for n, w in masking.prunable(model).items()}


def synflow_scores(model: nn.Module, batches: list | None = None, seed: int | None = None,
                   input_shape: tuple[int, ...] | None = None) -> Scores:
    """SynFlow's ``|w * dR/dw|`` on an absolute-valued copy of the model, all-ones input of
    ``input_shape`` (default: the first batch's, else ``(C, 32, 32)`` for a first convolution).

    Computed in float32 first; if ``R`` or a score overflows there, again in float64; never in
    bf16 or TensorFloat-32, whatever the training precision: autocast is switched off here (and
    :func:`score` turns TensorFloat-32 off on CUDA), since ``R`` multiplies through every layer
    and bf16 keeps only 8 bits of each factor. Pruned weights are zero in the
    copy, so they carry no flow."""
    input_shape = input_shape or _input_shape(model, batches)
    for dtype in (torch.float32, torch.float64):
        device_type = next(model.parameters()).device.type
        with torch.autocast(device_type, enabled=False):
            scores = _synflow_in(model, input_shape, dtype)
        if all(torch.isfinite(s).all() for s in scores.values()):
            return scores
    raise FloatingPointError("SynFlow scores overflow even in float64; prune in more rounds or "
                             "use a shallower model")


@dataclass(frozen=True)
class Method:
    """A pruning method at initialization: its name, the survey's label, its score function
    ``scores(model, batches, seed, input_shape)``, whether it scores on data, and its default
    number of rounds (``iterations``)."""

    name: str
    label: str
    scores: Callable[..., Scores]
    needs_data: bool = False
    iterations: int = 1


METHODS: dict[str, Method] = {m.name: m for m in (  # in the survey's column order
    Method("rand", "Rand", random_scores),
    Method("mag", "Mag", magnitude_scores),
    Method("snip", "SNIP", snip_scores, needs_data=True),
    Method("grasp", "GraSP", grasp_scores, needs_data=True),
    Method("synflow", "SynFlow", synflow_scores, iterations=100),
)}


def _method(name: str) -> Method:
    """The registered method of this name, or a clear error."""
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def score(model: nn.Module, method: str, batches: Batches | None = None,
          seed: int | None = None, input_shape: tuple[int, ...] | None = None,
          bn_mode: str = "eval") -> Scores:
    """Score every prunable weight of ``model`` (higher = more worth keeping).

    ``batches`` (``(inputs, targets)`` pairs) are needed by the methods that score on data (SNIP,
    GraSP), which see BatchNorm in ``bn_mode``; ``seed`` seeds Rand; ``input_shape`` (one input,
    no batch dimension) is SynFlow's. On a CPU the thread count makes way for other processes
    (:mod:`sparse_survey.threads`), batch by batch.
    """
    chosen = _method(method)
    _check_bn_mode(chosen, bn_mode)
    batches = _materialize(chosen, batches)
    device = next(model.parameters()).device
    with scoring_mode(model, bn_mode), ieee_fp32(device), threads.sharing_cpus(device):
        threads.adapt()
        return chosen.scores(model, batches, seed=seed, input_shape=input_shape)


def prune(model: nn.Module, method: str, compression: float, batches: Batches | None = None,
          *, scope: str = "global", iterations: int | None = None, invert: bool = False,
          seed: int | None = None, input_shape: tuple[int, ...] | None = None,
          bn_mode: str = "eval", rounding: str = "nearest") -> dict[str, torch.Tensor]:
    """Prune ``model`` to density ``10**-compression`` and return its masks (also attached).

    ``iterations`` rounds (default: the method's, 100 for SynFlow, 1 otherwise) follow the
    exponential schedule; scores are recomputed on the masked model each round, and only
    surviving weights compete. ``invert=True`` keeps the lowest scores instead (the inversion
    control). ``rounding`` makes each round's kept count whole (:data:`ROUNDINGS`). Masks the
    model already carries are respected: pruning never revives a weight. A pruning that leaves a
    layer with no weight at all (layer collapse) warns.
    """
    chosen = _method(method)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {', '.join(SCOPES)}")
    _check_rounding(rounding)
    iterations = chosen.iterations if iterations is None else iterations
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    _check_bn_mode(chosen, bn_mode)
    density = density_of(compression)
    sizes = {n: w.numel() for n, w in masking.prunable(model).items()}
    check_survivors(density, sizes, scope)
    batches = _materialize(chosen, batches)
    current = masking.get(model)
    for r in range(1, iterations + 1):
        target = density ** (r / iterations)
        round_seed = None if seed is None else seed + r
        scores = score(model, method, batches, round_seed, input_shape, bn_mode)
        current = select(scores, current, target, scope, invert, rounding)
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
           scope: str = "global", invert: bool = False,
           rounding: str = "nearest") -> dict[str, torch.Tensor]:
    """New masks keeping the highest-scoring ``density`` of the weights, among those alive.

    ``global``: exactly ``round(density * N)`` over all weights together; ``local``: exactly
    ``round(density * n)`` in each tensor; ``rounding="up"``: see :func:`kept_count`. Never more
    than are alive.
    """
    _check_rounding(rounding)
    for name, s in scores.items():
        if not torch.isfinite(s).all():
            raise FloatingPointError(f"scores of {name} are not all finite")
    if scope == "local":
        return {n: _keep_top(s, alive[n], kept_count(density, s.numel(), rounding), invert)
                for n, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    flat_alive = torch.cat([alive[n].flatten() for n in names])
    kept = _keep_top(flat, flat_alive, kept_count(density, flat.numel(), rounding), invert)
    parts = kept.split([scores[n].numel() for n in names])
    return {n: part.view_as(scores[n]) for n, part in zip(names, parts)}


def kept_count(density: float, n: int, rounding: str = "nearest") -> int:
    """How many of ``n`` weights a pruning to ``density`` keeps: ``round(density * n)``, or for
    ``rounding="up"`` ``n - floor((1 - density) * n)``, one more at most, which is what
    Synaptic-Flow's code keeps: it prunes the ``int((1 - density) * n)`` lowest scores."""
    if rounding == "up":
        return n - math.floor((1.0 - density) * n)
    return round(density * n)


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


def invert_within_layers(scores: Scores, counts: dict[str, int]) -> dict[str, torch.Tensor]:
    """The per-layer inversion control: masks keeping the ``counts[name]`` lowest-scored weights
    of each layer (ties to the lower index). With a method's own per-layer counts, this asks
    whether the method ranks weights well within a layer; the global inversion
    (``prune(..., invert=True)``) also moves weights between layers and can empty a layer."""
    return {n: _keep_top(s, torch.ones_like(s, dtype=torch.bool), counts[n], invert=True)
            for n, s in scores.items()}


def layerwise_shuffle(masks: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The shuffle control: each layer keeps as many weights, at new random positions."""
    g = torch.Generator().manual_seed(seed)
    return {n: m.flatten()[torch.randperm(m.numel(), generator=g).to(m.device)].view_as(m)
            for n, m in masks.items()}


# ------------------------------------------------------------------------ gradients and flow

def _batch_gradient(model: nn.Module, weights: dict[str, nn.Parameter], x: torch.Tensor,
                    y: torch.Tensor, temperature: float, create_graph: bool = False):
    """Gradients of one batch's mean cross-entropy (logits divided by ``temperature``)."""
    device = weights[next(iter(weights))].device
    threads.adapt()
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


def absolute_copy(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """SynFlow's network: an eval-mode copy of ``model`` in ``dtype`` whose every parameter and
    floating-point buffer (BatchNorm statistics included) is replaced by its absolute value."""
    net = copy.deepcopy(model).to(dtype).eval()
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.abs_()
    return net


def _synflow_in(model: nn.Module, input_shape, dtype) -> dict[str, torch.Tensor]:
    net = absolute_copy(model, dtype)
    weights = masking.prunable(net)
    device = next(net.parameters()).device
    r = net(torch.ones(1, *input_shape, dtype=dtype, device=device)).sum()
    grads = torch.autograd.grad(r, list(weights.values()))
    return {n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), grads)}


# ------------------------------------------------------------------------------ checks and helpers

def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; known: {', '.join(ROUNDINGS)}")


def _check_bn_mode(chosen: Method, bn_mode: str) -> None:
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown BatchNorm mode {bn_mode!r}; known: {', '.join(BN_MODES)}")
    if bn_mode != "eval" and not chosen.needs_data:
        raise ValueError(f"bn_mode applies to the methods that score on data "
                         f"({', '.join(m for m in METHODS if METHODS[m].needs_data)}), not to "
                         f"{chosen.name}")


def _materialize(chosen: Method, batches: Batches | None) -> list | None:
    """Batches as a list (they are used once per round); an error if a method needs data."""
    if batches is None:
        if chosen.needs_data:
            raise ValueError(f"{chosen.name} scores weights by the loss on data: pass "
                             "batches=... (an iterable of (inputs, targets) pairs)")
        return None
    batches = batches if isinstance(batches, list) else list(batches)
    if not batches and chosen.needs_data:
        raise ValueError(f"{chosen.name} was given an empty iterable of batches")
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
def scoring_mode(model: nn.Module, bn_mode: str = "eval"):
    """The model in eval mode for a block, with its BatchNorm layers in ``bn_mode``; afterwards
    every module's mode and every BatchNorm running statistic are as they were (train mode
    updates them)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             ] if bn_mode == "train" else []  # in eval mode nothing updates the statistics
    statistics = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    for m in norms:
        m.train()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, saved in zip(norms, statistics):
            with torch.no_grad():
                for k, v in m.state_dict().items():
                    v.copy_(saved[k])
