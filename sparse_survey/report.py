"""Tables from stored run records, beside the survey's own numbers (the figures that draw the
same cells are :mod:`sparse_survey.figures`).

Every number here is computed from records written by :mod:`sparse_survey.experiment`; the only
numbers not computed are the survey's, read from ``survey_tables.json`` (transcribed from the
poster, with its caveats) and always labelled as the survey's. :func:`summary` and :func:`table`
have the survey's shape (compression rows, one column per method, the IMP columns last); the
report prints them turned on their side to fit a page (:func:`beside_survey`). A cell is the mean
over the seeds stored for it, with their standard deviation and number when more than one seed
finished (:data:`CELL_NOTE`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import dynamic, pruners
from .experiment import RunConfig, preset_precision
from .files import atomic_write
from .profile import contended as profile_contended

MIB, GB = 2**20, 1e9
ONE_SHOT = [method.label for method in pruners.METHODS.values()]  # the survey's column order
IMP_LABEL = re.compile(r"IMP \((\d+) Iters?")  # IMP's column, variants and controls
TRAIN_MODE_BN = [RunConfig.from_preset("smoke", name, 1, bn_mode="train").label
                 for name, method in pruners.METHODS.items() if method.needs_data]
SURVEY_IMP = [RunConfig.from_preset("smoke", "imp", 1, iterations=k).label
              for k in pruners.SURVEY_IMP_ITERATIONS]
# The sparse-from-scratch methods (SET, RigL), the third family beside the survey's two.
DYNAMIC = [RunConfig.from_preset("smoke", name, 1).label for name in dynamic.METHODS]


class Table(NamedTuple):
    """One of the report's tables: its title, the value it shows from a finished record, the
    decimals it prints, its unit (as the survey's transcription writes units), the survey's table
    it mirrors (if any), for a timing, where the clock of that timing is in a record (section
    and :func:`sparse_survey.profile.timed` name), so that a cell timed while other work shared
    the machine can be marked, whether the number is the machine's as much as the model's
    (the CPU-side times and memory: see :func:`device_kind`), and why no run may have measured
    it."""

    title: str
    value: Callable[[dict], float]
    decimals: int
    unit: str
    survey: str | None = None
    clock: tuple[str, str] | None = None
    of_the_machine: bool = False
    unmeasured: str | None = None


def _metric(key: str, scale: float = 1.0, section: str = "metrics") -> Callable[[dict], float]:
    def value(record: dict) -> float:
        found = record.get(section, {}).get(key)
        return math.nan if found is None else found * scale

    return value


TABLES: dict[str, Table] = {
    "accuracy": Table("Top-1 test accuracy (%), final epoch", _metric("test_acc", 100), 2, "%",
                      "table1"),
    "inference_time": Table("Inference time on the test set (s)", _metric("time_s"), 3, "s",
                            "table2", clock=("metrics", "time_passes"), of_the_machine=True),
    "flops": Table("Remaining FLOPs fraction", _metric("flops_fraction"), 4, "fraction",
                   "table3"),
    "params": Table("Remaining parameter fraction (all parameters)",
                    _metric("remaining_fraction"), 4, "fraction"),
    "cpu_memory": Table("Peak CPU memory during inference, resident set (MiB)",
                        _metric("cpu_rss_peak_bytes", 1 / MIB), 1, "MiB", "table4",
                        of_the_machine=True,
                        unmeasured="the smoke preset, for tests, does not measure it"),
    "gpu_allocated": Table("Peak GPU memory allocated during inference (GB)",
                           _metric("gpu_peak_allocated_bytes", 1 / GB), 3, "GB", "table5",
                           unmeasured="it needs a CUDA device"),
    "gpu_reserved": Table("Peak GPU memory reserved during inference (GB)",
                          _metric("gpu_peak_reserved_bytes", 1 / GB), 3, "GB", "table6",
                          unmeasured="it needs a CUDA device"),
    "prune_time": Table("Time to score and prune at initialization (s)",
                        _metric("prune_s", section="timings"), 2, "s",
                        clock=("timings", "prune"), of_the_machine=True),
}
CONTENDED, UNKNOWN = "†", "?"
MARK_NOTES = {
    CONTENDED: (f"{CONTENDED}: a run of this cell shared the machine with other work while it "
                "was timed (its threads waited for a CPU for more than a tenth of the time), so "
                "the number overstates the method's cost."),
    UNKNOWN: f"{UNKNOWN}: the record predates the measurement of waiting time.",
}
CELL_NOTE = ("A cell is the mean over the seeds stored for it: \"a ± s (n)\" is the mean a and "
             "the sample standard deviation s over n seeds; a cell without them holds one seed.")


def notes(table: pd.DataFrame) -> list[str]:
    """The notes a formatted table needs: :data:`CELL_NOTE` when a cell holds several seeds,
    and the note of each timing mark (:data:`MARK_NOTES`) that a cell carries."""
    cells = [str(v) for v in table.to_numpy().ravel()]
    found = [CELL_NOTE] if any("±" in c for c in cells) else []
    return found + [note for mark, note in MARK_NOTES.items() if any(mark in c for c in cells)]


def contended(record: dict, name: str) -> bool | None:
    """Whether the timing that table ``name`` shows was taken while other work shared the
    machine (None: unknown; False for tables that are not timings)."""
    clock = TABLES[name].clock
    if clock is None:
        return False
    section, phase = clock
    return profile_contended(record.get(section, {}), phase,
                             record.get("environment", {}).get("cpus"))


def survey_runs(records: list[dict]) -> list[dict]:
    """The records of the survey's own columns (the five one-shot methods and IMP with 2, 3 and
    4 rounds, each with the survey's settings) and, as columns of their own, the methods that
    score on data scored with BatchNorm in train mode as their authors' code does
    (:data:`TRAIN_MODE_BN`, the one hidden choice the ablations show to move the results) and
    the methods that train sparse from scratch (:data:`DYNAMIC`). Without the controls (the
    LTH and sanity-check notebooks show them), IMP with other round counts (the sanity checks'
    one round) and the other variants (the ablations notebook)."""
    return [r for r in records if r["label"] in (*ONE_SHOT, *SURVEY_IMP, *TRAIN_MODE_BN, *DYNAMIC)]


class AtPrecision(NamedTuple):
    """A preset's records at one precision, and what a reader needs when none of them finished."""

    precision: str  # "fp32" or "bf16"
    records: list[dict]  # those that ran at it
    others: list[str]  # the other precisions that hold finished records, for a hint


def at_precision(records: list[dict], preset: str, precision: str = "auto") -> AtPrecision:
    """The records of ``preset`` that ran at ``precision``: ``"fp32"``, ``"bf16"``, or
    ``"auto"``, the precision the preset's runs take on this machine
    (:func:`~sparse_survey.experiment.preset_precision`). One precision at a time, because a
    table must not average a bf16 run with an fp32 run of the same cell (:func:`frame` refuses)."""
    chosen = preset_precision(preset, asked=precision)
    others = {r["config"]["precision"] for r in records if r["status"] == "finished"} - {chosen}
    return AtPrecision(chosen, [r for r in records if r["config"]["precision"] == chosen],
                       sorted(others))


def kind_of_device(record: dict) -> str:
    """``"cpu"`` or ``"cuda"``: the kind of device a run trained and was profiled on."""
    return str(record.get("environment", {}).get("device", "cpu")).split(":")[0]


DEVICE_WORD = {"cpu": "CPU", "cuda": "GPU"}
"""How the tables' notes name a kind of device (:func:`kind_of_device`)."""


def device_kind(records: list[dict]) -> str | None:
    """The kind of device (:func:`kind_of_device`) that made most of the finished records (the
    CPU on a tie): the tables of times and memory (``Table.of_the_machine``) show only its runs,
    since a test-set pass timed on a GPU and one timed on a 2-core CPU differ some fifty-fold
    and are no two seeds of one cell. None without a finished record."""
    kinds = Counter(kind_of_device(r) for r in records if r["status"] == "finished")
    return max(sorted(kinds), key=kinds.get) if kinds else None


def left_out(records: list[dict]) -> Counter:
    """The finished runs whose times and memory the tables leave out (see :func:`device_kind`),
    counted by machine (:func:`host`)."""
    kind = device_kind(records)
    return Counter(host(r) for r in records
                   if r["status"] == "finished" and kind_of_device(r) != kind)


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished run: method label, compression, seed, every table's value and, per
    timing table, whether its timing was contended (column ``"<table> contended"``). Times and
    memory are NaN for a run made on another kind of device than most (:func:`device_kind`). A run
    stored twice (the same label, compression and seed, e.g. once under an earlier key) counts
    once, so seeds are never counted double. A cell (label and compression) stored at two
    precisions (a preset whose precision is the machine's, run on two machines) is a
    ValueError, so that neither is averaged with the other as a seed nor dropped as a repeat:
    choose one first (``report --precision``, :func:`~sparse_survey.tutorial.stored_runs`)."""
    timed = [name for name, t in TABLES.items() if t.clock]
    kind = device_kind(records)
    rows = []
    for r in records:
        if r["status"] != "finished":
            continue
        row = {"label": r["label"], "compression": r["config"]["compression"],
               "seed": r["config"]["seed"], "precision": r["config"]["precision"]}
        alike = kind_of_device(r) == kind
        row.update({name: t.value(r) if alike or not t.of_the_machine else math.nan
                    for name, t in TABLES.items()})
        row.update({f"{name} contended": contended(r, name) for name in timed})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["label", "compression", "seed", "precision", *TABLES,
                                     *(f"{name} contended" for name in timed)])
    precisions = df.groupby(["label", "compression"])["precision"].agg(lambda p: sorted(set(p)))
    for (label, compression), found in precisions.items():
        if len(found) > 1:
            raise ValueError(f"the records hold {label} at compression {compression:g} in "
                             f"{' and '.join(found)}: a cell holds one precision; choose the "
                             "records of one (report --precision)")
    return df.drop_duplicates(["label", "compression", "seed"], keep="last").drop(
        columns="precision")


def first_line(text: str | None) -> str:
    """The first non-empty line of an error message (a record's ``error``)."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def label_key(label: str) -> str:
    """A method label as a key for names: "IMP (2 Iters)" -> "imp2iters"."""
    return "".join(ch for ch in label.lower() if ch.isalnum())


def ordered_labels(labels) -> list[str]:
    """Method labels in the survey's order: the one-shot methods as registered, each followed by
    its variants, then IMP by rounds (its variants and controls after it), then the methods that
    train sparse from scratch (:data:`DYNAMIC`, as registered), then the rest."""
    def rank(label: str) -> tuple:
        base = next((i for i, name in enumerate(ONE_SHOT)
                     if label == name or label.startswith((f"{name} (", f"{name}, "))), None)
        if base is not None:
            return 0, base, label != ONE_SHOT[base], label
        imp = IMP_LABEL.match(label)
        if imp:
            return 1, int(imp.group(1)), label != f"{imp.group(0)})", label
        if label in DYNAMIC:
            return 2, DYNAMIC.index(label), False, label
        return 3, 0, False, label

    return sorted(set(labels), key=rank)


def nearest_compression(records: list[dict], compression: float) -> float:
    """The compression of a finished record nearest to ``compression`` (for a picture asked for
    at a compression that was not run)."""
    finished = {r["config"]["compression"] for r in records if r["status"] == "finished"}
    if not finished:
        raise ValueError("no finished run to draw")
    return min(finished, key=lambda c: abs(c - compression))


def summary(records: list[dict], name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Mean, standard deviation (ddof 1) and count over seeds: compression x method."""
    df = frame(records)
    grouped = df.groupby(["compression", "label"])[name]
    columns = ordered_labels(df["label"].unique())
    return tuple(s.unstack("label").reindex(columns=columns)
                 for s in (grouped.mean(), grouped.std(), grouped.count()))


def table(records: list[dict], name: str) -> pd.DataFrame:
    """The formatted table: ``mean`` or, when n >= 2 seeds finished, ``mean ± std (n)`` (see
    :data:`CELL_NOTE`); for a timing, a cell is marked with :data:`CONTENDED` or :data:`UNKNOWN`
    (see :data:`MARK_NOTES`)."""
    mean, std, count = summary(records, name)
    decimals = TABLES[name].decimals
    marks = {}
    if TABLES[name].clock:
        flags = frame(records).groupby(["compression", "label"])[f"{name} contended"]
        marks = {key: CONTENDED if any(v is True for v in group) else
                 UNKNOWN if any(v is None for v in group) else "" for key, group in flags}

    def cell(c, k) -> str:
        m, s, n = mean.at[c, k], std.at[c, k], count.at[c, k]
        if not n or (isinstance(m, float) and math.isnan(m)):
            return "n/a"
        return (f"{m:.{decimals}f}" + (f" ± {s:.{decimals}f} ({int(n)})" if n > 1 else "")
                + marks.get((c, k), ""))

    return pd.DataFrame([[cell(c, k) for k in mean] for c in mean.index], index=mean.index,
                        columns=mean.columns)


def uncontended(records: list[dict], name: str) -> list[dict]:
    """The records whose timing for table ``name`` is not known to be contended."""
    return [r for r in records if r["status"] != "finished" or contended(r, name) is not True]


@functools.cache
def survey_source() -> dict:
    """``survey_tables.json``: the survey's tables as transcribed from its poster, with each
    table's unit and uncertain cells (read once)."""
    return json.loads(resources.files("sparse_survey").joinpath("survey_tables.json").read_text())


def survey_numbers(name: str) -> pd.DataFrame | None:
    """The survey's own table matching ours, as printed in the poster (None if it has none)."""
    survey_table = TABLES[name].survey
    if survey_table is None:
        return None
    source = survey_source()
    t = source["tables"][survey_table]
    df = pd.DataFrame.from_dict(t["rows"], orient="index", columns=source["methods"],
                                dtype=float)
    df.index = [float(c) for c in df.index]
    df.index.name = "compression"
    return df


def survey_unit(name: str) -> str | None:
    """The unit of the survey's table matching ours, as transcribed (None if it has none)."""
    survey_table = TABLES[name].survey
    return None if survey_table is None else survey_source()["tables"][survey_table]["unit"]


def units_agree(name: str) -> bool:
    """Whether our table ``name`` and the survey's are in the same unit, so that their
    difference means something (the survey's CPU-memory table states none)."""
    unit = survey_unit(name)
    return unit is not None and unit.split()[0] == TABLES[name].unit


def comparison(records: list[dict], name: str) -> pd.DataFrame | None:
    """Ours (the mean over seeds) beside the survey's, per method: ``ours``, ``survey`` and,
    where the units agree (:func:`units_agree`), ``diff`` = ours - survey."""
    survey = survey_numbers(name)
    if survey is None:
        return None
    mean, _, _ = summary(records, name)
    columns = {}
    for method in ordered_labels(set(mean.columns) & set(survey.columns)):
        ours = mean[method].reindex(survey.index)
        columns[(method, "ours")] = ours
        columns[(method, "survey")] = survey[method]
        if units_agree(name):
            columns[(method, "diff")] = ours - survey[method]
    return pd.DataFrame(columns)


def survey_gaps(records: list[dict], name: str) -> pd.Series:
    """|ours - survey| per cell of table ``name`` (ours: the mean over seeds), over the cells
    both have: empty where the survey has no such table, states another unit
    (:func:`units_agree`), or no finished run fills a cell of it."""
    if not units_agree(name) or not any(r["status"] == "finished" for r in records):
        return pd.Series(dtype=float)
    compared = comparison(records, name)
    if not len(compared.columns):  # no method of the survey's among the records
        return pd.Series(dtype=float)
    return compared.xs("diff", axis=1, level=1).stack().dropna().abs()


def beside_survey(records: list[dict], name: str,
                  scales: dict[str, list[dict]] | None = None) -> pd.DataFrame | None:
    """Ours and the survey's table ``name`` in one table narrow enough for a page: a row per
    method with our formatted cells (:func:`table`), under it, for a method the survey has, a
    row of the survey's numbers and, where the units agree, a row of ours - survey (of the
    means); a column per compression the survey has. ``scales`` adds the runs of other presets,
    by the label their rows take (the results chapter shows the ``survey`` preset, the full-width
    network, beside ``cpu-full``'s): under each of our methods that has finished runs there, a
    row "↳ <label>" of their formatted cells and, where the units agree, "↳ <label> − survey".
    None where the survey has no such table."""
    compared = comparison(records, name)
    if compared is None:
        return None
    ours, decimals = table(records, name), TABLES[name].decimals
    others = {label: (table(runs, name), comparison(runs, name))
              for label, runs in (scales or {}).items()
              if any(r["status"] == "finished" for r in runs)}

    def numbers(values: pd.Series, sign: str = "") -> list[str]:
        return ["n/a" if math.isnan(v) else f"{v:{sign}.{decimals}f}".replace("-", "−")
                for v in values]

    def cells(formatted: pd.DataFrame, method: str) -> list[str]:
        return [formatted.at[c, method] if c in formatted.index else "n/a"
                for c in compared.index]

    labels, rows = [], []
    for method in ours.columns:  # the survey's methods and our variants of them, in order
        labels.append(method)
        rows.append(cells(ours, method))
        if (method, "survey") in compared:
            labels.append("↳ survey")
            rows.append(numbers(compared[(method, "survey")]))
            if (method, "diff") in compared:
                labels.append("↳ ours − survey")
                rows.append(numbers(compared[(method, "diff")], "+"))
        for label, (formatted, against) in others.items():
            if method not in formatted.columns:
                continue
            labels.append(f"↳ {label}")
            rows.append(cells(formatted, method))
            if (method, "diff") in against:
                labels.append(f"↳ {label} − survey")
                rows.append(numbers(against[(method, "diff")].reindex(compared.index), "+"))
    return pd.DataFrame(rows, index=pd.Index(labels, name="method"),
                        columns=[f"c = {c:g}" for c in compared.index])


def ordering_agreement(records: list[dict], name: str = "accuracy") -> pd.DataFrame | None:
    """Per compression, the methods ranked by our mean and by the survey's, and the fraction of
    method pairs that both order the same way (1: identical order, 0: reversed; pairs tied in
    the survey, e.g. its several 10 % cells, are left out)."""
    survey = survey_numbers(name)
    if survey is None:
        return None
    mean = summary(records, name)[0]
    rows = {}
    for c in survey.index.intersection(mean.index):
        methods = [m for m in ordered_labels(set(mean.columns) & set(survey.columns))
                   if not (math.isnan(mean.at[c, m]) or math.isnan(survey.at[c, m]))]
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]
                 if survey.at[c, a] != survey.at[c, b]]
        same = sum((mean.at[c, a] - mean.at[c, b]) * (survey.at[c, a] - survey.at[c, b]) > 0
                   for a, b in pairs)
        rows[c] = {"ours, best first": " > ".join(sorted(methods, key=lambda m: -mean.at[c, m])),
                   "survey, best first": " > ".join(sorted(methods,
                                                           key=lambda m: -survey.at[c, m])),
                   "pairs ordered alike": same / len(pairs) if pairs else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("compression")


def collapsed_layers(records: list[dict]) -> pd.DataFrame:
    """Layer collapse: how many prunable layers a method left with no weight at all, per
    compression (mean over seeds). A collapsed layer cuts the network: it can only guess."""
    rows = [{"label": r["label"], "compression": r["config"]["compression"],
             "collapsed": sum(d == 0 for d in r["layer_densities"].values())}
            for r in records if r["status"] == "finished"]
    df = pd.DataFrame(rows, columns=["label", "compression", "collapsed"])
    out = df.groupby(["compression", "label"])["collapsed"].mean().unstack("label")
    return out.reindex(columns=ordered_labels(df["label"].unique()))


def depth_profile(records: list[dict], compression: float, last: int = 4) -> pd.DataFrame:
    """Per method at one compression: the density of the first ``last`` prunable layers, of the
    last ``last``, and their ratio (below 1: the method prunes the late layers harder)."""
    rows = {}
    for method in ordered_labels({r["label"] for r in records}):
        runs = [r["layer_densities"] for r in records if r["label"] == method
                and r["status"] == "finished"
                and math.isclose(r["config"]["compression"], compression)]
        if not runs:
            continue
        density = np.mean([list(run.values()) for run in runs], axis=0)
        early, late = float(density[:last].mean()), float(density[-last:].mean())
        rows[method] = {f"first {last} layers": early, f"last {last} layers": late,
                        "late / early": late / early if early else math.inf}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def effects(records: list[dict], baseline: str, variant: str,
            name: str = "accuracy") -> pd.DataFrame:
    """What a hidden choice moves: per compression, the mean of table ``name`` for the
    ``baseline`` label and the ``variant`` label, their difference (variant - baseline), and the
    seed-to-seed spread beside it (the larger standard deviation over seeds of the two; NaN with
    one seed each) and the seeds behind each mean."""
    mean, std, count = summary(records, name)
    rows = {}
    for c in mean.index:
        if baseline not in mean or variant not in mean or \
                math.isnan(mean.at[c, baseline]) or math.isnan(mean.at[c, variant]):
            continue
        rows[c] = {baseline: mean.at[c, baseline], variant: mean.at[c, variant],
                   "effect": mean.at[c, variant] - mean.at[c, baseline],
                   "seed spread": std.loc[c, [baseline, variant]].max(),
                   "seeds": f"{count.at[c, baseline]} / {count.at[c, variant]}"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("compression")


def collapsed_cells(records: list[dict]) -> set[tuple[float, str]]:
    """The cells (compression, label) in which every finished run left a prunable layer with no
    weight at all (layer collapse): such a network can only predict one class, whatever its
    seed, so its seeds agree by construction."""
    collapsed: dict[tuple[float, str], bool] = {}
    for r in records:
        if r["status"] == "finished":
            cell = (r["config"]["compression"], r["label"])
            empty = any(d == 0 for d in r["layer_densities"].values())
            collapsed[cell] = collapsed.get(cell, True) and empty
    return {cell for cell, every in collapsed.items() if every}


def seed_spread(records: list[dict], name: str = "accuracy", label: str | None = None,
                compression: float | None = None) -> float:
    """The typical seed-to-seed standard deviation of table ``name``: the median over the cells
    (method and compression) that finished with two seeds or more, or, given a ``label`` and a
    ``compression``, the standard deviation of that one cell; NaN where no such cell is.

    The median leaves out the :func:`collapsed_cells`: their spread of zero measures the
    collapse, not the noise of a seed, and would make every effect look larger than it is."""
    _, std, count = summary(records, name)
    spreads = std.where(count >= 2)
    if label is not None:
        if label not in spreads or compression not in spreads.index:
            return math.nan
        spreads = spreads.loc[[compression], [label]]
    else:
        for c, collapsed_label in collapsed_cells(records):
            spreads.at[c, collapsed_label] = math.nan
    spreads = spreads.stack().dropna()
    return float(spreads.median()) if len(spreads) else math.nan


def matters(effect: float, spread: float) -> bool:
    """The book's one rule for an effect: it moves the numbers when it is more than twice the
    seed-to-seed spread it is judged by (never where there is no spread to judge it by)."""
    return abs(effect) > 2 * spread  # False for a NaN spread


def verdict(effect: float, spread: float) -> str:
    """One sentence on an effect beside the seed-to-seed spread, by :func:`matters`."""
    size = f"{effect:+.1f} points"
    if math.isnan(spread):
        return f"{size}, with no seed spread to compare it with"
    if matters(effect, spread):
        return f"{size}, more than twice the seed-to-seed spread ({spread:.1f}): it matters"
    return f"{size}, within twice the seed-to-seed spread ({spread:.1f}): it does not matter here"


def imp_rounds(records: list[dict]) -> pd.DataFrame:
    """IMP's rounds, one row per finished run and round (round 0 is the dense training): the
    density, the remaining FLOPs, the test accuracy (%) and the training's seconds."""
    rows = [{"compression": r["config"]["compression"], "round": row["round"],
             "density": row["density"], "remaining FLOPs": row["remaining_flops"],
             "test accuracy (%)": 100 * row["test_acc"], "training (s)": row["seconds"]}
            for r in records if r["status"] == "finished" for row in r["imp_rounds"]]
    return pd.DataFrame(rows).set_index("compression")


def markdown(df: pd.DataFrame, decimals: int = 2) -> str:
    """A GitHub-flavoured markdown table (the index becomes the first column)."""
    def text(v) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.{decimals}f}"
        return str(v)

    header = [df.index.name or ""] + [" ".join(c) if isinstance(c, tuple) else str(c)
                                      for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, *row in df.itertuples(name=None):  # keeps each column's type: counts stay ints
        lines.append("| " + " | ".join([f"{index:g}" if isinstance(index, float) else str(index)]
                                       + [text(v) for v in row]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- the report

def host(record: dict) -> str:
    """The machine a run was made on, as a table names it: the device's name and, for a CPU
    whose record says, the vector instructions torch dispatched there (CPUs of one name can
    differ in them, and with them in the speed of every kernel). Trademark signs are left out:
    "Intel(R) Xeon(R) Processor" is named "Intel Xeon Processor"."""
    ran = record.get("environment", {})
    name = re.sub(r"\((R|TM)\)", "", ran.get("device_name", "?"), flags=re.IGNORECASE)
    capability = ran.get("cpu_capability")
    on_cpu = str(ran.get("device", "cpu")).startswith("cpu")
    return f"{name} with {capability}" if on_cpu and capability else name


def scale(records: list[dict]) -> str:
    """What the records' runs trained, in one line for the top of a table: model and width,
    data, epochs and batch, the precision they trained in, the machines (:func:`host`; with
    how many runs each, where there are several), and how many seeds a cell holds."""
    finished = [r for r in records if r["status"] == "finished"]
    if not finished:
        return "no finished run"

    def said(values) -> str:
        return ", ".join(sorted({str(v) for v in values}))

    configs = [r["config"] for r in finished]
    limits = {c["limit_per_class"] for c in configs}
    images = ("all training images" if limits == {None}
              else f"{said(limits)} training images per class")
    recipes = said(f"{c['recipe']['epochs']} epochs at batch {c['recipe']['batch_size']}"
                   for c in configs)
    seeds = summary(finished, "accuracy")[2].stack()
    seeds = seeds[seeds > 0]
    fewest, most = int(seeds.min()), int(seeds.max())
    hosts = Counter(host(r) for r in finished)
    machines = (next(iter(hosts)) if len(hosts) == 1
                else ", ".join(f"{h} ({n} run{'s' * (n != 1)})" for h, n in sorted(hosts.items())))
    return (f"{said(c['model'].upper() for c in configs)} at width "
            f"{said(format(c['width'], 'g') for c in configs)}, "
            f"{said(r['data'] for r in finished)}, {images}, {recipes}, "
            f"{said(c['precision'] for c in configs)}, on {machines}; seeds per "
            f"cell: {fewest}" + (f" to {most}" if most > fewest else ""))


def tables_markdown(records: list[dict], heading: str = "###") -> str:
    """Every table as markdown under a ``heading`` of its title and the scale of our runs
    (:func:`scale`): a row per method and a column per compression (narrow enough for a page),
    ours beside the survey's where it has the table
    (:func:`beside_survey`, its unit and uncertain cells said), then the notes its cells need
    (:func:`notes`). A table no run measured (GPU memory on a CPU, CPU memory at the smoke
    preset) shows the survey's alone, saying why."""
    survey = survey_source()
    other_devices = left_out(records)
    machine_note = other_devices and (
        f"Runs made on a {DEVICE_WORD.get(device_kind(records), device_kind(records))} only: "
        "this table leaves out "
        + ", ".join(f"the {n} run{'s' * (n != 1)} made on {h}"
                    for h, n in sorted(other_devices.items()))
        + " (the accuracy and FLOPs tables count them), since a time or a memory measured on "
        "another kind of device is no seed of the same cell.")
    parts = []
    for name, t in TABLES.items():
        ours = table(records, name)
        parts += [f"{heading} {t.title}", f"*Ours: {scale(records)}.*"]
        printed = survey["tables"][t.survey] if t.survey else None
        if printed is None:
            measured = ours.T[~(ours.T == "n/a").all(axis=1)]  # e.g. IMP has no prune time
            parts.append(markdown(measured.rename_axis("method")
                                  .rename(columns=lambda c: f"c = {c:g}")))
        else:
            doubtful = (f"; its uncertain cells: {', '.join(printed['uncertain'])}"
                        if printed["uncertain"] else "")
            source = (f"the survey's {t.survey} as transcribed from its poster (unit: "
                      f"{printed['unit']}{doubtful})")
            if (ours == "n/a").all().all():
                survey_table = survey_numbers(name).T.rename_axis("method")
                why = f" ({t.unmeasured})" if t.unmeasured else ""
                parts += [f"No run here measured this{why}; {source}:",
                          markdown(survey_table.rename(columns=lambda c: f"c = {c:g}"),
                                   t.decimals)]
                continue
            difference = ("and ours − survey (of the means)" if units_agree(name) else
                          "and no difference, since the survey states no unit")
            parts += [f"Each method's row is ours; under it {source} {difference}.",
                      markdown(beside_survey(records, name))]
        parts += notes(ours)
        if t.of_the_machine and machine_note:
            parts.append(machine_note)
    return "\n\n".join(parts)


def write_report(records: list[dict], out: str | Path, title: str,
                 figure_compression: float = 1.0) -> Path:
    """Write ``report.md`` (every table, ours and beside the survey's) and the figures, for the
    runs of :func:`survey_runs`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = survey_runs(records)
    data = sorted({r.get("data", "?") for r in records if r["status"] == "finished"})
    seeds = sorted({r["config"]["seed"] for r in records})
    lines = [f"# {title}", "",
             f"{len(records)} stored runs ({sum(r['status'] == 'finished' for r in records)} "
             f"finished), seeds {seeds}, data: {', '.join(data)}. Cells: mean ± std over seeds.",
             ""]
    lines += [tables_markdown(records, heading="##"), ""]
    failures = [r for r in records if r["status"] != "finished"]
    if failures:
        lines += ["## Runs that did not finish", ""]
        lines += [f"- {r['label']} at compression {r['config']['compression']:g}, seed "
                  f"{r['config']['seed']}: {r['status']}: {first_line(r['error'])}"
                  for r in failures]
        lines.append("")
    if any(r["status"] == "finished" for r in records):  # figures at the nearest compression
        from .figures import accuracy_figure, layer_density_figure, weight_histogram_figure

        figure_compression = nearest_compression(records, figure_compression)
        accuracy_figure(records, out / "accuracy")
        layer_density_figure(records, figure_compression, out / "layer_density")
        lines += ["## Figures", "", "![accuracy against compression](accuracy.png)", "",
                  "![per-layer density](layer_density.png)", ""]
        for r in records:
            if (r["status"] == "finished" and r["config"]["seed"] == seeds[0]
                    and math.isclose(r["config"]["compression"], figure_compression)):
                stem = "weights_" + r["label"].lower().replace(" ", "_").replace("(", "") \
                    .replace(")", "")
                weight_histogram_figure(r, out / stem)
                lines += [f"![weights of {r['label']}]({stem}.png)", ""]
    return atomic_write(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines)))
