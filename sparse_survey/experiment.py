"""A run's configuration, the presets it draws its budget from, and one run to a record.

A :class:`RunConfig` names everything that decides a result: the method and compression, the
budget (model, data, training recipe), the method's hidden choices (rounds, scope, scoring data
and BatchNorm mode, IMP's rewind point) and the seed. Its budget comes from a named preset
(:data:`PRESETS`, the one place where budgets are written down) unless a field is given
explicitly. :func:`run` prunes (or runs IMP), trains, evaluates and profiles one config and
returns one JSON-ready record, failed or diverged runs included; records are kept by
:mod:`sparse_survey.store` and grids of them run by :mod:`sparse_survey.sweep`.

A process pays once for what its runs share: the data set is loaded once, and with ``compile``
(the default on CUDA) each architecture is compiled once (see :mod:`sparse_survey.train`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import traceback
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__, dynamic, lottery, masks, models, pruners
from . import data as datasets
from .data import ImageSet, Loader
from .profile import device_name, profile, timed
from .train import Recipe, bf16_supported, dead_channels, device_of, fit, resolve_precision

SCHEMA = 4  # 2: one field, ``iterations``, for IMP's and a one-shot method's rounds; 3: precision;
# 4: the recipe's label_smoothing
METHODS = (*pruners.METHODS, *dynamic.METHODS, "imp", "dense")
# The sanity checks a run can be turned into, by name: IMP takes the Lottery Ticket controls of
# lottery.CONTROLS, a one-shot method these (see one_shot_control); they name the run's label.
CONTROLS = {**lottery.CONTROLS, "invert": "inverted scores",
            "invert_layer": "inverted scores per layer"}
EXECUTION = ("device", "compile")  # RunConfig fields that say how a run runs, not what it is
# RunConfig fields added after schema 4, each with the value that every record stored before it
# means: a config stores one, and so keys it, only where it differs, so those records keep their
# keys and files with no migration.
LATER_FIELDS = {"rounding": "nearest", "revision": 1}
# The revision of each method's algorithm that this package runs (see RunConfig.revision); a
# method not named here is at revision 1.
REVISIONS = {"set": dynamic.REVISION, "rigl": dynamic.REVISION}


@dataclass(frozen=True)
class Preset:
    """A named budget: the model, the data, the training recipe, how often the test set is
    evaluated during training, how many timed inference passes a profile takes, the
    precision its runs take unless told (see :data:`sparse_survey.train.PRECISIONS`), and
    whether a run's profile measures CPU memory (in a fresh process, see
    :func:`sparse_survey.profile.cpu_memory`). Not being a budget field, ``cpu_memory`` is in no
    run's key: it decides only whether the record holds the ``cpu_*_bytes`` metrics."""

    model: str
    width: float
    dataset: str
    limit_per_class: int | None
    recipe: Recipe
    profile_repeats: int = 5
    eval_every: int = 1
    precision: str = "auto"
    cpu_memory: bool = True


