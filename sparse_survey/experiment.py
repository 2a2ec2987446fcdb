"""One run from a config to a stored record, the results store, presets and sweeps.

A :class:`RunConfig` names everything that decides a result (model, data, method, compression,
IMP rounds, scope, recipe, seed); :func:`run` prunes (or runs IMP), trains, evaluates and profiles
it and returns one JSON-ready record. The :class:`Store` keeps one file per run under
``results/<preset>/<hash of the config>.json``, written atomically, so a killed sweep leaves no
half record and a rerun skips what is done. A run that diverges or fails is stored as such, with
its error, and the sweep goes on. :func:`sweep` runs a grid locally or, with ``backend="ray"``,
as one Ray task per run (one GPU each where GPUs exist). A local sweep can be time-boxed: it
starts no run that its estimate says would end past the budget, so a long grid proceeds in
slices that the store resumes.

A process pays once for what its runs share: the data set is loaded once, and with ``compile``
(the default on CUDA) each architecture is compiled once (see :mod:`sparse_survey.train`).

Presets, the one place where the training budgets are written down:

============ ================= ===================== ======================================== =====
preset       model             data                  recipe                                   use
============ ================= ===================== ======================================== =====
``smoke``    MLP               digits, 30 per class  10 epochs, batch 32, lr 0.05, one-cycle   tests
``laptop``   VGG16, width 1/4  CIFAR-10, 1000/class  8 epochs, batch 128, lr 0.1, one-cycle    CPU
``survey``   VGG16             CIFAR-10              40 epochs, batch 256, lr 0.1, one-cycle   GPU
``paper``    VGG16             CIFAR-10              160 epochs, batch 128, lr 0.1, x0.1 at    GPU
                                                     60 and 120, Nesterov 0.9, wd 1e-4
============ ================= ===================== ======================================== =====

All use SGD with Nesterov momentum 0.9; ``smoke``, ``laptop`` and ``survey`` use weight decay 5e-4.

``laptop`` is sized for the survey's whole grid (5 one-shot methods and IMP with 2, 3 and 4 rounds,
at 6 compressions: 30 + 54 trainings after one shared dense training) in about 75 minutes on a
2-core CPU: 10,000 training images at 2,000-2,300 images/s make a 40 s training; it evaluates on
the 10,000 test images only after the last epoch (2 s) and times inference twice. The full test
set is kept because accuracy differences between methods are a few points. Measured: the whole
grid took 80 minutes of wall time on this project's 2-core machine while it shared the cores with
other work (the sum of the 48 runs' own times, 80 minutes); the dense network reaches 67.6 %
(CIFAR-10 JPEG q75, seed 0), against 81.8 % for 10 epochs on all 50,000 images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__, lottery, masks, models, pruners
from . import data as datasets
from .data import Loader
from .files import atomic_write
from .profile import device_name, profile, timed
from .train import Recipe, default_device, fit

SCHEMA = 1
METHODS = (*pruners.METHODS, "imp", "dense")
EXECUTION = ("device", "compile")  # RunConfig fields that say how a run runs, not what it is


@dataclass(frozen=True)
class Preset:
    """A named budget: the model, the data and the training recipe of a run."""

    model: str
    width: float
    dataset: str
    limit_per_class: int | None
    recipe: Recipe
    profile_repeats: int = 5
    eval_every: int = 1


PRESETS = {
    "smoke": Preset("mlp", 1.0, "digits", 30,
                    Recipe(epochs=10, batch_size=32, lr=0.05, weight_decay=5e-4,
                           schedule="onecycle"), profile_repeats=2),
    "laptop": Preset("vgg16", 0.25, "cifar10", 1000,
                     Recipe(epochs=8, batch_size=128, lr=0.1, weight_decay=5e-4,
                            schedule="onecycle"), profile_repeats=2, eval_every=8),
    "survey": Preset("vgg16", 1.0, "cifar10", None,
                     Recipe(epochs=40, batch_size=256, lr=0.1, weight_decay=5e-4,
                            schedule="onecycle")),
    "paper": Preset("vgg16", 1.0, "cifar10", None, Recipe()),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one run's result. ``iters`` is IMP's number of prune rounds;
    ``rounds`` the number of scoring rounds of a one-shot method (None: its default, 100 for
    SynFlow). ``control`` turns an IMP run into one of the Lottery Ticket controls of its final
    ticket (``"reinit"`` or ``"shuffle"``, see :mod:`sparse_survey.lottery`). ``eval_every``:
    test-set evaluations during training (every that many epochs, and after the last).
    ``device`` says where to run and ``compile`` whether to train through ``torch.compile``
    (None: on CUDA only, where it pays); neither is part of the run's identity."""

    method: str
    compression: float
    preset: str = "smoke"
    model: str = "mlp"
    width: float = 1.0
    dataset: str = "digits"
    limit_per_class: int | None = None
    recipe: Recipe = field(default_factory=Recipe)
    iters: int = 1
    rounds: int | None = None
    scope: str = "global"
    seed: int = 0
    prune_batches: int = 1
    prune_batch_size: int = 256
    profile_repeats: int = 5
    eval_every: int = 1
    control: str | None = None
    device: str | None = None
    compile: bool | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.control is not None and (self.method != "imp"
                                         or self.control not in lottery.CONTROLS):
            raise ValueError(f"control {self.control!r} needs method 'imp' and one of "
                             f"{', '.join(lottery.CONTROLS)}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        pruners.density_of(self.compression)  # raises for a negative or NaN compression
        if self.device is not None:
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"not a torch device: {self.device!r}") from error

    @classmethod
    def from_preset(cls, preset: str, method: str, compression: float, **overrides) -> RunConfig:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        p = PRESETS[preset]
        base = dict(preset=preset, model=p.model, width=p.width, dataset=p.dataset,
                    limit_per_class=p.limit_per_class, recipe=p.recipe,
                    profile_repeats=p.profile_repeats, eval_every=p.eval_every)
        return cls(method=method, compression=compression, **{**base, **overrides})

    @property
    def key(self) -> str:
        """The hash that names the run's file: of the config's canonical JSON (see
        :func:`canonical`), where and how it ran excluded."""
        identity = {k: v for k, v in asdict(self).items() if k not in EXECUTION}
        text = json.dumps(canonical(identity), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def torch_device(self) -> torch.device:
        """Where the run runs: ``device``, else CUDA when there is a GPU, else the CPU."""
        return torch.device(self.device) if self.device else default_device()

    @property
    def label(self) -> str:
        """The survey's column name: Rand, Mag, SNIP, GraSP, SynFlow, IMP (k Iters), Dense;
        a control adds its name, e.g. "IMP (2 Iters), random reinit"."""
        names = {"rand": "Rand", "mag": "Mag", "snip": "SNIP", "grasp": "GraSP",
                 "synflow": "SynFlow", "dense": "Dense"}
        if self.method != "imp":
            return names[self.method]
        label = f"IMP ({self.iters} Iters)"
        return f"{label}, {lottery.CONTROLS[self.control]}" if self.control else label


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


def config_from_dict(d: dict) -> RunConfig:
    """The :class:`RunConfig` of a stored record's ``"config"`` (to rerun or vary it)."""
    return RunConfig(**{**d, "recipe": Recipe(**{**d["recipe"],
                                                 "milestones": tuple(d["recipe"]["milestones"])})})


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
    record = {"schema": SCHEMA, "key": config.key, "config": asdict(config),
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


@functools.lru_cache(maxsize=2)
def _dataset(name: str, root: str | None, limit_per_class: int | None):
    """A data set loaded once per process and root: every run of a sweep shares it."""
    return datasets.load(name, root, limit_per_class)


def _data_root(data_root) -> str | None:
    """Where CIFAR-10 is looked for first: ``data_root``, else ``$SPARSE_SURVEY_DATA``."""
    root = data_root or os.environ.get("SPARSE_SURVEY_DATA") or None
    return root and str(root)


def _run(config: RunConfig, cache_dir, progress: bool, data_root, timings: dict) -> dict:
    device = config.torch_device
    compile = device.type == "cuda" if config.compile is None else config.compile
    train, test = _dataset(config.dataset, _data_root(data_root), config.limit_per_class)
    torch.manual_seed(config.seed)
    c, h, _ = train.shape
    model = models.build(config.model, len(train.classes), c, config.width, image_size=h)
    model.to(device)
    desc = f"{config.label} c={config.compression:g} seed {config.seed}"
    if config.method == "imp":
        with timed(timings, "train"):
            result = lottery.imp(model, (train, test), config.compression, config.iters,
                                 config.recipe, seed=config.seed, device=device,
                                 cache_dir=cache_dir, progress=progress,
                                 eval_every=config.eval_every, compile=compile)
            history, rounds = result.final["history"], result.rounds
            if config.control:  # the same ticket's control, trained like its last round
                model = lottery.control_ticket(result, config.control, config.seed)
                fitted = fit(model, train, config.recipe, test, device,
                             config.seed + result.final["round"], progress=progress,
                             eval_every=config.eval_every, compile=compile, desc=desc)
                if fitted.diverged:
                    raise FloatingPointError(fitted.error)
                history = fitted.epochs
    else:
        with timed(timings, "prune"):
            if config.method != "dense":
                loader = Loader(train, config.prune_batch_size, device, train=True,
                                seed=config.seed)
                batches = [b for b, _ in zip(loader, range(config.prune_batches))]
                pruners.prune(model, config.method, config.compression, batches, config.scope,
                              config.rounds, seed=config.seed, input_shape=train.shape)
        with timed(timings, "train"):
            fitted = fit(model, train, config.recipe, test, device, config.seed,
                         progress=progress, eval_every=config.eval_every, compile=compile,
                         desc=desc)
        if fitted.diverged:
            raise FloatingPointError(fitted.error)
        history, rounds = fitted.epochs, None
    with timed(timings, "profile"):
        measured = profile(model, test, device, repeats=config.profile_repeats,
                           progress=progress)
    accuracies = [e["test_acc"] for e in history if "test_acc" in e]
    return {"status": "finished",
            "metrics": {"test_acc": history[-1]["test_acc"], "best_test_acc": max(accuracies),
                        **measured},
            "layer_densities": masks.layer_densities(model),
            "weight_histograms": weight_histograms(model),
            "history": history, "imp_rounds": rounds, "data": train.name}


def weight_histograms(model: torch.nn.Module, bins: int = 40) -> dict[str, dict]:
    """Per prunable layer, a histogram of the kept weights (for the weight-distribution figure)."""
    out = {}
    for name, w in masks.prunable(model).items():
        kept = w.detach()[masks.get(model)[name]].float().cpu().numpy()
        counts, edges = np.histogram(kept, bins=bins) if kept.size else (np.zeros(bins), [0, 0])
        out[name] = {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}
    return out


def environment(device: torch.device) -> dict:
    """Package versions, device, threads, cores and git commit: where a record came from."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"sparse_survey": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device), "git_commit": commit,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "host": platform.node()}


# ---------------------------------------------------------------------------------- the store

def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as JSON atomically (see :func:`sparse_survey.files.atomic_write`), so that a
    process killed mid-write leaves no half file."""
    text = json.dumps(data, indent=1, allow_nan=True)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


class Store:
    """One JSON file per run under ``root/<preset>/<key>.json``, written atomically.

    Readers skip a file that is not a valid record, with a warning naming it, and a sweep runs
    its config again. A run counts as done when its record finished or diverged (a diverged run
    is a result: its recipe blew up); a failed run (missing data, a full disk, a bug) is retried by
    the next sweep."""

    def __init__(self, root: str | os.PathLike = "results"):
        self.root = Path(root)

    def path(self, config: RunConfig) -> Path:
        return self.root / config.preset / f"{config.key}.json"

    def done(self, config: RunConfig, retry_diverged: bool = False) -> bool:
        """Whether ``config`` has a record that a sweep should keep: finished, or diverged unless
        ``retry_diverged``."""
        record = read_record(self.path(config)) if self.path(config).exists() else None
        kept = ("finished",) if retry_diverged else ("finished", "diverged")
        return record is not None and record["status"] in kept

    def write(self, record: dict) -> Path:
        return write_json(self.root / record["config"]["preset"] / f"{record['key']}.json",
                          record)

    def check_writable(self, preset: str) -> None:
        """Raise a clear error now, before any training, if records of ``preset`` cannot be
        written."""
        folder = self.root / preset
        try:
            write_json(folder / ".writable", {}).unlink()
        except OSError as error:
            raise ValueError(f"cannot write run records to {folder} ({error}); choose another "
                             "results folder (--results)") from error

    def records(self, preset: str, stale: bool = False) -> list[dict]:
        """The stored records of a preset (broken files skipped, with a warning). Records made
        under an earlier definition of a named preset (another model, data or recipe) are left out
        unless ``stale=True``, so tables never mix budgets."""
        paths = sorted((self.root / preset).glob("*.json"))
        records = [r for r in map(read_record, paths) if r is not None]
        return records if stale else current_records(records, preset)

    def rekey(self, preset: str) -> list[tuple[Path, Path]]:
        """Migrate records whose file name is not the key of their config under the current
        :attr:`RunConfig.key` (e.g. written with compression ``1.0`` before keys were made
        canonical): rewrite each under its key. A record whose key is taken already by another
        file is renamed to ``<name>.superseded`` (kept, but no longer read). Returns the moves."""
        moves = []
        for path in sorted((self.root / preset).glob("*.json")):
            record = read_record(path)
            if record is None:
                continue
            key = config_from_dict(record["config"]).key
            if path.stem == key:
                continue
            target = path.with_name(f"{key}.json")
            if target.exists():
                target = path.with_name(f"{path.name}.superseded")
                os.replace(path, target)
            else:
                write_json(target, {**record, "key": key})
                path.unlink()
            moves.append((path, target))
        return moves


RECORD_KEYS = ("key", "config", "status", "label")
FINISHED_KEYS = ("metrics", "history", "layer_densities", "timings", "environment")


def read_record(path: Path) -> dict | None:
    """A stored record, or None with a warning naming the file when it is not one (not JSON, or
    missing what every record holds)."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"it holds a JSON {type(record).__name__}, not an object")
        needed = RECORD_KEYS + (FINISHED_KEYS if record.get("status") == "finished" else ())
        missing = [k for k in needed if k not in record]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        config_from_dict(record["config"])
    except (OSError, ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
        warnings.warn(f"skipping {path}: not a valid run record ({error}); a sweep runs it again",
                      stacklevel=2)
        return None
    return record


def current_records(records: list[dict], preset: str) -> list[dict]:
    """The records made under the current definition of ``preset`` (all, for a preset that is
    not one of :data:`PRESETS`)."""
    if preset not in PRESETS:
        return records
    current = json.loads(json.dumps(asdict(RunConfig.from_preset(preset, "dense", 0))))
    return [r for r in records if all(r["config"].get(k) == current[k] for k in BUDGET)]


BUDGET = ("model", "width", "dataset", "limit_per_class", "recipe", "profile_repeats")


# ------------------------------------------------------------------------------------- sweeps

SURVEY_GRID = {"methods": ["rand", "mag", "snip", "grasp", "synflow"],
               "compressions": list(pruners.SURVEY_COMPRESSIONS), "imp_iters": [2, 3, 4],
               "seeds": [0]}


def load_grid(spec: str | os.PathLike | dict) -> dict:
    """``"survey"`` (the survey's grid), a dict, or a YAML or JSON file with any of the keys
    methods, compressions, imp_iters (IMP round counts; empty for none) and seeds, each a list.
    A missing, empty or malformed file, or a value of the wrong kind, is a clear ValueError."""
    if isinstance(spec, dict):
        grid = spec
    elif spec == "survey":
        grid = SURVEY_GRID
    else:
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"grid {str(spec)!r} is neither 'survey' nor an existing file")
        try:
            grid = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as error:
            raise ValueError(f"grid file {path} is not valid YAML or JSON: "
                             f"{' '.join(str(error).split())}") from error
        if grid is None:
            raise ValueError(f"grid file {path} is empty")
    if not isinstance(grid, dict):
        raise ValueError(f"a grid maps {', '.join(SURVEY_GRID)} to lists; got {grid!r}")
    unknown = set(grid) - set(SURVEY_GRID)
    if unknown:
        raise ValueError(f"unknown grid keys {sorted(unknown)}; known: {sorted(SURVEY_GRID)}")
    grid = {**SURVEY_GRID, **grid}
    checks = {"methods": (lambda v: v in pruners.METHODS, f"{', '.join(pruners.METHODS)}"),
              "compressions": (lambda v: _number(v) and v >= 0, "numbers >= 0"),
              "imp_iters": (lambda v: _whole(v) and v >= 1, "whole numbers >= 1"),
              "seeds": (lambda v: _whole(v) and v >= 0, "whole numbers >= 0")}
    for key, (valid, kind) in checks.items():
        values = grid[key]
        if not isinstance(values, list) or not all(valid(v) for v in values):
            raise ValueError(f"grid key {key!r} must be a list of {kind}; got {values!r}")
    return grid


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def grid_configs(grid: dict, preset: str, seeds: list[int] | None = None,
                 **overrides) -> list[RunConfig]:
    """Every run of a grid at a preset: one-shot methods x compressions, IMP with each round
    count x compressions, for each seed."""
    configs = []
    for seed in seeds if seeds is not None else grid["seeds"]:
        for c in grid["compressions"]:
            for method in grid["methods"]:
                configs.append(RunConfig.from_preset(preset, method, c, seed=seed, **overrides))
            for k in grid["imp_iters"]:
                configs.append(RunConfig.from_preset(preset, "imp", c, iters=k, seed=seed,
                                                     **overrides))
    return configs


def sweep(configs: list[RunConfig], store: Store, backend: str = "local",
          address: str | None = None, cache_dir=None, progress: bool = True,
          time_budget: float | None = None, data_root=None,
          retry_diverged: bool = False) -> list[dict]:
    """Run every config that is not done in the store (:meth:`Store.done`: failed runs and broken
    records are run again, diverged ones too with ``retry_diverged``) and store each record as it
    arrives; return the new records. The overall bar counts runs; under it, the run in flight
    shows its epoch, loss and images/s.

    Before any training, the store must be writable and, on the local backend, the data must
    load: both fail with a clear error at once rather than in every run. Records stored under
    keys of an earlier definition are migrated first (:meth:`Store.rekey`). A finished record
    that cannot be written is kept in a temporary folder (see :func:`keep_safe`) before the
    error ends the sweep.

    ``time_budget`` (seconds; local backend): start no run that would end past the budget, by
    :func:`estimate_seconds` from the runs finished in this call and the stored runs of the same
    presets on this device. The run in flight always finishes and is stored; the runs left wait
    for the next call. ``data_root`` says where CIFAR-10 is (see :func:`run`)."""
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; known: local, ray")
    if time_budget is not None and (backend != "local" or not time_budget > 0):
        raise ValueError("a time budget needs the local backend and a positive number of "
                         f"seconds, got {time_budget!r} with backend {backend!r}")
    for preset in sorted({c.preset for c in configs}):
        store.check_writable(preset)
        store.rekey(preset)
    pending = [c for c in configs if not store.done(c, retry_diverged)]
    if backend == "local":  # load the data now: a missing or damaged data set stops here
        for dataset, limit in sorted({(c.dataset, c.limit_per_class) for c in pending},
                                     key=str):
            _dataset(dataset, _data_root(data_root), limit)
    bar = tqdm(total=len(configs), initial=len(configs) - len(pending), desc="sweep",
               unit="run", disable=not progress)
    records: list[dict] = []

    def keep(record: dict) -> None:
        try:
            store.write(record)
        except OSError as error:
            keep_safe(record, error)
            raise
        records.append(record)
        bar.set_postfix(last=f"{record['label']} c={record['config']['compression']:g} "
                             f"{record['status']}")
        bar.update()

    if backend == "ray":
        for record in _ray_runs(pending, address, cache_dir, data_root):
            keep(record)
    else:
        past = past_runs(store, pending) if time_budget is not None else []
        start = time.monotonic()
        for config in pending:
            if time_budget is not None:
                estimate = estimate_seconds(config, records, past)
                if estimate is not None and time.monotonic() - start + estimate > time_budget:
                    continue  # would end past the budget: left for the next call
            keep(run(config, cache_dir, progress, data_root))
    bar.close()
    return records


def keep_safe(record: dict, error: OSError) -> Path | None:
    """Save a record that the store could not take into the system's temporary folder
    (``sparse_survey-unsaved/<preset>/``), or print it to stderr where even that fails; warn
    where it went. Returns the path, if any."""
    path = (Path(tempfile.gettempdir()) / "sparse_survey-unsaved" / record["config"]["preset"]
            / f"{record['key']}.json")
    try:
        write_json(path, record)
    except OSError:
        print(json.dumps(record), file=sys.stderr)
        warnings.warn(f"could not store the record of {record['label']} ({error}); it is "
                      "printed above", stacklevel=2)
        return None
    warnings.warn(f"could not store the record of {record['label']} ({error}); it is kept in "
                  f"{path}: move it into the store", stacklevel=2)
    return path


def trainings(config: dict) -> int:
    """How many trainings a run (a stored record's ``config``) does: one; for IMP one per round
    and the dense one (cached once a seed's first IMP run has made it), and a control's."""
    if config["method"] != "imp":
        return 1
    return config["iters"] + 1 + (config.get("control") is not None)


def estimate_seconds(config: RunConfig, *pools: list[dict]) -> float | None:
    """How long ``config`` should run, from the total times of finished records: the median of
    those of the same kind (method, IMP rounds, control) in the first pool that has any; else the
    median time per training (:func:`trainings`) in the first pool with a finished record, times
    this config's trainings. None when no pool holds a finished record."""
    mine = asdict(config)

    def kind(c: dict) -> tuple:
        return c["method"], c["iters"], c.get("control")

    finished = [[r for r in pool if r["status"] == "finished"] for pool in pools]
    for pool in finished:
        same = [r["timings"]["total_s"] for r in pool if kind(r["config"]) == kind(mine)]
        if same:
            return statistics.median(same)
    for pool in finished:
        if pool:
            return trainings(mine) * statistics.median(
                r["timings"]["total_s"] / trainings(r["config"]) for r in pool)
    return None


def past_runs(store: Store, configs: list[RunConfig]) -> list[dict]:
    """The stored records of the configs' presets that ran on the device these configs will run
    on (by its name): what a time estimate may draw on."""
    devices = {device_name(c.torch_device) for c in configs}
    return [r for preset in sorted({c.preset for c in configs}) for r in store.records(preset)
            if r["environment"].get("device_name") in devices]


def _run_with_threads(config: RunConfig, cache_dir, threads: int, data_root) -> dict:
    """A Ray task: :func:`run` with the driver's number of CPU threads (Ray would set one), since
    CPU float reductions, and so a run's exact numbers, depend on the thread count."""
    torch.set_num_threads(threads)
    return run(config, cache_dir, data_root=data_root)


def _ray_runs(configs: list[RunConfig], address: str | None, cache_dir, data_root):
    """Yield records as Ray tasks finish: one task per run, one GPU each when the cluster has
    GPUs, else as many CPUs as this process uses threads. Without ``address`` a local Ray
    instance is started."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        threads = torch.get_num_threads()
        task = ray.remote(num_cpus=1 if gpus else threads, num_gpus=gpus)(_run_with_threads)
        waiting = [task.remote(replace(c, device="cuda") if gpus else c, cache_dir, threads,
                               data_root)
                   for c in configs]
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            yield ray.get(finished[0])
    finally:
        if started:
            ray.shutdown()
