"""Small conveniences for the notebooks: pick a preset, fetch scoring data, run or reuse runs.

The notebooks hold prose, parameters and calls; what they call lives here or in the modules it
uses, so that every number a notebook shows comes from the package and its results store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import data as datasets
from . import models
from .data import Loader
from .experiment import PRESETS, RunConfig, Store, sweep, write_json
from .profile import device_name


def resolve_preset(preset: str) -> str:
    """``"auto"`` means ``survey`` on a GPU and ``laptop`` on a CPU."""
    if preset == "auto":
        return "survey" if torch.cuda.is_available() else "laptop"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
    return preset


def use_data_root(data_root: str | None) -> None:
    """Point every later CIFAR-10 load at ``data_root`` (sets ``SPARSE_SURVEY_DATA``)."""
    if data_root:
        os.environ["SPARSE_SURVEY_DATA"] = str(data_root)


def fresh_model(preset: str, seed: int = 0, device: str | None = None,
                dataset: str | None = None):
    """A freshly initialised model of a preset (seeded), and the preset's ``(train, test)``."""
    p = PRESETS[preset]
    data = datasets.load(dataset or p.dataset, limit_per_class=p.limit_per_class)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    c, h, _ = data[0].shape
    model = models.build(p.model, len(data[0].classes), c, p.width, image_size=h).to(device)
    return model, data


def fresh_model_and_batches(preset: str, seed: int = 0, batches: int = 1,
                            device: str | None = None):
    """A freshly initialised model of a preset and a few of its training batches (for scoring)."""
    model, (train, _) = fresh_model(preset, seed, device)
    device = next(model.parameters()).device
    loader = Loader(train, min(256, len(train)), device, train=True, seed=seed)
    return model, [b for b, _ in zip(loader, range(batches))]


def numbers(value, name: str = "value") -> list[float]:
    """A list of numbers from a notebook parameter: a list, one number, or the text of a list
    (what ``papermill -p compressions [0.5,1]`` passes; ``-y "compressions: [0.5, 1]"`` passes a
    list)."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    value = [value] if isinstance(value, (int, float)) else value
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
    return list(value)


def stored_runs(preset: str, results: str = "results") -> list[dict]:
    """The runs of a preset's survey grid in the store (failed ones included, controls left
    out); a clear error when none finished (run the sweep or the method notebooks first)."""
    from .report import survey_runs

    records = survey_runs(Store(results).records(preset))
    if not any(r["status"] == "finished" for r in records):
        raise RuntimeError(f"no finished runs at preset {preset!r} in {results}/{preset}: run "
                           f"`python -m sparse_survey sweep --preset {preset}` or the method "
                           "notebooks first")
    return records


def accuracy_at_highest_compression(records: list[dict]) -> tuple[float, float]:
    """The highest compression among one method's records, and its mean accuracy there (%)."""
    from .report import summary

    mean = summary(records, "accuracy")[0]
    highest = max(mean.index)
    return float(highest), float(mean.loc[highest].iloc[0])


def runs(method: str, compressions, preset: str, seeds=1, iters: int = 1,
         results: str = "results", device: str | None = None, progress: bool = True,
         cache_dir=None, **overrides) -> list[dict]:
    """The records of ``method`` at each compression and seed (``seeds``: a count, or a list),
    running only what the store ``results`` does not hold yet. ``overrides`` change the preset's
    settings (e.g. ``dataset``)."""
    compressions = numbers(compressions, "compressions")
    seeds = range(seeds) if isinstance(seeds, int) else [int(s) for s in numbers(seeds, "seeds")]
    if method == "imp":
        overrides["iters"] = iters
    configs = [RunConfig.from_preset(preset, method, c, seed=s, device=device, **overrides)
               for s in seeds for c in compressions]
    store = Store(results)
    sweep(configs, store, cache_dir=cache_dir, progress=progress)
    stored = {r["key"]: r for r in store.records(preset, stale=True)}  # found by key
    return [stored[c.key] for c in configs]


def stored_benchmark(name: str, compute, preset: str, results: str = "results") -> dict:
    """The stored result of a benchmark (``results/<preset>/bench/<name>.json``), or, when there is
    none, ``compute()`` (a JSON-ready dict) stored there with the machine it ran on. Delete the
    file to measure again."""
    path = Path(results) / preset / "bench" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stored = {"name": name, "preset": preset, "result": compute(),
              "environment": {"device_name": device_name(device), "torch": torch.__version__,
                              "threads": torch.get_num_threads()}}
    write_json(path, stored)
    return stored
