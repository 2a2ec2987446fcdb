"""The book's figures, drawn from stored run records (see :mod:`sparse_survey.report` for the
tables and the cells they share).

Every figure is made for the book's 688-pixel column: at most 8 inches wide, text of 10 points,
legends beside or below the data rather than on it, one look per method in every figure
(:data:`METHOD_LOOKS`), and a title that names the scale of its runs (:func:`scale_label`: the
preset and the precision they trained in). A function returns its figure; given a path it also
writes it as PNG and SVG and closes it.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .files import atomic_write
from .report import IMP_LABEL, ONE_SHOT, TABLES, contended, ordered_labels, summary, survey_numbers

# One look per method in every figure of the book (colour and marker), so that a reader learns
# it once: the survey's one-shot methods, IMP by its rounds, the references after training, the
# sparse-from-scratch methods.
METHOD_LOOKS = {
    "Dense": ("#000000", "o"), "Rand": ("#7f7f7f", "o"), "Mag": ("#1f77b4", "s"),
    "SNIP": ("#ff7f0e", "^"), "GraSP": ("#2ca02c", "v"), "SynFlow": ("#d62728", "D"),
    "IMP (1 Iter)": ("#c5b0d5", "p"), "IMP (2 Iters)": ("#9467bd", "P"),
    "IMP (3 Iters)": ("#8c564b", "X"), "IMP (4 Iters)": ("#e377c2", "*"),
    "fine-tuned": ("#008080", "d"), "rewound to a step": ("#b8860b", "H"),
    "SET": ("#17becf", "<"), "RigL": ("#bcbd22", ">"), "Static": ("#393b79", "h"),
}
# A control of a method's mask keeps the method's colour, with a line and a marker of its own
# (thin markers no method uses), so that four controls in one figure read apart.
CONTROL_LOOKS = {"layerwise shuffle": ((0, (4, 2)), "x"), "random reinit": ("-.", "+"),
                 "inverted scores": ((0, (9, 3)), "1"),
                 "inverted scores per layer": (":", "2")}
# Text sizes that stay legible when a figure of at most 8 inches fills the book's column.
BOOK_STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
              "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9}
COMPRESSION_AXIS = r"compression $c$ (density $10^{-c}$)"
BAND_NOTE = "band: ±1 std over seeds"


def book_style(draw: Callable) -> Callable:
    """Draw a figure with :data:`BOOK_STYLE`'s text sizes (they apply as its text is made)."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        import matplotlib.pyplot as plt

        with plt.rc_context(BOOK_STYLE):
            return draw(*args, **kwargs)

    return drawn


def method_style(label: str) -> dict:
    """How a method's series is drawn in every figure (:data:`METHOD_LOOKS`): its colour and
    marker; a solid line for the method as it is meant, dashed for a variant of its hidden
    choices ("SNIP (train-mode BN)"), and the method's colour with each control's own line and
    marker (:data:`CONTROL_LOOKS`) for a control of its mask ("Mag, layerwise shuffle"). IMP
    rewound to a training step, or not rewound (fine-tuned), are methods of their own here."""
    method, _, control = label.partition(", ") if label.endswith(
        tuple(f", {c}" for c in CONTROL_LOOKS)) else (label, "", "")
    rounds = IMP_LABEL.match(method)
    if rounds and "fine-tuned" in method:
        base = "fine-tuned"
    elif rounds and "rewind to step" in method:
        base = "rewound to a step"
    elif rounds:
        base = f"{rounds.group(0)})"
    else:
        base = method.split(" (")[0]
    color, marker = METHOD_LOOKS.get(base, ("#aaaaaa", "o"))
    variant = not (method in (base, f"{base} (ERK)") or base in ("fine-tuned",
                                                                 "rewound to a step"))
    if control:
        line, marker = CONTROL_LOOKS[control]
    else:
        line = "--" if variant else "-"
    return {"color": color, "marker": marker, "linestyle": line}


def scale_label(records: list[dict]) -> str:
    """The scale of the records' runs, as a figure title names it: "cpu-full preset, fp32"
    (each preset and precision among them, joined by "and" where they are several)."""
    configs = [r["config"] for r in records if r.get("status") == "finished"] or \
        [r["config"] for r in records]
    if not configs:
        return "no runs"
    presets = " and ".join(sorted({c["preset"] for c in configs}))
    precisions = " and ".join(sorted({c.get("precision", "fp32") for c in configs}))
    return f"{presets} preset, {precisions}"


def _one_shot(label: str) -> bool:
    """Whether a label is a method pruned once at initialization, or its variant or control."""
    return any(label == name or label.startswith((f"{name} (", f"{name}, "))
               for name in ONE_SHOT)