PRESETS = {
    # tests and CI: seconds on a CPU. No CPU-memory probe: its fresh process (Python and torch
    # starting) took 1.4 s of a 1.5 s run on a 2-core Intel Xeon, and what it measured of the
    # MLP was torch's own 606 MiB plus 1-4 MiB of inference, the same for every method
    "smoke": Preset("mlp", 1.0, "digits", 30,
                    Recipe(epochs=10, batch_size=32, lr=0.05, weight_decay=5e-4,
                           schedule="onecycle"), profile_repeats=2, cpu_memory=False),
    # the whole survey grid in about an hour and a half on a 2-core CPU; the test set is
    # evaluated once, after the last epoch, and kept whole (methods differ by a few points).
    # float32: its stored records (the book's laptop tables) were made so; rerun them before
    # letting it take the bf16 fast path
    "laptop": Preset("vgg16", 0.25, "cifar10", 1000,
                     Recipe(epochs=8, batch_size=128, lr=0.1, weight_decay=5e-4,
                            schedule="onecycle"), profile_repeats=2, eval_every=8,
                     precision="fp32"),
    # the survey's data on a 2-core CPU: the laptop network on all 50,000 training images and
    # the whole test set, on the CPU fast path; one training about 6.5 minutes, the grid a night.
    # Sized on this project's 2-core AMD EPYC (bf16, channels_last, seed 0, test set evaluated
    # every epoch; the preset evaluates after the last only, about 30 s less):
    #   10 epochs, batch 128, lr 0.1                       82.35 %  367-390 s
    #   10 epochs, batch 128, lr 0.1, label smoothing 0.1  82.35 %  381 s
    #   11 epochs, batch 256, lr 0.2, label smoothing 0.1  83.08 %  390 s   <- this preset
    #   15 epochs, batch 128, lr 0.1, label smoothing 0.1  83.9 %   about 570 s
    "cpu-full": Preset("vgg16", 0.25, "cifar10", None,
                       Recipe(epochs=11, batch_size=256, lr=0.2, weight_decay=5e-4,
                              schedule="onecycle", label_smoothing=0.1),
                       profile_repeats=3, eval_every=11),
    # full VGG16 on all of CIFAR-10, sized for one GPU
    "survey": Preset("vgg16", 1.0, "cifar10", None,
                     Recipe(epochs=40, batch_size=256, lr=0.1, weight_decay=5e-4,
                            schedule="onecycle")),
    # the published protocol: Recipe's defaults
    "paper": Preset("vgg16", 1.0, "cifar10", None, Recipe()),
}
BUDGET = ("model", "width", "dataset", "limit_per_class", "recipe", "profile_repeats",
          "eval_every")  # the RunConfig fields a preset gives


def resolve_preset(preset: str) -> str:
    """A preset's name, checked; ``"auto"`` means ``survey`` on a GPU and ``laptop`` on a CPU."""
    if preset == "auto":
        return "survey" if torch.cuda.is_available() else "laptop"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
    return preset


def preset_precision(preset: str, device: str | torch.device | None = None,
                     asked: str = "auto") -> str:
    """The precision, ``"fp32"`` or ``"bf16"``, that a preset's runs take on ``device``
    (default: CUDA when there is a GPU, else the CPU): ``asked`` when it names one, else the
    preset's own, its ``"auto"`` resolved for the device (so a preset such as ``cpu-full``
    trains in bf16 on one machine and in fp32 on another); ``"auto"`` for a config's own
    budget. Raises ``ValueError`` for a precision that is none of auto, fp32, bf16."""
    if asked != "auto":
        return resolve_precision(asked, device)
    return resolve_precision(PRESETS[preset].precision if preset in PRESETS else "auto", device)


class _FromPreset:
    """The default of a budget field: the preset's value, filled in when the config is made."""

    def __repr__(self) -> str:
        return "<the preset's>"


