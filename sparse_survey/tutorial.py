"""Small conveniences for the notebooks: pick a preset, fetch scoring data, run or reuse runs.

The notebooks hold prose, parameters and calls; what they call lives here or in the modules it
uses, so that every number a notebook shows comes from the package and its results store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as datasets
from . import models, pruners
from .data import Loader
from .experiment import PRESETS, RunConfig, Store, sweep, write_json
from .profile import device_name


REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout, when run from one


def results_dir(results: str | os.PathLike) -> Path:
    """The results store folder: a relative ``results`` is taken from the repository root (so a
    notebook run from ``notebooks/``, as Jupyter does, finds the repository's records), or from
    the working directory where the package is not run from a checkout."""
    path = Path(results).expanduser()
    if path.is_absolute():
        return path
    checkout = (REPOSITORY / "pyproject.toml").is_file() and (REPOSITORY / "notebooks").is_dir()
    return (REPOSITORY if checkout else Path.cwd()) / path


@dataclass(frozen=True)
class Parameters:
    """A notebook's parameters, checked and resolved by :func:`parameters`."""

    preset: str
    compressions: list[float]
    seeds: list[int]
    results: Path
    device: str | None


def parameters(preset: str = "auto", compressions=(1,), seeds=1,
               results: str | os.PathLike = "results", data_root: str | None = None,
               device: str | None = None) -> Parameters:
    """Check a notebook's parameters at once, in the cell after them, so that a bad value stops
    the notebook with a clear message before any work: ``preset`` (``"auto"`` resolved),
    ``compressions`` (a list, one number, or the text of a list; each >= 0), ``seeds`` (a count
    >= 1, or a list of seeds), ``results`` (see :func:`results_dir`), ``data_root`` (then used by
    every load, see :func:`use_data_root`) and ``device`` (a torch device, or None)."""
    compressions = numbers(compressions, "compressions")
    for c in compressions:
        pruners.density_of(c)  # a clear error for a negative or NaN compression
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda)") \
                from error
    use_data_root(data_root)
    return Parameters(resolve_preset(preset), compressions, seed_list(seeds),
                      results_dir(results), device)


def seed_list(seeds) -> list[int]:
    """Seeds from a notebook parameter: a count ``n >= 1`` (seeds 0 .. n-1) or a list of seeds."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a count of at least 1 or a list of seeds, got {seeds}")
        return list(range(seeds))
    listed = numbers(seeds, "seeds")
    if not all(float(s).is_integer() and s >= 0 for s in listed):
        raise ValueError(f"seeds must be whole numbers >= 0, got {seeds!r}")
    return [int(s) for s in listed]


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

    folder = results_dir(results)
    records = survey_runs(Store(folder).records(preset))
    if not any(r["status"] == "finished" for r in records):
        raise RuntimeError(f"no finished runs at preset {preset!r} in {folder / preset}: run "
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
    running only what the store ``results`` does not hold yet (failed runs are retried).
    ``overrides`` change the preset's settings (e.g. ``dataset``). A clear error when none of
    the runs finished, naming the first error."""
    compressions = numbers(compressions, "compressions")
    if method == "imp":
        overrides["iters"] = iters
    configs = [RunConfig.from_preset(preset, method, c, seed=s, device=device, **overrides)
               for s in seed_list(seeds) for c in compressions]
    store = Store(results_dir(results))
    sweep(configs, store, cache_dir=cache_dir, progress=progress)
    stored = {r["key"]: r for r in store.records(preset, stale=True)}  # found by key
    records = [stored[c.key] for c in configs]
    if not any(r["status"] == "finished" for r in records):
        from .report import first_line

        raise RuntimeError(f"none of the {len(records)} runs of {method} finished; the first "
                           f"{records[0]['status']} with: {first_line(records[0]['error'])}")
    return records


def stored_benchmark(name: str, compute, preset: str, results: str = "results") -> dict:
    """The stored result of a benchmark (``results/<preset>/bench/<name>.json``), or, when there is
    none, ``compute()`` (a JSON-ready dict) stored there with the machine it ran on. Delete the
    file to measure again."""
    path = results_dir(results) / preset / "bench" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stored = {"name": name, "preset": preset, "result": compute(),
              "environment": {"device_name": device_name(device), "torch": torch.__version__,
                              "threads": torch.get_num_threads()}}
    write_json(path, stored)
    return stored