@book_style
def accuracy_figure(records: list[dict], path: Path | None = None, with_survey: bool = True):
    """Accuracy against compression: one line per method with a ±1 std band over seeds, and the
    survey's points as open markers of the same colour. Where both kinds are drawn, the methods
    pruned at initialization and the others (IMP, training sparse from scratch, references)
    get a panel each, one above the other on one compression axis, so that no panel holds
    more than a handful of lines; each panel's legend is beside it."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    mean, std, count = summary(records, "accuracy")
    survey = survey_numbers("accuracy") if with_survey else None
    groups = [[m for m in mean.columns if _one_shot(m)],
              [m for m in mean.columns if not _one_shot(m)]]
    groups = [g for g in groups if g] or [[]]
    fig, axes = plt.subplots(len(groups), 1, figsize=(7.5, 3.4 * len(groups) + 0.4),
                             sharex=True, squeeze=False)
    drawn = sorted(set(mean.index) | (set(survey.index) if survey is not None else set()))
    for ax, methods in zip(axes[:, 0], groups):
        for method in methods:
            style = method_style(method)
            m, s = mean[method].dropna(), std[method].reindex(mean[method].dropna().index)
            ax.plot(m.index, m, label=method, markersize=5, **style)
            ax.fill_between(m.index, m - s.fillna(0), m + s.fillna(0), color=style["color"],
                            alpha=0.15, linewidth=0)
            if survey is not None and method in survey:
                ax.plot(survey.index, survey[method], style["marker"], mfc="none",
                        color=style["color"], alpha=0.8)
        ax.set_xscale("symlog", linthresh=0.05)
        ax.set_xticks(drawn, [f"{c:g}" for c in drawn])  # each compression named
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_ylabel("top-1 test accuracy (%)")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if survey is not None and any(m in survey for m in methods):
            handles.append(Line2D([], [], marker="o", mfc="none", color="#555555",
                                  linestyle="none", label="the survey's number (open)"))
        if (count[methods] > 1).any().any():
            handles.append(Patch(color="#555555", alpha=0.15, label=BAND_NOTE))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        if len(groups) > 1:
            ax.set_title("pruned at initialization" if methods is groups[0] else
                         "IMP and the other methods")
    axes[-1][0].set_xlabel(COMPRESSION_AXIS)
    fig.suptitle(f"Top-1 accuracy after pruning, {scale_label(records)}")
    return _save(fig, path)


@book_style
def layer_density_figure(records: list[dict], compression: float, path: Path | None = None):
    """Per-layer density of each method's network at one compression (the survey's Figure 1),
    averaged over seeds."""
    import matplotlib.pyplot as plt

    chosen = [r for r in records if r["status"] == "finished"
              and math.isclose(r["config"]["compression"], compression)]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method in ordered_labels({r["label"] for r in chosen}):
        runs = [r["layer_densities"] for r in chosen if r["label"] == method]
        layers = list(runs[0])
        density = np.mean([[run[n] for n in layers] for run in runs], axis=0)
        ax.plot(range(1, len(layers) + 1), density, label=method, markersize=5,
                **method_style(method))
    ax.set_yscale("log")
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xlabel("prunable layer (input to output)")
    ax.set_ylabel("density (kept fraction)")
    ax.set_title(f"Per-layer density at compression {compression:g} "
                 f"(overall {10 ** -compression:.3g}), {scale_label(chosen)}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _save(fig, path)


@book_style
def weight_histogram_figure(record: dict, path: Path | None = None):
    """Histograms of the kept weights of every prunable layer of one run."""
    import matplotlib.pyplot as plt

    histograms = record["weight_histograms"]
    n = len(histograms)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 1.7 * rows), squeeze=False)
    for ax, (name, h) in zip(axes.flat, histograms.items()):
        edges = np.asarray(h["edges"])
        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    config = record["config"]
    fig.suptitle(f"Kept weights after training: {record['label']}, compression "
                 f"{config['compression']:g}, seed {config['seed']}, "
                 f"{scale_label([record])}")
    return _save(fig, path)


@book_style
def score_figure(scores: dict, title: str, path: Path | None = None):
    """The distribution of each layer's scores (log10 of their magnitude), layer by layer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    logs = []
    for s in scores.values():
        magnitude = s.detach().abs().flatten().double().cpu().numpy()
        logs.append(np.log10(magnitude[magnitude > 0]) if (magnitude > 0).any() else [0.0])
    ax.boxplot(logs, showfliers=False)
    ax.set_xlabel("prunable layer (input to output)")
    ax.set_ylabel(r"$\log_{10}$ |score|")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