FROM_PRESET = _FromPreset()


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one run's result.

    The budget fields (:data:`BUDGET`) take the named preset's values unless given; a config can
    differ from its preset only where it says so. ``iterations`` is the number of pruning
    rounds: IMP's prune-train rounds (the survey's "IMP (k Iters)"; default 1), or a one-shot
    method's scoring rounds (None: the method's default, 100 for SynFlow). ``bn_mode`` is
    BatchNorm's mode while SNIP or GraSP score; ``rewind`` IMP's rewind point (``"init"``, a
    training step, or ``"none"``: fine-tune the trained survivors). ``control`` turns a run into
    a sanity check of its mask (:data:`CONTROLS`): for IMP, a Lottery Ticket control of its final
    ticket (``"reinit"`` or ``"shuffle"``, see :mod:`sparse_survey.lottery`); for a one-shot
    method, those two or ``"invert"`` (see :func:`one_shot_control`). ``rounding``: how a one-shot
    method makes each round's kept count whole (:data:`sparse_survey.pruners.ROUNDINGS`: to the
    nearest, or up as Synaptic-Flow's code does). ``revision`` (default: the one this package
    runs, :data:`REVISIONS`) numbers the method's algorithm, so that a run of an earlier revision,
    read from a stored record, is never taken for this one; only the current revision runs.
    ``eval_every``: test-set
    evaluations during training (every that many epochs, and after the last). ``device`` says
    where to run and ``compile`` whether to train through ``torch.compile`` (None: on CUDA only,
    where it pays); neither is part of the run's identity. ``precision`` (default: the
    preset's) is: ``"auto"`` is resolved when the config is made, to ``"bf16"`` where its device
    does bf16 arithmetic and ``"fp32"`` elsewhere, so a bf16 run and an fp32 run never share a
    key."""

    method: str
    compression: float
    preset: str = "smoke"
    model: str = FROM_PRESET
    width: float = FROM_PRESET
    dataset: str = FROM_PRESET
    limit_per_class: int | None = FROM_PRESET
    recipe: Recipe = FROM_PRESET
    profile_repeats: int = FROM_PRESET
    eval_every: int = FROM_PRESET
    iterations: int | None = None
    scope: str = "global"
    seed: int = 0
    prune_batches: int = 1
    prune_batch_size: int = 256
    bn_mode: str = "eval"
    rewind: str | int = "init"
    control: str | None = None
    rounding: str = "nearest"
    revision: int | None = None
    precision: str = FROM_PRESET
    device: str | None = None
    compile: bool | None = None

    def __post_init__(self):
        unset = [name for name in BUDGET if getattr(self, name) is FROM_PRESET]
        if unset and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)}); a "
                             f"config of another name gives its whole budget ({', '.join(unset)}"
                             " missing)")
        for name in unset:
            object.__setattr__(self, name, getattr(PRESETS[self.preset], name))
        object.__setattr__(self, "precision",
                           preset_precision(self.preset, self.torch_device)
                           if self.precision is FROM_PRESET
                           else resolve_precision(self.precision, self.torch_device))
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        self._check_kinds()
        if self.method == "imp" and self.iterations is None:
            object.__setattr__(self, "iterations", 1)
        if (self.method in pruners.METHODS
                and self.iterations == pruners.METHODS[self.method].iterations):
            object.__setattr__(self, "iterations", None)  # the default, however it was given
        self._drop_unused()
        current = REVISIONS.get(self.method, 1)
        if self.revision is None:
            object.__setattr__(self, "revision", current)
        if not (isinstance(self.revision, int) and not isinstance(self.revision, bool)
                and 1 <= self.revision <= current):
            raise ValueError(f"revision {self.revision!r}: {self.method} is at revision "
                             f"{current} (earlier ones are only read from stored records)")
        pruners.density_of(self.compression)  # raises for a negative or NaN compression
        if self.iterations is not None and not (
                isinstance(self.iterations, int) and not isinstance(self.iterations, bool)
                and self.iterations >= 1):
            raise ValueError(f"iterations must be a whole number >= 1, got {self.iterations!r}")
        if self.scope not in pruners.SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; known: {', '.join(pruners.SCOPES)}")
        if self.method in dynamic.METHODS and (self.iterations, self.scope) != (None, "global"):
            raise ValueError(f"{self.method} takes neither rounds nor a scope: its per-layer "
                             f"densities are {dynamic.DISTRIBUTION.upper()}'s")
        if self.method in ("dense", "imp") and self.scope != "global":
            raise ValueError(f"scope {self.scope!r}: {self.method} prunes "
                             f"{'nothing' if self.method == 'dense' else 'by global magnitude'}"
                             "; a scope applies to the one-shot methods")
        if self.method == "dense" and self.iterations is not None:
            raise ValueError(f"iterations {self.iterations!r}: the dense network is not pruned")
        needs_data = self.method in pruners.METHODS and pruners.METHODS[self.method].needs_data
        if self.bn_mode not in pruners.BN_MODES:
            raise ValueError(f"unknown bn_mode {self.bn_mode!r}; known: "
                             f"{', '.join(pruners.BN_MODES)}")
        if self.bn_mode != "eval" and not needs_data:
            raise ValueError(f"bn_mode {self.bn_mode!r}: 'train' applies to the methods that "
                             "score on data (snip, grasp) only")
        if self.rewind != "init" and not (self.method == "imp" and (
                self.rewind in lottery.REWIND_POINTS
                or (isinstance(self.rewind, int) and self.rewind >= 0))):
            raise ValueError(f"rewind {self.rewind!r}: IMP rewinds to 'init', a training step "
                             ">= 0, or not at all ('none')")
        if self.control is not None:
            allowed = (lottery.CONTROLS if self.method == "imp" else
                       CONTROLS if self.method in pruners.METHODS else {})
            if self.control not in allowed:
                raise ValueError(f"control {self.control!r}: IMP takes one of "
                                 f"{', '.join(lottery.CONTROLS)}, a one-shot method one of "
                                 f"{', '.join(CONTROLS)}, the dense network none")
        if self.rounding != "nearest" and not (self.method in pruners.METHODS
                                               and self.rounding in pruners.ROUNDINGS):
            raise ValueError(f"rounding {self.rounding!r}: a one-shot method rounds its kept "
                             f"counts {' or '.join(pruners.ROUNDINGS)}; other methods to the "
                             "nearest only")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        if self.method != "dense":  # a compression that would leave a layer empty, refused now
            check_compression(self.compression, self.model, self.width, self.dataset, self.scope)
        if self.device is not None:
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"not a torch device: {self.device!r}") from error

    def _check_kinds(self) -> None:
        """Refuse a field of the wrong kind before anything reads it: a seed that is not a
        whole number in [0, 2**32) (what torch's and the data order's generators take), a count
        that is not a whole number >= 1, a compression or width that is not a number."""
        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not (whole(self.seed) and 0 <= self.seed < 2**32):
            raise ValueError(f"seed must be a whole number from 0 to {2**32 - 1}, got "
                             f"{self.seed!r}")
        for name in ("prune_batches", "prune_batch_size", "profile_repeats", "eval_every"):
            value = getattr(self, name)
            if not (whole(value) and value >= 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not (self.limit_per_class is None
                or (whole(self.limit_per_class) and self.limit_per_class >= 1)):
            raise ValueError(f"limit_per_class must be a whole number >= 1 or None (all), got "
                             f"{self.limit_per_class!r}")
        for name in ("compression", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not isinstance(self.recipe, Recipe):
            raise ValueError(f"recipe must be a Recipe, got {self.recipe!r}")

    def _drop_unused(self) -> None:
        """Set a field the method does not use to its default, so that it never gives one
        computation a second key: the scoring batches of a method that scores without data (a
        grid may give them to every one-shot method), and IMP's rewind to step 0, which is
        rewinding to initialization."""
        scores_on_data = (self.method in pruners.METHODS
                          and pruners.METHODS[self.method].needs_data)
        if not scores_on_data:
            object.__setattr__(self, "prune_batches", 1)
            object.__setattr__(self, "prune_batch_size", 256)
        if self.method == "imp" and self.rewind == 0 and not isinstance(self.rewind, bool):
            object.__setattr__(self, "rewind", "init")

    @classmethod
    def from_preset(cls, preset: str, method: str, compression: float, **fields) -> RunConfig:
        """A config of ``method`` at ``compression`` on ``preset``'s budget; ``fields`` set any
        other field, a budget field included (e.g. ``dataset``)."""
        return cls(method=method, compression=compression, preset=preset, **fields)

    @property
    def key(self) -> str:
        """The hash that names the run's file: of the config's canonical JSON (see
        :func:`canonical`), where and how it ran excluded."""
        identity = {k: v for k, v in config_dict(self).items() if k not in EXECUTION}
        text = json.dumps(canonical(identity), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def torch_device(self) -> torch.device:
        """Where the run runs: ``device``, else CUDA when there is a GPU, else the CPU."""
        return device_of(self.device)

    @property
    def variant(self) -> list[str]:
        """How the run departs from its method's convention and its preset's budget, in words
        (empty for the survey's own settings): other rounds, scope, scoring batches or BatchNorm
        mode, IMP's rewind, and any model, data or recipe value that is not the preset's."""
        parts = []
        if self.preset in PRESETS:
            preset = PRESETS[self.preset]
            for name in ("model", "width", "dataset", "limit_per_class"):
                if getattr(self, name) != getattr(preset, name):
                    parts.append(f"{name} {_words(getattr(self, name))}")
            for f in fields(Recipe):
                if getattr(self.recipe, f.name) != getattr(preset.recipe, f.name):
                    parts.append(f"{f.name} {_words(getattr(self.recipe, f.name))}")
        if self.method in pruners.METHODS:
            method = pruners.METHODS[self.method]
            if self.iterations not in (None, method.iterations):
                parts.append(f"{self.iterations} round{'s' * (self.iterations != 1)}")
            if self.scope != "global":
                parts.append(f"{self.scope} scope")
            if method.needs_data and (self.prune_batches, self.prune_batch_size) != (1, 256):
                parts.append(f"{self.prune_batches} x {self.prune_batch_size} scoring images")
            if self.bn_mode != "eval":
                parts.append(f"{self.bn_mode}-mode BN")
            if self.rounding != "nearest":
                parts.append(f"kept counts rounded {self.rounding}")
        if self.method == "imp" and self.rewind != "init":
            parts.append("no rewind, fine-tuned" if self.rewind == "none"
                         else f"rewind to step {self.rewind}")
        if self.revision != REVISIONS.get(self.method, 1):
            parts.append(f"revision {self.revision}")
        pinned = PRESETS[self.preset].precision if self.preset in PRESETS else "auto"
        if pinned != "auto" and self.precision != pinned:  # "auto" ones vary by machine
            parts.append(self.precision)
        return parts

    @property
    def label(self) -> str:
        """The survey's column name (Rand, Mag, SNIP, GraSP, SynFlow, IMP (k Iters), Dense),
        with the variant in brackets, e.g. "GraSP (train-mode BN)" or "IMP (2 Iters, rewind to
        step 6)", and a control's name, e.g. "IMP (2 Iters), random reinit"; one round is
        "IMP (1 Iter)"."""
        if self.method == "imp":
            rounds = f"{self.iterations} Iter{'s' * (self.iterations != 1)}"
            label = f"IMP ({', '.join([rounds, *self.variant])})"
        elif self.method in dynamic.METHODS:  # with its initial distribution, e.g. RigL (ERK)
            label = (f"{dynamic.METHODS[self.method].label} "
                     f"({', '.join([dynamic.DISTRIBUTION.upper(), *self.variant])})")
        else:
            label = "Dense" if self.method == "dense" else pruners.METHODS[self.method].label
            if self.variant:
                label += f" ({', '.join(self.variant)})"
        return f"{label}, {CONTROLS[self.control]}" if self.control else label


def check_compression(compression: float, model: str, width: float, dataset: str,
                      scope: str = "global") -> None:
    """Refuse, before any work, a compression at which a model would keep fewer than one weight
    per prunable layer (see :func:`sparse_survey.pruners.check_survivors`)."""
    density = pruners.density_of(compression)  # a negative compression is not "too high"
    sizes = prunable_sizes(model, width, dataset)  # a model that cannot be built says why
    try:
        pruners.check_survivors(density, sizes, scope)
    except ValueError as error:
        raise ValueError(f"compression {compression:g} is too high for {model} at width "
                         f"{width:g}: {error}") from None


@functools.lru_cache(maxsize=16)
def prunable_sizes(model: str, width: float, dataset: str) -> dict[str, int]:
    """The prunable weights' sizes of a model for a data set's images, built without memory (on
    the meta device): what a config's compression is checked against before any work."""
    channels, size, _ = datasets.SHAPES[dataset]
    with torch.device("meta"):
        built = models.build(model, datasets.NUM_CLASSES[dataset], channels, width,
                             image_size=size)
    return {name: w.numel() for name, w in masks.prunable(built).items()}


