"""What the notebooks call: their parameters checked at once, the preset's model and scoring
data, runs reused from the results store, and the numbers they glue for the book.

The notebooks hold prose, parameters and the few lines that show each method's own idea; what
they share lives here, so that every number a notebook shows comes from the package and its
results store.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import masks, pruners
from .experiment import (
    PRESETS,
    RunConfig,
    check_compression,
    dataset,
    fresh_model,
    preset_precision,
    resolve_preset,
    scoring_batches,
)
from .figures import accuracy_figure, scale_label
from .profile import device_name, remaining_flops_fraction
from .report import (
    at_precision,
    first_line,
    markdown,
    notes,
    summary,
    survey_runs,
    table,
)
from .store import Store, write_json
from .sweeps import load_yaml, sweep
from .train import device_of

REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout, when run from one


def results_dir(results: str | os.PathLike) -> Path:
    """The results store folder: a relative ``results`` is taken from the repository root (so a
    notebook run from ``notebooks/``, as Jupyter does, finds the repository's records), or from
    the working directory where the package is not run from a checkout."""
    if not isinstance(results, (str, os.PathLike)) or not str(results).strip():
        raise ValueError(f"the results folder must be a folder name, got {results!r}")
    path = Path(results).expanduser()
    if path.is_absolute():
        return path
    checkout = (REPOSITORY / "pyproject.toml").is_file() and (REPOSITORY / "notebooks").is_dir()
    return (REPOSITORY if checkout else Path.cwd()) / path


@dataclass(frozen=True)
class Parameters:
    """A notebook's parameters, checked and resolved by :func:`parameters`: the preset, the
    compressions and seeds to run, the results folder, the method and the run-config fields
    that vary it (e.g. ``{"bn_mode": "train"}``), the compression of per-layer pictures, the
    device (None: CUDA when there is a GPU) and the precision the runs train in, or were
    trained in for a notebook that reads them (``"fp32"`` or ``"bf16"``)."""

    preset: str
    compressions: list[float]
    seeds: list[int]
    results: Path
    method: str | None = None
    fields: dict = field(default_factory=dict)
    figure_compression: float = 1.0
    device: str | None = None
    precision: str = "fp32"

    def configs(self, method: str | None = None, compressions=None, seeds=None,
                **more) -> list[RunConfig]:
        """The run configs of every compression and seed (by default the parameters' own), for
        ``method`` (default: the parameters'), at the parameters' precision, with ``fields``
        and ``more``."""
        return [RunConfig.from_preset(self.preset, method or self.method, c, seed=s,
                                      device=self.device, precision=self.precision,
                                      **{**self.fields, **more})
                for s in (self.seeds if seeds is None else seeds)
                for c in (self.compressions if compressions is None else compressions)]

    def label(self, method: str | None = None, **more) -> str:
        """The label that the tables give ``method``'s runs (default: the parameters' method)
        with ``fields`` and ``more`` at the parameters' preset and precision, e.g. ``"SNIP"`` or
        ``"SNIP (BN train)"``; a precision other than the preset's own is named in it."""
        return self.configs(method, [1], [0], **more)[0].label


class ParameterError(ValueError):
    """A notebook parameter that the notebook does not have, or a bad value of one; the message
    speaks of the parameter as the notebook names it (``-p NAME VALUE``)."""


def parameters(preset: str = "auto", compressions=(1,), seeds=1,
               results: str | os.PathLike = "results", method: str | None = None,
               figure_compression: float = 1.0, device: str | None = None,
               trains: bool | None = None, precision: str = "auto", **fields) -> Parameters:
    """Check a notebook's parameters at once, in the cell after them, so that a bad value stops
    the notebook with a clear message before any work: first that papermill injected no
    parameter the notebook lacks (:func:`refuse_unknown_parameters`), then ``preset``
    (``"auto"``: survey on a GPU, laptop on a CPU), ``compressions`` (a list, one number, or the
    text of a list; each >= 0 and low enough to leave every layer a weight), ``seeds`` (a count
    >= 1, or a list of seeds), ``results`` (see :func:`results_dir`; a notebook that ``trains``,
    by default one with a ``method``, must be able to write there), ``method`` and the run-config
    ``fields`` (made into a config once, so a bad value is caught here), ``device``, and
    ``precision`` (``"fp32"``, ``"bf16"``, or ``"auto"``: the preset's own on this machine, see
    :func:`~sparse_survey.experiment.preset_precision`; so ``cpu-full`` reads and runs bf16 on a
    CPU with bf16 arithmetic and fp32 elsewhere, and ``laptop`` fp32 everywhere). CIFAR-10
    is found through ``$SPARSE_SURVEY_DATA`` (see :func:`sparse_survey.data.load`).
    Raises :class:`ParameterError`."""
    refuse_unknown_parameters()
    try:
        if device is not None:
            usable_device(device)
        chosen = resolve_preset(preset)
        if isinstance(figure_compression, bool) or not (
                isinstance(figure_compression, (int, float)) and 0 <= figure_compression
                < math.inf):
            raise ValueError(f"figure_compression must be a number >= 0, got "
                             f"{figure_compression!r}")
        checked = Parameters(chosen, numbers(compressions, "compressions"), seed_list(seeds),
                             results_dir(results), method, fields, figure_compression, device,
                             preset_precision(chosen, device, precision))
        budget = PRESETS[checked.preset]
        for c in checked.compressions:  # negative, or too high for the preset's model
            check_compression(c, budget.model, budget.width, budget.dataset,
                              fields.get("scope", "global"))
        if method is not None:
            checked.configs()  # RunConfig checks the method and its fields
        writes = method is not None if trains is None else trains
        if writes:
            Store(checked.results).check_writable(checked.preset, option="-p results FOLDER")
    except ValueError as error:
        raise ParameterError(f"bad notebook parameter: {error}") from None
    return checked


def refuse_unknown_parameters() -> None:
    """Refuse a parameter that papermill injected but the notebook does not have, or one whose
    value is not of the kind the notebook's parameters cell declares.

    Papermill puts ``-p NAME VALUE`` into a cell of assignments (headed ``# Parameters``) after
    the notebook's parameters cell, and only *warns* about a name that cell does not define: the
    notebook would run on its defaults, silently. Called in the cell after the parameters, this
    compares the names of the injected cell with those of the parameters cell (both are in
    IPython's input history) and raises :class:`ParameterError` naming the stranger and the
    parameters that exist. Then each injected value must be of its declared kind
    (:func:`of_kind`): ``-p width abc`` or ``-p results None`` is refused here, and the text of a
    list (``-p iters '[2, 3]'``) is read as YAML into the list it says. Outside IPython, or when
    nothing was injected, it does nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    cells = shell.user_ns.get("_ih", []) if shell is not None else []
    injected = [i for i, cell in enumerate(cells) if cell.startswith("# Parameters\n")]
    if not injected or injected[-1] == 0:
        return
    given, known = (assigned_names(cells[i]) for i in (injected[-1], injected[-1] - 1))
    unknown = [name for name in given if name not in known]
    if unknown:
        import difflib

        hints = [f"{name!r} (did you mean {close[0]!r}?)"
                 if (close := difflib.get_close_matches(name, known, 1, 0.5)) else repr(name)
                 for name in unknown]
        raise ParameterError(f"this notebook has no parameter {', '.join(hints)}; its "
                             f"parameters are {', '.join(known)}")
    for name, kind in declared_kinds(cells[injected[-1] - 1]).items():
        if name in given:
            shell.user_ns[name] = of_kind(shell.user_ns[name], kind, name)


def assigned_names(source: str) -> list[str]:
    """The names a cell of top-level assignments binds (``x = 1`` and ``x: int = 1``)."""
    import ast

    names = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def declared_kinds(source: str) -> dict[str, str]:
    """The kind each annotated assignment of a cell declares (``x: int = 1`` -> ``"int"``)."""
    import ast

    return {node.target.id: ast.unparse(node.annotation) for node in ast.parse(source).body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
         "list": "a list"}


def of_kind(value, kind: str, name: str):
    """``value`` if it is of ``kind`` (``int``, ``float``, ``str``, ``bool`` or ``list``; a
    whole number is a float too, a boolean is neither), the list that the text of a list says
    for a ``list``; else a :class:`ParameterError` that says how to pass it."""
    import yaml

    if kind == "list" and isinstance(value, str):
        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            pass
    whole = isinstance(value, int) and not isinstance(value, bool)
    fits = {"int": whole, "float": whole or (isinstance(value, float) and math.isfinite(value)),
            "str": isinstance(value, str), "bool": isinstance(value, bool),
            "list": isinstance(value, list)}.get(kind, True)
    if not fits:
        how = (f" (-y \"{name}: [2, 3]\" passes a list; -p {name} '[2, 3]' passes its text, "
               "read as YAML)" if kind == "list" else "")
        raise ParameterError(f"bad notebook parameter: {name} must be {KINDS[kind]}, got "
                             f"{value!r}{how}")
    return value


def usable_device(device, name: str = "device") -> str:
    """A notebook parameter that names a torch device this machine has (a ValueError
    otherwise: :func:`parameters` words it as a bad notebook parameter)."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} {device!r} is not a torch device (e.g. cpu, cuda)") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if chosen.type == "cuda" and (chosen.index or 0) >= gpus:
        raise ValueError(f"{name} {device!r}: this machine has {gpus} CUDA GPU(s) that torch "
                         "can use")
    return device


def choice(value, name: str, choices) -> str:
    """A notebook parameter that names one of ``choices``."""
    if value not in choices:
        raise ParameterError(f"bad notebook parameter: {name} must be one of "
                             f"{', '.join(map(str, choices))}, got {value!r}")
    return value


def positive(value, name: str) -> float:
    """A notebook parameter that is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ParameterError(f"bad notebook parameter: {name} must be a number > 0, got "
                             f"{value!r}")
    return value


def counts(value, name: str) -> list[int]:
    """A notebook parameter that lists counts (batch sizes, IMP round counts): a non-empty list
    of whole numbers >= 1, or one such number."""
    listed = value if isinstance(value, list) else [value]
    if not listed:
        raise ParameterError(f"bad notebook parameter: {name} must list at least one whole "
                             "number >= 1, got []")
    return [count(v, name) for v in listed]


def count(value, name: str) -> int:
    """A notebook parameter that counts something (rounds, batches): a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"bad notebook parameter: {name} must be a whole number >= 1, "
                             f"got {value!r}")
    return value