@book_style
def anatomy_figure(parameters: dict[str, int], macs: dict[str, int], title: str,
                   path: Path | None = None):
    """Each prunable layer's share of the prunable weights and of the multiply-accumulates: where
    a global threshold can take weights from, and where removing them saves compute."""
    import matplotlib.pyplot as plt

    layers = list(parameters)
    x = np.arange(1, len(layers) + 1)
    weight_share = 100 * np.array([parameters[n] for n in layers]) / sum(parameters.values())
    mac_share = 100 * np.array([macs[n] for n in layers]) / sum(macs.values())
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.bar(x - 0.2, weight_share, 0.4, label="share of prunable weights")
    ax.bar(x + 0.2, mac_share, 0.4, label="share of multiply-accumulates")
    ax.set_xticks(x)
    ax.set_xlabel("prunable layer (input to output)")
    ax.set_ylabel("% of the network")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", frameon=False)
    return _save(fig, path)


@book_style
def sparse_speed_figure(rows: list[dict], path: Path | None = None):
    """Forward time of a masked dense model against CSR sparse kernels, by density, one line
    pair per batch size (rows from :func:`sparse_survey.bench.bench_sparse`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for i, batch in enumerate(sorted({r["batch"] for r in rows})):
        mine = sorted((r for r in rows if r["batch"] == batch), key=lambda r: -r["density"])
        density = [r["density"] for r in mine]
        ax.plot(density, [r["dense_ms"] for r in mine], "-o", color=f"C{i}",
                label=f"masked dense, batch {batch}")
        ax.plot(density, [r["sparse_ms"] for r in mine], "--s", color=f"C{i}",
                label=f"CSR sparse, batch {batch}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (kept fraction of prunable weights)")
    ax.set_ylabel("forward pass (ms)")
    ax.set_title("What sparsity buys: masked dense against sparse kernels")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _save(fig, path)


@book_style
def cost_accuracy_figure(records: list[dict], compressions: list[float],
                         trainings: Callable[[str], int], path: Path | None = None):
    """Accuracy against what it cost: one panel per compression, each method a point at the
    number of trainings its label costs (``trainings(label)``) and its mean accuracy over
    seeds, with a bar of one standard deviation where several seeds finished. Methods of one
    cost stand side by side around it, so that no point covers another."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    mean, std, _ = summary(records, "accuracy")
    by_cost = collections.defaultdict(list)
    for method in mean.columns:
        by_cost[trainings(method)].append(method)
    where = {method: cost + (i - (len(alike) - 1) / 2) * min(0.08, 0.6 / len(alike))
             for cost, alike in by_cost.items() for i, method in enumerate(alike)}
    chosen = [c for c in compressions if c in mean.index]
    panels = max(len(chosen), 1)
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels + 1.6, 4), squeeze=False)
    for ax, c in zip(axes[0], chosen):
        for method in mean.columns:
            if math.isnan(mean.at[c, method]):
                continue
            style = method_style(method)
            ax.errorbar(where[method], mean.at[c, method],
                        yerr=0 if math.isnan(std.at[c, method]) else std.at[c, method],
                        fmt=style["marker"], color=style["color"], capsize=3, label=method)
        ax.set_xlabel("trainings per run")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"compression {c:g} (density {10 ** -c:.3g})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 test accuracy (%)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.suptitle(f"Accuracy against trainings paid, {scale_label(records)} "
                 "(bars: ±1 standard deviation over seeds)")
    return _save(fig, path)


@book_style
def cost_figure(records: list[dict], path: Path | None = None):
    """Each finished run's inference time and peak CPU memory against its density, one colour
    per method; runs timed while other work shared the machine are drawn hollow."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.8))
    finished = [r for r in records if r["status"] == "finished"]
    for method in ordered_labels({r["label"] for r in finished}):
        mine = [r for r in finished if r["label"] == method]
        style = method_style(method)
        for ax, name in zip(axes, ("inference_time", "cpu_memory")):
            for shared in (False, True):
                picked = [r for r in mine if bool(contended(r, name)) == shared]
                ax.plot([r["metrics"]["density"] for r in picked],
                        [TABLES[name].value(r) for r in picked], style["marker"],
                        color=style["color"], mfc="none" if shared else style["color"],
                        label=None if shared or not picked else method)
    for ax, label in zip(axes, ("inference time, test set (s)", "peak resident memory (MiB)")):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("Inference over the test set\n(hollow: machine shared)")
    axes[1].set_title("Peak resident memory of inference")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(scale_label(finished))
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    return _save(fig, path, laid_out=True)


def _save(fig, path: Path | None, laid_out: bool = False):
    """Lay out ``fig`` (unless ``laid_out``); with a path, write it as PNG and SVG (each
    atomically: a full disk leaves no empty file) and close it. Returns the figure."""
    import matplotlib.pyplot as plt

    if not laid_out:
        fig.tight_layout()
    if path is not None:
        try:
            for kind in ("png", "svg"):
                atomic_write(Path(path).with_suffix(f".{kind}"),
                             lambda tmp, kind=kind: fig.savefig(tmp, dpi=120, format=kind,
                                                                bbox_inches="tight"))
        finally:
            plt.close(fig)
    return fig
