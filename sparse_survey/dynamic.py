"""Dynamic sparse training: SET and RigL, a sparse network whose connections move as it trains,
and the static sparse network they are measured against.

Pruning at initialization fixes a mask before one training; IMP finds one over several. Dynamic
sparse training starts sparse and keeps the density fixed, but every ``update_every`` steps it
drops the smallest-magnitude fraction of each layer's live weights and grows as many new ones:
at random (SET, Mocanu et al. 2018) or where the dense gradient is largest (RigL, Evci et al.
2020). The fraction moved is annealed by a cosine from ``fraction`` to zero at ``end`` of the
training (RigL's schedule); after that the mask stays fixed. ``static`` keeps its starting mask
for the whole training: what SET and RigL gain over it is what moving connections buys, at the
same per-layer densities.

The update follows Google's RigL code (``rigl/sparse_optimizers_base.py``, ``_get_update_op``):
the count dropped is the live count times the fraction, truncated; a dropped position may be grown
again, and then keeps its weight and momentum; only a connection that was inactive before the
update starts at zero, with its momentum cleared. So a dense layer is never changed by an update,
and every layer keeps exactly its number of weights. Ties go to the lower index where RigL's code
adds a little noise to the magnitudes.

The initial mask is random with exact per-layer counts (:func:`kept_counts`), per-layer densities
either uniform or Erdős–Rényi-kernel (:func:`erk_densities`, RigL's default: larger layers
sparser), the first prunable layer dense (RigL's convention for CIFAR-10; its code counts that
layer outside the budget, this package inside it, so a network keeps exactly ``round(d * N)``
weights as every method here does). :class:`DynamicSparsity` is the step hook that
:func:`sparse_survey.train.fit` calls after every optimizer step; it needs no second training
loop.

:data:`REVISION` numbers the algorithm; it is part of a SET or RigL run's key, so that records of
an earlier revision are never read as this one. Revision 1 zeroed and cleared the momentum of
every dropped or grown weight (a dropped weight grown again restarted from zero, and a dense layer
lost its smallest weights at every update), rounded the count moved, and made the first layer
sparse like the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from . import masks

DISTRIBUTIONS = ("uniform", "erk")


@dataclass(frozen=True)
class Method:
    """A sparse-from-scratch method: its label and how it grows connections (None: it keeps
    its starting mask)."""

    label: str
    growth: str | None  # "random", "gradient", or None


METHODS = {"set": Method("SET", "random"), "rigl": Method("RigL", "gradient"),
           "static": Method("Static", None)}
DISTRIBUTION = "erk"  # the initial per-layer densities of a stored run (RigL's default)
REVISION = 2  # of the algorithm (see the module docstring); part of a moving method's key


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float,
                  dense: tuple[str, ...] = ()) -> dict[str, float]:
    """Erdős–Rényi-kernel densities of layers of the given weight shapes, overall ``density``:
    each layer's density is ``eps * sum(shape) / prod(shape)`` with one ``eps`` for all, chosen
    so that the kept weights add up to ``density`` of all. The layers named in ``dense`` are
    kept whole within that budget, and so is a layer that would exceed 1, ``eps`` then solved
    again over the rest (RigL's procedure), so no density exceeds 1.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    if sum(sizes[n] for n in dense) > density * sum(sizes.values()):
        raise ValueError(f"density {density:.3g} cannot keep {', '.join(dense)} whole")
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    dense = set(dense)
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:
            return dict.fromkeys(shapes, 1.0)
        budget = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        eps = budget / sum(raw[n] * sizes[n] for n in sparse)
        widest = max(raw[n] for n in sparse)
        if eps * widest <= 1:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(n for n in sparse if raw[n] == widest)


def kept_counts(densities: dict[str, float], sizes: dict[str, int],
                density: float) -> dict[str, int]:
    """Whole numbers of weights per layer that follow ``densities`` and add up to exactly
    ``round(density * N)`` of all ``N`` weights (the package's convention for a compression):
    each layer's share rounded down, the remainder given one by one to the largest fractional
    parts (ties to the earlier layer), never more than a layer holds."""
    total = round(density * sum(sizes.values()))
    wanted = {n: min(densities[n], 1.0) * sizes[n] for n in sizes}
    counts = {n: math.floor(wanted[n]) for n in sizes}
    largest_parts = sorted(sizes, key=lambda n: counts[n] - wanted[n])  # stable: earlier first
    for n in largest_parts[:total - sum(counts.values())]:
        counts[n] += 1
    if sum(counts.values()) != total or any(counts[n] > sizes[n] for n in sizes):
        raise ValueError(f"{total} weights do not fit in layers of {sum(sizes.values())}")
    return counts


def initial_masks(model: nn.Module, density: float, distribution: str = "erk",
                  seed: int = 0, first_dense: bool = True) -> dict[str, torch.Tensor]:
    """Random masks over the model's prunable weights at overall ``density``, each layer
    keeping exactly its count (:func:`kept_counts`) at random positions drawn from ``seed``;
    with ``first_dense`` (RigL's convention) the first prunable layer keeps all its weights
    within the budget, where the budget allows."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; known: "
                         f"{', '.join(DISTRIBUTIONS)}")
    weights = masks.prunable(model)
    shapes = {n: tuple(w.shape) for n, w in weights.items()}
    first = next(iter(weights))
    dense = (first,) if first_dense and weights[first].numel() <= density * sum(
        w.numel() for w in weights.values()) else ()
    if distribution == "erk":
        densities = erk_densities(shapes, density, dense)
    else:
        rest = [n for n in weights if n not in dense]
        budget = density * sum(w.numel() for w in weights.values()) - sum(
            weights[n].numel() for n in dense)
        densities = {**dict.fromkeys(weights, 1.0), **dict.fromkeys(
            rest, budget / sum(weights[n].numel() for n in rest))}
    counts = kept_counts(densities, {n: w.numel() for n, w in weights.items()}, density)
    generator = torch.Generator().manual_seed(seed)
    chosen = {}
    for n, w in weights.items():
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.randperm(w.numel(), generator=generator)[:counts[n]]] = True
        chosen[n] = keep.view(w.shape).to(w.device)
    return chosen


def update_fraction(step: int, total_steps: int, fraction: float, end: float) -> float:
    """The fraction of live connections moved at ``step``: ``fraction / 2 * (1 + cos(pi * t /
    T_end))`` with ``T_end = end * total_steps``, and zero from ``T_end`` on (RigL's cosine)."""
    stop = end * total_steps
    if step >= stop:
        return 0.0
    return fraction / 2 * (1 + math.cos(math.pi * step / stop))


@torch.no_grad()
def move_connections(model: nn.Module, optimizer: torch.optim.Optimizer | None, fraction: float,
                     growth: str, generator: torch.Generator | None = None) -> int:
    """Drop ``int(fraction * alive)`` of each layer's live weights (the count truncated, as
    RigL's code does), those of smallest magnitude, and grow as many among the positions not
    kept, the ones just dropped included: at random (``growth="random"``, SET) or where the
    gradient in ``.grad`` is largest in magnitude (``"gradient"``, RigL; the dense gradient,
    since a pruned weight is a zero that still receives one). A grown position that was inactive
    before the update starts at zero with its momentum cleared; a dropped weight grown again
    keeps its value and momentum (RigL's code); so a dense layer is unchanged. Ties go to the
    lower flat index. Returns the connections that moved: grown where none was (as many as
    were dropped and not grown again)."""
    if growth not in ("random", "gradient"):
        raise ValueError(f"unknown growth {growth!r}; known: random, gradient")
    current, moved = masks.get(model), 0
    new = {}
    for name, weight in masks.prunable(model).items():
        alive = current[name].flatten()
        k = int(fraction * int(alive.sum()))
        if k == 0:
            new[name] = current[name]
            continue
        magnitude = torch.where(alive, weight.detach().abs().flatten(), torch.inf)
        kept = alive & ~_lowest(magnitude, k)
        if growth == "gradient":
            if weight.grad is None:
                raise RuntimeError(f"RigL grows by the gradient, but {name} has none: update "
                                   "after a backward pass")
            score = weight.grad.detach().abs().flatten().float()
        else:
            score = torch.rand(alive.numel(), generator=generator).to(alive.device)
        grown = _lowest(torch.where(kept, torch.inf, -score), k)
        new[name] = (kept | grown).view_as(current[name])
        activated = (grown & ~alive).view_as(weight)  # new connections: no value, no history
        weight[activated] = 0
        if optimizer is not None:
            buffer = optimizer.state.get(weight, {}).get("momentum_buffer")
            if buffer is not None:
                buffer[activated] = 0
        moved += int(activated.sum())
    masks.attach(model, new)
    return moved


def _lowest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest values (ties to the lower index; a stable sort)."""
    picked = torch.zeros_like(values, dtype=torch.bool)
    picked[torch.sort(values, stable=True).indices[:k]] = True
    return picked


UPDATES = 20  # the fewest connectivity updates of a training whose interval is not given


@dataclass
class DynamicSparsity:
    """The step hook of SET or RigL for :func:`sparse_survey.train.fit`: every ``update_every``
    steps, before ``end`` of ``total_steps``, move :func:`update_fraction` of each layer's
    connections (:func:`move_connections`). Keeps the count of updates and of connections
    moved.

    RigL's CIFAR-10 runs update every 100 steps over about 100,000; this book's trainings are 50
    to 200 times shorter and would update only a few times at that interval, so by default
    ``update_every`` gives every training at least :data:`UPDATES` updates (every 80 steps at the
    ``cpu-full`` preset, 23 at ``laptop``). ``fraction`` 0.3 and ``end`` 0.75 are RigL's."""

    method: str
    total_steps: int
    update_every: int | None = None
    fraction: float = 0.3
    end: float = 0.75
    seed: int = 0
    updates: int = 0
    moved: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if self.method not in METHODS or METHODS[self.method].growth is None:
            moving = ", ".join(n for n, m in METHODS.items() if m.growth)
            raise ValueError(f"{self.method!r} moves no connections; the methods that do: "
                             f"{moving}")
        if self.update_every is None:
            self.update_every = max(1, int(self.end * self.total_steps / UPDATES))
        if self.update_every < 1 or not 0 <= self.fraction <= 1 or not 0 <= self.end <= 1:
            raise ValueError("update_every must be >= 1, fraction and end in [0, 1]; got "
                             f"{self.update_every}, {self.fraction}, {self.end}")
        self.generator = torch.Generator().manual_seed(self.seed)

    def summary(self, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> dict:
        """What moved between the masks a training started and ended with: the updates and
        their interval, the moves in all and per kept connection, and the share of the final
        connections that were not in the starting mask."""
        kept = sum(int(m.sum()) for m in end.values())
        new = sum(int((end[n] & ~start[n].to(end[n].device)).sum()) for n in end)
        return {"updates": self.updates, "update_every": self.update_every, "moves": self.moved,
                "moves_per_connection": self.moved / kept, "new_fraction": new / kept}

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step % self.update_every:
            return
        fraction = update_fraction(step, self.total_steps, self.fraction, self.end)
        if fraction > 0:
            self.moved += move_connections(model, optimizer, fraction,
                                           METHODS[self.method].growth, self.generator)
            self.updates += 1