def numbers(value, name: str = "value") -> list[float]:
    """A list of numbers from a notebook parameter: a list, one number, or the text of a list
    (what ``papermill -p compressions [0.5,1]`` passes; ``-y "compressions: [0.5, 1]"`` passes a
    list)."""
    if isinstance(value, str):
        import yaml

        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            pass
    value = [value] if isinstance(value, (int, float)) else value
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"{name} must be finite numbers, got {value!r}")
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


def positive_shares(model: torch.nn.Module) -> pd.Series:
    """The share of each prunable layer's kept weights that are positive, and last, as
    ``"hidden layers"``, the share over the kept weights of every layer but the first and the
    classifier pooled (each kept weight counts once): the one definition the book quotes."""
    kept, weights = masks.get(model), masks.prunable(model)
    positive = {n: int((w.detach()[kept[n]] > 0).sum()) for n, w in weights.items()}
    total = {n: int(kept[n].sum()) for n in weights}
    hidden = list(weights)[1:-1]
    shares = {n: positive[n] / total[n] if total[n] else math.nan for n in weights}
    shares["hidden layers"] = sum(positive[n] for n in hidden) / sum(total[n] for n in hidden)
    return pd.Series(shares, name="share of kept weights that are positive").rename_axis("layer")


def show(table: pd.DataFrame, decimals: int = 2, title: str | None = None) -> None:
    """Display a table in the notebook as markdown (what the book renders), under a bold
    ``title`` when given, and followed by the notes its cells need (:func:`notes`: what "±" and
    "(n)" mean, timing marks)."""
    from IPython.display import Markdown, display

    parts = ([f"**{title}**"] if title else []) + [markdown(table, decimals)] + notes(table)
    display(Markdown("\n\n".join(parts)))


