"""What the notebooks call: their parameters checked at once, the preset's model and scoring
data, runs reused from the results store, and the numbers they glue for the book.

The notebooks hold prose, parameters and the few lines that show each method's own idea; what
they share lives here, so that every number a notebook shows comes from the package and its
results store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import masks, pruners
from .experiment import PRESETS, RunConfig, dataset, fresh_model, resolve_preset, scoring_batches
from .profile import device_name, remaining_flops_fraction
from .report import accuracy_figure, first_line, markdown, summary, survey_runs, table
from .store import Store, write_json
from .sweeps import sweep
from .train import device_of

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
    """A notebook's parameters, checked and resolved by :func:`parameters`: the preset, the
    compressions and seeds to run, the results folder, the method and the run-config fields
    that vary it (e.g. ``{"bn_mode": "train"}``), the compression of per-layer pictures and
    the device (None: CUDA when there is a GPU)."""

    preset: str
    compressions: list[float]
    seeds: list[int]
    results: Path
    method: str | None = None
    fields: dict = field(default_factory=dict)
    figure_compression: float = 1.0
    device: str | None = None

    def configs(self, method: str | None = None, compressions=None, seeds=None,
                **more) -> list[RunConfig]:
        """The run configs of every compression and seed (by default the parameters' own), for
        ``method`` (default: the parameters'), with ``fields`` and ``more``."""
        return [RunConfig.from_preset(self.preset, method or self.method, c, seed=s,
                                      device=self.device, **{**self.fields, **more})
                for s in (self.seeds if seeds is None else seeds)
                for c in (self.compressions if compressions is None else compressions)]


def parameters(preset: str = "auto", compressions=(1,), seeds=1,
               results: str | os.PathLike = "results", method: str | None = None,
               figure_compression: float = 1.0, device: str | None = None,
               **fields) -> Parameters:
    """Check a notebook's parameters at once, in the cell after them, so that a bad value stops
    the notebook with a clear message before any work: ``preset`` (``"auto"``: survey on a GPU,
    laptop on a CPU), ``compressions`` (a list, one number, or the text of a list; each >= 0),
    ``seeds`` (a count >= 1, or a list of seeds), ``results`` (see :func:`results_dir`),
    ``method`` and the run-config ``fields`` (made into a config once, so a bad value is caught
    here), and ``device``. CIFAR-10 is found through ``$SPARSE_SURVEY_DATA`` (see
    :func:`sparse_survey.data.load`)."""
    checked = Parameters(resolve_preset(preset), numbers(compressions, "compressions"),
                         seed_list(seeds), results_dir(results), method, fields,
                         figure_compression, device)
    for c in checked.compressions:
        pruners.density_of(c)  # a clear error for a negative compression
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError as error:
            raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda)") \
                from error
    if method is not None:
        checked.configs()  # RunConfig checks the method and its fields
    return checked


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


# ----------------------------------------------------------------------- models and scoring data

def preset_model(preset: str, seed: int = 0, device: str | None = None):
    """A freshly initialised model of a preset (weights from ``seed``) and its ``(train, test)``
    data."""
    p = PRESETS[preset]
    data = dataset(p.dataset, limit_per_class=p.limit_per_class)
    model = fresh_model(p.model, p.width, data[0].shape, len(data[0].classes), seed, device)
    return model, data


def model_and_batches(run: Parameters, seed: int = 0, batches: int = 1):
    """A freshly initialised model of the run's preset and its first training ``batches``
    (the data SNIP and GraSP score on; the other methods ignore it)."""
    model, (train, _) = preset_model(run.preset, seed, run.device)
    scoring = scoring_batches(train, batches, min(256, len(train)), seed, device_of(run.device))
    return model, scoring


def prune_once(run: Parameters, model: torch.nn.Module, batches: list) -> pd.DataFrame:
    """Prune ``model`` by the run's method and fields at its figure compression; glue the kept
    fraction (``<method>_density``) and the remaining FLOPs (``<method>_flops_fraction``), and
    return each layer's density."""
    chosen = {k: v for k, v in run.fields.items() if k in ("scope", "iterations", "bn_mode")}
    pruners.prune(model, run.method, run.figure_compression, batches, **chosen)
    glue_numbers(run.method, density=masks.density(model),
                 flops_fraction=remaining_flops_fraction(model, batches[0][0].shape[1:]))
    return pd.DataFrame({"density": masks.layer_densities(model)}).rename_axis("layer")


def show(table: pd.DataFrame, decimals: int = 2) -> None:
    """Display a table in the notebook as markdown (what the book renders)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown(table, decimals)))


def glue_numbers(prefix: str, **values) -> None:
    """Glue each value for the book as ``<prefix>_<name>`` (not displayed here)."""
    from myst_nb import glue

    for name, value in values.items():
        glue(f"{prefix}_{name}", value, display=False)


# ----------------------------------------------------------------------------------- the runs

def trained(run: Parameters, progress: bool = True, cache_dir=None, **more) -> list[dict]:
    """The records of the run's method at each compression and seed (see :func:`runs`); shows
    their accuracy table and figure and glues the accuracy at the highest compression (see
    :func:`glue_accuracy`)."""
    records = runs(run.configs(**more), run.results, progress=progress, cache_dir=cache_dir)
    show(table(records, "accuracy"))
    show_figure(accuracy_figure(records))
    glue_accuracy(run.method, records)
    return records


def show_figure(figure, name: str | None = None) -> None:
    """Display a figure once (glued for the book under ``name`` when given) and close it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if name:
        from myst_nb import glue

        glue(name, figure)
    else:
        display(figure)
    plt.close(figure)


def runs(configs: list[RunConfig], results: str | os.PathLike = "results",
         progress: bool = True, cache_dir=None) -> list[dict]:
    """The records of ``configs``, running only what the store ``results`` does not hold yet
    (failed runs are retried), with one progress bar over the runs (a bar per epoch would fill
    an executed notebook). A clear error when none of them finished, naming the first error."""
    store = Store(results_dir(results))
    sweep(configs, store, cache_dir=cache_dir, progress=progress, run_progress=False)
    records = [store.get(c) for c in configs]
    if not any(r["status"] == "finished" for r in records):
        raise RuntimeError(f"none of the {len(records)} runs finished; the first "
                           f"{records[0]['status']} with: {first_line(records[0]['error'])}")
    return records


def glue_accuracy(prefix: str, records: list[dict]) -> tuple[float, float]:
    """The highest compression among the records and the mean accuracy there (%), glued as
    ``<prefix>_highest_compression`` and ``<prefix>_accuracy`` and printed."""
    mean = summary(records, "accuracy")[0]
    highest = float(max(mean.index))
    accuracy = float(mean.loc[highest].iloc[0])
    glue_numbers(prefix, highest_compression=highest, accuracy=accuracy)
    print(f"accuracy at compression {highest:g}: {accuracy:.2f} %")
    return highest, accuracy


def stored_runs(preset: str, results: str | os.PathLike = "results") -> list[dict]:
    """The runs of a preset's survey grid in the store, as :func:`~sparse_survey.report.survey_runs`
    selects them (failed ones included); a clear error when none finished (run the sweep or the
    method notebooks first)."""
    folder = results_dir(results)
    records = survey_runs(Store(folder).records(preset))
    if not any(r["status"] == "finished" for r in records):
        raise RuntimeError(f"no finished runs at preset {preset!r} in {folder / preset}: run "
                           f"`python -m sparse_survey sweep --preset {preset}` or the method "
                           "notebooks first")
    return records


def stored_benchmark(name: str, compute, preset: str,
                     results: str | os.PathLike = "results") -> dict:
    """The stored result of a benchmark (``results/<preset>/bench/<name>.json``), or, when there is
    none, ``compute()`` (a JSON-ready dict) stored there with the machine it ran on. Delete the
    file to measure again."""
    path = results_dir(results) / preset / "bench" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    device = device_of()
    stored = {"name": name, "preset": preset, "result": compute(),
              "environment": {"device_name": device_name(device), "torch": torch.__version__,
                              "threads": torch.get_num_threads()}}
    write_json(path, stored)
    return stored
