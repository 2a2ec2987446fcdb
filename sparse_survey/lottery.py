"""Iterative magnitude pruning with rewinding (the Lottery Ticket procedure) and its controls.

:func:`imp` with ``k`` rounds to compression ``c`` (density ``d = 10**-c``): train the dense
network; then ``k`` times: prune by global magnitude to ``d**(r/k)`` of all prunable weights,
choosing only among the still-unpruned ones (so masks are nested), rewind the surviving weights
(and every other parameter and BatchNorm statistic) to their values at the rewind point, and train
again. The rewind point is initialization (``rewind="init"``, Frankle & Carbin 2019) or training
step ``j`` of the dense run (``rewind=j``, Frankle et al. 2020); ``rewind="none"`` keeps the
trained weights instead (pruning with fine-tuning, the variant of Han et al. 2015 and Renda et
al. 2020 that the Lottery Ticket papers compare against). Each retraining runs the full
recipe from the rewound weights.

The dense training depends only on the initial weights, the data, the recipe, the seed and the
rewind point, so it is cached on disk under that key and shared by every compression and round
count of a sweep. Round ``r`` depends, beyond that, only on the compressions the rounds so far
pruned to, so each round's result is cached under those: an interrupted run resumes from its last
finished round and ends bitwise where an uninterrupted one would (on the CPU, when both ran at the
same thread counts: see :mod:`sparse_survey.threads`), and configurations
whose first rounds prune to the same compressions share those rounds exactly (IMP (2 Iters) at
``c = 1`` is the first two rounds of IMP (4 Iters) at ``c = 2``).

Controls (Frankle et al. 2019, 2021), for any mask: :func:`reinitialize` (same mask, fresh random
weights) and :func:`shuffle_masks` (same per-layer counts, new positions, the original weights).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import masks, models, pruners
from .data import ImageSet, default_cache_dir
from .files import atomic_write, check_room
from .profile import remaining_flops_fraction
from .train import Recipe, device_of, fit, resolve_precision


@dataclass
class IMPResult:
    """The final (masked, trained) model and its masks, the state it was rewound to each round,
    one record per round (round 0 is the dense training; each says whether it came from the
    cache, ``"cached"``), and whether the dense training came from the cache."""

    model: nn.Module
    masks: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor]
    rounds: list[dict] = field(default_factory=list)
    dense_cached: bool = False

    @property
    def final(self) -> dict:
        return self.rounds[-1]


def imp(model: nn.Module, data: tuple[ImageSet, ImageSet], compression: float,
        iterations: int, recipe: Recipe, *, rewind: str | int = "init", seed: int = 0,
        device: str | torch.device | None = None, cache_dir: str | os.PathLike | None = None,
        progress: bool = True, eval_every: int = 1, compile: bool = False,
        precision: str = "auto") -> IMPResult:
    """Run IMP on ``model`` (freshly initialised; trained and pruned in place).

    ``iterations`` is the number of prune rounds (the survey's "IMP (k Iters)"). ``data`` is the
    ``(train, test)`` pair; ``seed`` fixes data order and augmentation (round ``r`` trains with
    ``seed + r``). Dense runs and checkpoints live in ``cache_dir/imp`` (default cache:
    ``$SPARSE_SURVEY_CACHE``, i.e. ``~/.cache/sparse_survey``). A diverged round raises
    ``FloatingPointError``. Each training evaluates on the test set every ``eval_every`` epochs
    and after its last (evaluation does not change the training). ``compile`` trains through
    ``torch.compile``; ``precision`` is the training's (see :mod:`sparse_survey.train`).
    """
    if iterations < 1:
        raise ValueError(f"iterations (prune rounds) must be at least 1, got {iterations}")
    if not (rewind in REWIND_POINTS or (isinstance(rewind, int) and rewind >= 0)):
        raise ValueError(f"rewind must be 'init', 'none' or a training step >= 0, got {rewind!r}")
    steps = recipe.epochs * (len(data[0]) // recipe.batch_size)
    if isinstance(rewind, int) and rewind > steps:
        raise ValueError(f"rewind step {rewind} is beyond the {steps} training steps")
    sizes = {n: w.numel() for n, w in masks.prunable(model).items()}
    pruners.check_survivors(pruners.density_of(compression), sizes, "global")
    device = device_of(device)
    precision = resolve_precision(precision, device)
    model.to(device)
    training = {"data": data, "recipe": recipe, "seed": seed, "device": device,
                "progress": progress, "eval_every": eval_every, "compile": compile,
                "precision": precision}
    dense_file, checkpoints = cache_files(model, data, compression, iterations, recipe,
                                          rewind=rewind, seed=seed, precision=precision,
                                          cache_dir=cache_dir)
    targets = round_targets(compression, iterations)
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    check_room(dense_file.parent, 2 * state_bytes * (iterations + 1),
               "the IMP cache (the dense training and a checkpoint per round)")

    state = None
    for checkpoint in reversed(checkpoints):  # resume after the last finished round
        state = _load(checkpoint, device, ("rounds", "rewind_state", "masks", "model"))
        if state is not None:
            break
    if state is not None:
        masks.attach(model, state["masks"])
        model.load_state_dict(state["model"])
        rounds, rewind_state, cached = state["rounds"], state["rewind_state"], True
    else:
        rewind_state, dense, cached = _dense_training(model, dense_rewind_point(rewind),
                                                      dense_file, training)
        rounds = [dense]
    reused = len(rounds)  # round 0 (the dense run) and the rounds that came from the cache
    bar = tqdm(total=iterations, initial=len(rounds) - 1, desc=f"IMP to c={compression:g}",
               unit="round", disable=not progress)
    for r in range(len(rounds), iterations + 1):
        current = pruners.prune(model, "mag", targets[r - 1])  # among the survivors
        if rewind != "none":  # else the survivors keep their trained values (fine-tuning)
            rewind_to(model, rewind_state, current)
        rounds.append(_train_round(r, model, **training))
        _save(checkpoints[r - 1], {"rounds": rounds, "rewind_state": rewind_state,
                                   "masks": masks.get(model), "model": model.state_dict()})
        bar.update()
    bar.close()
    rounds = [{**record, "cached": cached if r == 0 else r < reused}
              for r, record in enumerate(rounds)]
    return IMPResult(model, masks.get(model), rewind_state, rounds, cached)


def round_targets(compression: float, iterations: int) -> list[float]:
    """The compressions IMP's rounds prune to: equal steps of ``compression``."""
    return [compression * r / iterations for r in range(1, iterations + 1)]


def dense_rewind_point(rewind: str | int) -> str | int:
    """What the dense training must keep for ``rewind``: a training step's weights, or (for
    ``"init"`` and for fine-tuning, ``"none"``) the initial ones."""
    return rewind if isinstance(rewind, int) else "init"


def cache_files(model: nn.Module, data: tuple[ImageSet, ImageSet], compression: float,
                iterations: int, recipe: Recipe, *, rewind: str | int, seed: int,
                precision: str, cache_dir: str | os.PathLike | None) -> tuple[Path, list[Path]]:
    """Where the IMP cache keeps a run's dense training and each of its rounds, for the freshly
    initialised ``model`` and a resolved ``precision``: names that digest what the work depends
    on, so that a file exists only for work this run would repeat exactly."""
    cache = Path(cache_dir or default_cache_dir()) / "imp"
    key = run_key(model, *data, recipe, seed, dense_rewind_point(rewind), precision)
    fine_tuned = "-fine-tuned" if rewind == "none" else ""
    targets = round_targets(compression, iterations)
    return (cache / f"{key}-dense.pt",
            [cache / round_name(key + fine_tuned, targets[:r]) for r in range(1, iterations + 1)])


def trainings_left(files: tuple[Path, list[Path]]) -> int:
    """How many trainings an IMP run whose cache files are ``files`` (:func:`cache_files`) still
    has to do: :func:`imp` resumes after the last round the cache holds, and trains the dense
    network only when the cache holds neither a round nor the dense run."""
    dense, checkpoints = files
    done = max((r for r, path in enumerate(checkpoints, 1) if path.exists()), default=0)
    return len(checkpoints) - done if done else len(checkpoints) + (not dense.exists())


def round_name(dense_key: str, targets: list[float]) -> str:
    """The cache file of the round that pruned, round by round, to compressions ``targets``
    after the dense run ``dense_key``: a digest of the exact floats, so two configurations share
    a round only when every pruning before it was the same."""
    digest = hashlib.blake2b(json.dumps([repr(t) for t in targets]).encode(), digest_size=6)
    return f"{dense_key}-r{len(targets)}-c{targets[-1]:.4g}-{digest.hexdigest()}.pt"


REWIND_POINTS = ("init", "none")  # besides a training step


def rewind_to(model: nn.Module, state: dict[str, torch.Tensor],
              mask: dict[str, torch.Tensor]) -> nn.Module:
    """Load a dense ``state`` (weights and BatchNorm statistics) and attach ``mask``: the
    surviving weights take exactly their values in ``state``, the others are zero."""
    masks.attach(model, mask)  # the mask buffers must exist for the strict load below
    model.load_state_dict({**state, **{f"{n}_mask": m for n, m in mask.items()}})
    masks.apply(model)
    return model


def _dense_training(model: nn.Module, rewind: str | int, path: Path, training: dict):
    """Train the dense model (or load it from ``path``); return the rewind state, the round-0
    record and whether it came from the cache. ``training``: :func:`_train_round`'s options."""
    saved = _load(path, training["device"], ("model", "rewind_state", "record"))
    if saved is not None:
        model.load_state_dict(saved["model"])
        return saved["rewind_state"], saved["record"], True
    init = copy.deepcopy(model.state_dict())
    kept = {}

    def keep_rewind_point(step: int, m: nn.Module, _optimizer) -> None:
        if step == rewind:
            kept["state"] = copy.deepcopy(m.state_dict())

    record = _train_round(0, model, **training,
                          on_step=None if rewind in ("init", 0) else keep_rewind_point)
    rewind_state = kept.get("state", init)  # imp() checked that the rewind step is reached
    _save(path, {"model": model.state_dict(), "rewind_state": rewind_state, "record": record})
    return rewind_state, record, False


def _train_round(r: int, model: nn.Module, *, data: tuple[ImageSet, ImageSet], recipe: Recipe,
                 seed: int, device: torch.device, progress: bool, eval_every: int,
                 compile: bool, precision: str, on_step=None) -> dict:
    """Train round ``r`` (0: the dense network) with data seed ``seed + r``; its record."""
    train, test = data
    start = time.perf_counter()
    history = fit(model, train, recipe, test, device=device, seed=seed + r, progress=progress,
                  eval_every=eval_every, on_step=on_step, compile=compile, precision=precision,
                  desc=f"round {r}" if r else "dense")
    if history.diverged:
        raise FloatingPointError(f"IMP round {r} diverged: {history.error}")
    accuracies = [e["test_acc"] for e in history.epochs if "test_acc" in e]
    return {"round": r, "density": masks.density(model),
            "remaining_params": masks.remaining_fraction(model),
            "remaining_flops": remaining_flops_fraction(model, train.shape),
            "test_acc": history.final["test_acc"], "best_test_acc": max(accuracies),
            "steps": len(history.epochs) * (len(train) // recipe.batch_size),
            "seconds": time.perf_counter() - start, "history": history.epochs}


def _load(path: Path, device: torch.device, keys: tuple[str, ...]) -> dict | None:
    """A cached dense run or checkpoint, or None when there is none or it is damaged (then it is
    removed, with a warning naming it, and rebuilt by the caller)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device)
        missing = [k for k in keys if k not in state]
        if missing:
            raise KeyError(f"it lacks {', '.join(missing)}")
        return state
    except Exception as error:  # a truncated or foreign file: pickle, zip and key errors alike
        warnings.warn(f"the IMP cache file {path} is damaged ({error!r}); removing it and "
                      "computing it again", stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def _save(path: Path, state: dict) -> None:
    """Write atomically: a run killed mid-write leaves the previous checkpoint intact. A failed
    write (a full disk makes torch's writer raise a RuntimeError) is an ``OSError`` naming the
    file."""
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as error:
        raise OSError(f"could not write the IMP cache file {path} ({error}); free space in "
                      "its folder or choose another cache folder") from None


def run_key(model: nn.Module, train: ImageSet, test: ImageSet, recipe: Recipe, seed: int,
            rewind: str | int, precision: str) -> str:
    """A digest of what the dense training depends on: architecture, initial weights, data,
    recipe, seed, rewind point and precision."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([str(model), asdict(recipe), seed, str(rewind), precision]).encode())
    for tensor in [*model.state_dict().values(), train.images, train.labels, test.images,
                   test.labels]:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------- controls

def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """The random-reinitialization control: fresh weights from the model's initial distribution
    (and fresh BatchNorm statistics), the same masks."""
    current = masks.get(model)
    devices = [p.device for p in model.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        models.initialize(model)
    masks.attach(model, current)
    return model


def shuffle_masks(model: nn.Module, state: dict[str, torch.Tensor], seed: int) -> nn.Module:
    """The layerwise-shuffle control: the model's masks shuffled within each layer (same counts,
    new positions), applied to the dense weights in ``state`` (e.g. the rewind state)."""
    return rewind_to(model, state, pruners.layerwise_shuffle(masks.get(model), seed))


CONTROLS = {"reinit": "random reinit", "shuffle": "layerwise shuffle"}


def control_ticket(result: IMPResult, kind: str, seed: int = 0) -> nn.Module:
    """A copy of the IMP result's final ticket turned into a control: ``"reinit"`` (its masks,
    fresh weights) or ``"shuffle"`` (its masks shuffled within each layer, the rewind weights).
    The control's own randomness is seeded with ``seed + 10_000``, apart from the ticket's."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; known: {', '.join(CONTROLS)}")
    model = rewind_to(copy.deepcopy(result.model), result.rewind_state, result.masks)
    if kind == "reinit":
        return reinitialize(model, seed + 10_000)
    return shuffle_masks(model, result.rewind_state, seed + 10_000)


def controls(result: IMPResult, data: tuple[ImageSet, ImageSet], recipe: Recipe, *,
             seed: int = 0, device: str | torch.device | None = None, progress: bool = True,
             eval_every: int = 1, compile: bool = False,
             precision: str = "auto") -> dict[str, float]:
    """Final test accuracy of the winning ticket beside its random-reinit and layerwise-shuffle
    controls, each trained like the last IMP round (same recipe and data seed)."""
    train, test = data
    out = {"winning ticket": result.final["test_acc"]}
    for kind, name in CONTROLS.items():
        history = fit(control_ticket(result, kind, seed), train, recipe, test, device=device,
                      seed=seed + result.final["round"], progress=progress,
                      eval_every=eval_every, compile=compile, desc=name,
                      precision=precision)
        out[name] = float("nan") if history.diverged else history.final["test_acc"]
    return out