def for_the_book(table: pd.DataFrame):
    """A table as a chapter pastes it (glued as a pandas Styler): the index's name in the
    header's corner rather than on a header row of its own, the book's table style."""
    corner = table.index.name if table.index.nlevels == 1 else None
    return (table.rename_axis(index=None if corner else table.index.names, columns=corner)
            .style.set_table_attributes('class="table"'))


def glue_numbers(prefix: str, **values) -> None:
    """Glue each value for the book as ``<prefix>_<name>`` (not displayed here); a NumPy
    scalar is glued as the Python number it holds, whose text the book can format."""
    import numpy as np
    from myst_nb import glue

    for name, value in values.items():
        glue(f"{prefix}_{name}", value.item() if isinstance(value, np.generic) else value,
             display=False)


# ----------------------------------------------------------------------------------- the runs

def trained(run: Parameters, progress: bool = True, cache_dir=None, **more) -> list[dict]:
    """The records of the run's method at each compression and seed (see :func:`runs`); shows
    the accuracy table and figure of every seed stored for those cells (:func:`every_seed`, the
    one definition each page quotes), both naming their scale (preset and precision, glued as
    ``<method>_scale`` for the page that quotes them), and glues the accuracy at the highest
    compression (see :func:`glue_accuracy`)."""
    records = runs(run.configs(**more), run.results, progress=progress, cache_dir=cache_dir)
    cells = every_seed(records, run.results)
    show(table(cells, "accuracy"), title=f"Top-1 test accuracy (%), {scale_label(cells)}")
    show_figure(accuracy_figure(cells))
    glue_numbers(run.method, scale=scale_label(cells))
    glue_accuracy(run.method, cells)
    return records