def _words(value) -> str:
    """A config value as it reads in a label."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "/".join(_words(v) for v in value)
    return str(value)


def canonical(value):
    """``value`` with every float that is a whole number written as an int, in nested dicts and
    lists too, as canonical JSON writes numbers (RFC 8785): so compression ``1`` and ``1.0``, or
    width ``1`` and ``1.0``, name the same run."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def config_dict(config: RunConfig) -> dict:
    """The config as stored in a record: plain JSON values (the recipe a dict, tuples lists),
    without a field of :data:`LATER_FIELDS` that has the value records before it mean."""
    stored = {k: v for k, v in asdict(config).items()
              if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    return json.loads(json.dumps(stored))


def upgrade(config: dict, device: str | None = None) -> dict:
    """A stored config (a record's ``"config"``) in the current layout; ``device`` is where the
    record says it ran. Before schema 2, IMP's rounds were ``iters`` and a one-shot method's
    scoring rounds ``rounds``; both are ``iterations`` now. Before schema 3 the precision was
    not stored: runs trained in bf16 on CUDA and in float32 elsewhere. Before schema 4 the recipe
    had no label smoothing (0). A record without a ``revision`` ran its method's first (see
    :data:`LATER_FIELDS`). Fields added since take their defaults when the config is made."""
    config = dict(config)
    if "iters" in config:
        iters, rounds = config.pop("iters"), config.pop("rounds", None)
        config["iterations"] = iters if config["method"] == "imp" else rounds
    if "precision" not in config:
        ran_on = device or config.get("device") or "cpu"
        config["precision"] = "bf16" if str(ran_on).startswith("cuda") else "fp32"
    if isinstance(config.get("recipe"), dict) and "label_smoothing" not in config["recipe"]:
        config["recipe"] = {**config["recipe"], "label_smoothing": 0.0}
    config.setdefault("revision", LATER_FIELDS["revision"])  # stored before revisions were
    return config


def config_from_dict(d: dict, device: str | None = None) -> RunConfig:
    """The :class:`RunConfig` of a stored record's ``"config"``, of any schema (to rerun or vary
    it); ``device``: where the record says it ran (see :func:`upgrade`)."""
    d = upgrade(d, device)
    known = {f.name for f in fields(RunConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    recipe = Recipe(**{**d["recipe"], "milestones": tuple(d["recipe"]["milestones"])})
    return RunConfig(**{**d, "recipe": recipe})


# ------------------------------------------------------------------------------------- one run

def run(config: RunConfig, cache_dir=None, progress: bool = False, data_root=None) -> dict:
    """Prune (or run IMP), train, evaluate and profile one config; return its record.

    ``data_root`` says where CIFAR-10 is (default: ``$SPARSE_SURVEY_DATA``, then a download).
    Never raises for a bad run: a diverged run (NaN or infinite loss) gets ``status="diverged"``,
    any other error ``status="failed"``, each with its message (``error``) and, when failed, its
    ``traceback``, so a sweep can go on. Warnings raised during the run (e.g. a pruning that
    empties a layer) are kept in ``warnings``. Each phase (prune, train, profile, and the total)
    records its wall and CPU time, waiting and load (see :func:`sparse_survey.profile.timed`)."""
    timings: dict = {}
    record = {"schema": SCHEMA, "key": config.key, "config": config_dict(config),
              "label": config.label, "status": "running", "error": None,
              "environment": environment(config.torch_device)}
    with timed(timings, "total"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record.update(_run(config, cache_dir, progress, data_root, timings))
        except FloatingPointError as error:
            record.update(status="diverged", error=str(error))
        except Exception as error:  # stored, not raised: one bad cell must not end a sweep
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          traceback="".join(traceback.format_exception(error))[-4000:])
    for warning in caught:  # kept in the record, and shown as usual
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    package = Path(__file__).parent  # the package's own warnings, not its libraries' notices
    record["warnings"] = sorted({str(w.message) for w in caught
                                 if Path(w.filename).is_relative_to(package)})
    record["timings"] = timings
    return record


_LOADED: dict[tuple, tuple[ImageSet, ImageSet]] = {}  # at most two data sets, the newest


def dataset(name: str, root: str | os.PathLike | None = None,
            limit_per_class: int | None = None,
            progress: bool = True) -> tuple[ImageSet, ImageSet]:
    """:func:`sparse_survey.data.load`, once per process and arguments: every run of a sweep
    shares the loaded data. ``root`` None: ``$SPARSE_SURVEY_DATA``, then a download;
    ``progress`` shows the bars of a first decode."""
    key = (name, str(root) if root else os.environ.get("SPARSE_SURVEY_DATA") or None,
           limit_per_class)
    if key not in _LOADED:
        if len(_LOADED) == 2:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = datasets.load(*key, progress=progress)
    return _LOADED[key]


def one_shot_control(model: torch.nn.Module, control: str | None, initial: dict,
                     seed: int) -> torch.nn.Module:
    """Turn a one-shot pruned ``model`` into a sanity check of its mask (Frankle et al. 2021),
    after pruning and before training: ``"shuffle"`` moves each layer's kept positions at random
    (the same count per layer) over the ``initial`` weights, ``"reinit"`` draws fresh weights
    under the same masks; either seeded with ``seed + 10_000``, apart from the run's own seed.
    ``"invert"`` acted at selection (:func:`pruners.prune` keeps the lowest scores),
    ``"invert_layer"`` after it (:func:`prune_at_init`), and None is no control: the model is
    left as it is."""
    if control == "shuffle":
        return lottery.shuffle_masks(model, initial, seed + 10_000)
    if control == "reinit":
        return lottery.reinitialize(model, seed + 10_000)
    return model


def fresh_model(name: str, width: float, shape: tuple[int, int, int], classes: int, seed: int,
                device=None) -> torch.nn.Module:
    """A freshly initialised model for images of ``shape`` (channels, height, width) in
    ``classes`` classes, its weights drawn from ``seed``, on ``device``."""
    torch.manual_seed(seed)
    return models.build(name, classes, shape[0], width, image_size=shape[1]).to(device_of(device))


def scoring_batches(train: ImageSet, count: int, batch_size: int, seed: int,
                    device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` shuffled, augmented training batches of ``seed`` (from as many epochs
    as that takes): the data SNIP and GraSP score on."""
    loader = Loader(train, batch_size, device_of(device), train=True, seed=seed)
    batches: list = []
    while len(batches) < count:  # each pass over the loader is a new epoch, newly shuffled
        batches += [batch for batch, _ in zip(loader, range(count - len(batches)))]
    return batches


def prune_at_init(model: torch.nn.Module, config: RunConfig, train: ImageSet) -> torch.nn.Module:
    """Prune a one-shot run's freshly initialised ``model`` (:func:`fresh_model` of the run's
    seed) as :func:`run` does before training: scored on the run's batches of ``train``, then
    its control applied. Also how a notebook rebuilds a stored run's starting mask."""
    batches = scoring_batches(train, config.prune_batches, config.prune_batch_size, config.seed,
                              config.torch_device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    chosen = pruners.prune(model, config.method, config.compression, batches,
                           scope=config.scope, iterations=config.iterations, seed=config.seed,
                           input_shape=train.shape, bn_mode=config.bn_mode,
                           invert=config.control == "invert", rounding=config.rounding)
    if config.control == "invert_layer":  # the method's own count per layer, lowest scores
        masks.remove(model)
        model.load_state_dict(initial)
        scores = pruners.score(model, config.method, batches, config.seed + 1, train.shape,
                               config.bn_mode)  # round 1's scores, of the unpruned network
        masks.attach(model, pruners.invert_within_layers(
            scores, {n: int(m.sum()) for n, m in chosen.items()}))
    return one_shot_control(model, config.control, initial, config.seed)


def _run(config: RunConfig, cache_dir, progress: bool, data_root, timings: dict) -> dict:
    if config.revision != REVISIONS.get(config.method, 1):
        raise ValueError(f"{config.label} is of an earlier revision of {config.method}'s "
                         "algorithm, which this package no longer runs; its stored records are "
                         "read as they are")
    device = config.torch_device
    compile = device.type == "cuda" if config.compile is None else config.compile
    train, test = dataset(config.dataset, data_root, config.limit_per_class, progress)
    model = fresh_model(config.model, config.width, train.shape, len(train.classes),
                        config.seed, device)
    training = {"device": device, "progress": progress, "eval_every": config.eval_every,
                "compile": compile, "precision": config.precision}
    connectivity = None  # what a dynamic sparse training moved
    if config.method == "imp":
        with timed(timings, "train"):
            result = lottery.imp(model, (train, test), config.compression, config.iterations,
                                 config.recipe, rewind=config.rewind, seed=config.seed,
                                 cache_dir=cache_dir, **training)
            history, rounds = result.final["history"], result.rounds
            if config.control:  # the same ticket's control, trained like its last round
                model = lottery.control_ticket(result, config.control, config.seed)
                fitted = fit(model, train, config.recipe, test,
                             seed=config.seed + result.final["round"], desc=config.label,
                             **training)
                if fitted.diverged:
                    raise FloatingPointError(fitted.error)
                history = fitted.epochs
    else:  # one training: dense, pruned at initialization, or sparse from scratch
        moving = None
        with timed(timings, "prune"):
            if config.method in dynamic.METHODS:  # a random sparse start, moved while training
                start = dynamic.initial_masks(model, pruners.density_of(config.compression),
                                              dynamic.DISTRIBUTION, config.seed)
                masks.attach(model, start)
                steps = config.recipe.epochs * (len(train) // config.recipe.batch_size)
                if dynamic.METHODS[config.method].growth is not None:  # static stays put
                    moving = dynamic.DynamicSparsity(config.method, steps, seed=config.seed)
            elif config.method != "dense":
                prune_at_init(model, config, train)
        with timed(timings, "train"):
            fitted = fit(model, train, config.recipe, test, seed=config.seed, on_step=moving,
                         desc=f"{config.label} c={config.compression:g} seed {config.seed}",
                         **training)
        if fitted.diverged:
            raise FloatingPointError(fitted.error)
        history, rounds = fitted.epochs, None
        if moving is not None:
            connectivity = moving.summary(start, masks.get(model))
    dead = dead_channels(model)
    if dead:
        warnings.warn(f"{sum(dead.values())} BatchNorm channels in {len(dead)} layers have a "
                      "running variance below eps (their filters lost every weight): eval mode "
                      "multiplies their drift by up to 1/sqrt(eps), so test accuracy can fall "
                      "far below training accuracy", stacklevel=2)
    with timed(timings, "profile"):
        measured = profile(model, test, device, repeats=config.profile_repeats,
                           memory=config.preset not in PRESETS or PRESETS[config.preset].cpu_memory,
                           progress=progress, precision=config.precision)
    accuracies = [e["test_acc"] for e in history if "test_acc" in e]
    return {"status": "finished",
            "metrics": {"test_acc": history[-1]["test_acc"], "best_test_acc": max(accuracies),
                        **measured},
            "layer_densities": masks.layer_densities(model),
            "weight_histograms": weight_histograms(model),
            "history": history, "imp_rounds": rounds, "data": train.name,
            **({"connectivity": connectivity} if connectivity else {})}


def trainings_left(config: RunConfig, cache_dir=None, data_root=None) -> int:
    """How many trainings :func:`run` of ``config`` still has to do: one; for IMP the rounds,
    and the dense training, that the IMP cache in ``cache_dir`` does not hold yet
    (:func:`lottery.trainings_left`), and one more for a control. What a sweep's time budget
    counts: an IMP run whose rounds another configuration trained costs only the rest."""
    if config.method != "imp":
        return 1
    train, test = dataset(config.dataset, data_root, config.limit_per_class, progress=False)
    model = fresh_model(config.model, config.width, train.shape, len(train.classes),
                        config.seed, "cpu")  # the same initial weights on any device
    files = lottery.cache_files(model, (train, test), config.compression, config.iterations,
                                config.recipe, rewind=config.rewind, seed=config.seed,
                                precision=config.precision, cache_dir=cache_dir)
    return lottery.trainings_left(files) + (config.control is not None)


def weight_histograms(model: torch.nn.Module, bins: int = 40) -> dict[str, dict]:
    """Per prunable layer, a histogram of the kept weights (for the weight-distribution figure)."""
    out = {}
    for name, w in masks.prunable(model).items():
        kept = w.detach()[masks.get(model)[name]].float().cpu().numpy()
        counts, edges = np.histogram(kept, bins=bins) if kept.size else (np.zeros(bins), [0, 0])
        out[name] = {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}
    return out


def environment(device: torch.device) -> dict:
    """Package versions, device, threads, cores, git commit and the CPU's vector instructions as
    torch dispatches them (``cpu_capability``: e.g. AVX2 or AVX512; machines that share a model
    name can differ in it, and with it the speed of every kernel): where a record came from, so
    that timings from different machines are never read as one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"sparse_survey": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device), "git_commit": commit,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "host": platform.node(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_hardware": bf16_supported(device)}