HOW_RUN = ("seed", "device", "compile")  # config fields that say how a run ran, not its cell


def every_seed(records: list[dict], results: str | os.PathLike = "results") -> list[dict]:
    """The stored records of every seed of the cells of ``records`` (the same config but for the
    seed and for where and how it ran: :data:`HOW_RUN`), so that a cell's number is the mean
    over all its stored seeds on every page, whichever seeds one notebook ran and on whichever
    machine each seed was made, as the results tables count them."""
    def cell(config: dict) -> str:
        return json.dumps({k: v for k, v in config.items() if k not in HOW_RUN}, sort_keys=True)

    wanted = {cell(r["config"]) for r in records}
    store = Store(results_dir(results))
    return [r for preset in sorted({r["config"]["preset"] for r in records})
            for r in store.records(preset) if cell(r["config"]) in wanted]


FOR_THE_BOOK = "SPARSE_SURVEY_FOR_BOOK"  # set (to 1) when executing the book's copies
SHOWN_IN_THE_CHAPTER = "*(The figure `{name}` is shown in this notebook's chapter.)*"


def show_figure(figure, name: str | None = None) -> None:
    """Display a figure once (glued for the book under ``name`` when given) and close it.

    When the notebook is executed for the book (``SPARSE_SURVEY_FOR_BOOK=1``, see the reproduce
    page), a glued figure is shown by the chapter that pastes it, so that a reader meets it once
    in the chapter and its notebook page: a note (:data:`SHOWN_IN_THE_CHAPTER`) comes before
    it, and the book (``book/_ext/figure_once.py``) shows the note in the figure's place."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    if name:
        from myst_nb import glue

        if os.environ.get(FOR_THE_BOOK, "") not in ("", "0"):
            display(Markdown(SHOWN_IN_THE_CHAPTER.format(name=name)))
        glue(name, figure)  # displayed: the chapter's copy is the file this output writes
    else:
        display(figure)
    plt.close(figure)


def runs(configs: list[RunConfig], results: str | os.PathLike = "results",
         progress: bool = True, cache_dir=None) -> list[dict]:
    """The records of ``configs``, running only what the store ``results`` does not hold yet
    (failed runs are retried), with one progress bar over the runs (a bar per epoch would fill
    an executed notebook). A run that another process is training on the same store (a sweep
    beside the notebook) is waited for, then read. A clear error when none of them finished,
    naming the first error."""
    store = Store(results_dir(results))
    while True:  # runs that another process (a sweep on this store) is training: wait for them
        sweep(configs, store, cache_dir=cache_dir, progress=progress, run_progress=False)
        elsewhere = [c for c in configs if store.get(c) is None and store.claimed(c)]
        if not elsewhere:
            break
        print(f"waiting for {len(elsewhere)} run(s) that another process is training on "
              f"{store.root} (first: {elsewhere[0].label}, c={elsewhere[0].compression:g}, seed "
              f"{elsewhere[0].seed})", flush=True)
        for config in elsewhere:
            store.wait(config)
    records = [store.get(c) for c in configs]
    lost = [c for c, r in zip(configs, records) if r is None]
    if lost:
        raise RuntimeError(f"{len(lost)} run(s) have no readable record in {store.root} after "
                           f"running (first: {lost[0].label}, c={lost[0].compression:g}, seed "
                           f"{lost[0].seed}); see the warnings above")
    if not any(r["status"] == "finished" for r in records):
        raise RuntimeError(f"none of the {len(records)} runs finished; the first "
                           f"{records[0]['status']} with: {first_line(records[0]['error'])}")
    return records


def glue_accuracy(prefix: str, records: list[dict]) -> tuple[float, float]:
    """The highest compression among the records and the mean accuracy there (%) over its
    seeds, glued as ``<prefix>_highest_compression``, ``<prefix>_accuracy`` and
    ``<prefix>_accuracy_seeds`` (how many seeds the mean is over) and printed."""
    mean, _, count = summary(records, "accuracy")
    highest = float(max(mean.index))
    accuracy, seeds = float(mean.loc[highest].iloc[0]), int(count.loc[highest].iloc[0])
    glue_numbers(prefix, highest_compression=highest, accuracy=accuracy, accuracy_seeds=seeds)
    print(f"accuracy at compression {highest:g}: {accuracy:.2f} % "
          f"({'mean of ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'})")
    return highest, accuracy


def stored_runs(preset: str, results: str | os.PathLike = "results",
                precision: str = "auto") -> list[dict]:
    """The runs of a preset's survey grid in the store at one precision, as
    :func:`~sparse_survey.report.survey_runs` selects them (failed ones included). ``precision``
    ``"auto"`` is the one the preset's runs take on this machine
    (:func:`~sparse_survey.experiment.preset_precision`), as every notebook's runs do. A clear
    error when none finished: run the sweep or the method notebooks first, or read the other
    precision where the store holds that."""
    folder = results_dir(results)
    chosen = at_precision(survey_runs(Store(folder).records(preset)), preset, precision)
    if not any(r["status"] == "finished" for r in chosen.records):
        hint = (f"; it holds finished runs in {' and '.join(chosen.others)} (precision="
                f"{chosen.others[0]!r} reads them)" if chosen.others else "")
        raise RuntimeError(f"no finished {chosen.precision} runs at preset {preset!r} in "
                           f"{folder / preset}{hint}: run `python -m sparse_survey sweep "
                           f"--preset {preset}` or the method notebooks first")
    return chosen.records


def runs_at_scale(preset: str, results: str | os.PathLike = "results") -> list[dict]:
    """The finished runs of a preset's survey grid in the store, and of its dense network
    (label ``"Dense"``), to stand beside another preset's in a table (the results chapter shows
    the ``survey`` preset's full-width network beside ``cpu-full``'s): at the precision most of
    them ran at, since a cell holds one (:func:`~sparse_survey.report.frame`), fp32 on a tie;
    none (an empty list, not an error) when the store holds none."""
    stored = Store(results_dir(results)).records(resolve_preset(preset))
    finished = [r for r in survey_runs(stored) + [r for r in stored if r["label"] == "Dense"]
                if r["status"] == "finished"]
    counts = Counter(r["config"]["precision"] for r in finished)
    if not counts:
        return []
    chosen = max(sorted(counts, key=lambda p: p != "fp32"), key=counts.get)
    return [r for r in finished if r["config"]["precision"] == chosen]


def stored_benchmark(name: str, compute, preset: str,
                     results: str | os.PathLike = "results") -> dict:
    """The stored result of a benchmark (``results/<preset>/bench/<name>.json``), or, when there is
    none, ``compute()`` (a JSON-ready dict) stored there with the machine it ran on. Delete the
    file to measure again; a damaged one (not JSON, or without its result) is named in a warning
    and measured again."""
    path = results_dir(results) / preset / "bench" / f"{name}.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if isinstance(stored, dict) and isinstance(stored.get("result"), dict):
                return stored
            problem = "it holds no result"
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            problem = str(error)
        import warnings

        warnings.warn(f"the stored benchmark {path} is damaged ({problem}); measuring it again",
                      stacklevel=2)
    device = device_of()
    stored = {"name": name, "preset": preset, "result": compute(),
              "environment": {"device_name": device_name(device), "torch": torch.__version__,
                              "threads": torch.get_num_threads()}}
    write_json(path, stored)
    return stored
