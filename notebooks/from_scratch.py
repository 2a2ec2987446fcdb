# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse from scratch: SET and RigL beside pruning
#
# Pruning at initialization fixes a mask before one training; IMP finds its mask over $k + 1$
# trainings. Dynamic sparse training starts from a random sparse network and *moves* its
# connections while it trains, for the price of one training:
#
# - **SET** (Mocanu et al. 2018): every $\Delta T$ steps, drop the live weights of smallest
#   magnitude and grow as many new connections at random;
# - **RigL** (Evci et al. 2020): drop the same way, grow where the gradient of the dense network
#   (the gradient a pruned weight would get) is largest.
#
# Both keep every layer's count of weights fixed, start with Erdős–Rényi-kernel (ERK) per-layer
# densities (larger layers sparser, the first layer dense, as RigL's CIFAR-10 runs keep it), and
# move a fraction of each layer's connections that falls by a cosine from 0.3 to 0 at three
# quarters of the training. As in Google's RigL code, a connection grown where none was starts at
# zero with no momentum; a weight dropped and grown again at the same update keeps its value. The
# **static** ERK network (the same random start, never moved) is the baseline that separates what
# moving connections buys from what the ERK densities alone buy. The question is the survey
# reader's after its table 1: is IMP's lead worth its extra trainings?
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
seeds: int = 3  # seeds at the seeded compressions (one seed elsewhere)
seeded_compressions: list = [1, 2]  # c with every seed
iters: list = [2, 3, 4]  # IMP round counts shown beside them
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import numpy as np
import pandas as pd

import sparse_survey as ss
from sparse_survey import figures, report, tutorial

run = tutorial.parameters(
    preset, compressions, seeds, results, trains=True, precision=precision
)
seeded = [
    c
    for c in tutorial.numbers(seeded_compressions, "seeded_compressions")
    if c in run.compressions
]
rounds = tutorial.counts(iters, "iters")


def trained(method):
    """Seed 0 at every compression, every seed at the seeded compressions."""
    configs = run.configs(method, seeds=run.seeds[:1])
    configs += run.configs(method, seeded, run.seeds[1:])
    return tutorial.runs(configs, run.results)


def beside(method, **fields):
    """Seed 0 at every compression (trained where missing), with every other
    seed the store holds for those cells: the one definition of a cell every
    page quotes."""
    records = tutorial.runs(
        run.configs(method, seeds=run.seeds[:1], **fields), run.results
    )
    return tutorial.every_seed(records, run.results)


# %% [markdown]
# ## The runs
#
# SET, RigL and the static ERK network are trained here (each a stored run). The one-shot methods
# and IMP come from the same store, as the survey's grid stored them: seed 0 (trained here where
# missing) and whatever other seeds are stored for the same cells.

# %%
dynamic = {method: trained(method) for method in ss.dynamic.METHODS}
moving = [m for m in dynamic if ss.dynamic.METHODS[m].growth is not None]
one_shot = [r for method in ss.pruners.METHODS for r in beside(method)]
imp = [r for k in rounds for r in beside("imp", iterations=k)]
records = [r for arm in dynamic.values() for r in arm] + one_shot + imp
tutorial.glue_numbers("scratch", runs=len(records))
tutorial.show(
    report.table(records, "accuracy")
    .T.rename_axis("method")
    .rename(columns=lambda c: f"c = {c:g}"),
    title="Top-1 test accuracy (%)",
)
tutorial.show_figure(
    figures.accuracy_figure(records, with_survey=False),
    "scratch_accuracy_figure",
)

# %% [markdown]
# ## What moved
#
# Per run: the connectivity updates, how many times over each kept connection was moved in all
# (moves per connection), and the share of the final connections that were not in the initial
# random mask.

# %%
moved = pd.DataFrame(
    [
        {
            "method": r["label"],
            "compression": r["config"]["compression"],
            "seed": r["config"]["seed"],
            **r["connectivity"],
        }
        for m in moving
        for r in dynamic[m]
        if r["status"] == "finished"
    ]
)
summary = (
    moved.groupby(["method", "compression"])[
        ["updates", "update_every", "moves_per_connection", "new_fraction"]
    ]
    .mean()
    .rename(
        columns={
            "update_every": "every (steps)",
            "moves_per_connection": "moves per kept",
            "new_fraction": "new at the end",
        }
    )
)
tutorial.show(
    summary.reset_index("compression"),
    2,
    title="Connectivity updates, per cell (mean over seeds)",
)
by_compression = moved.groupby("compression")["new_fraction"].mean()
tutorial.glue_numbers(
    "scratch",
    new_fraction_max=float(moved["new_fraction"].max()),
    new_fraction_low=float(by_compression.iloc[0]),
    new_fraction_high=float(by_compression.iloc[-1]),
    moves_per_connection=float(moved["moves_per_connection"].mean()),
    updates=int(moved["updates"].median()),
)

# %% [markdown]
# ## What each costs
#
# A one-shot method and a dynamic sparse training each cost one training; IMP with $k$ rounds
# costs $k + 1$ (the dense training, then one per round). Accuracy against the trainings each
# method paid for, at the seeded compressions: a method to the upper left buys more for less.
#
# The cost is counted in trainings, not seconds: a dynamic method's updates are 20 sorts of each
# layer's weights in a training of hundreds of steps or more (RigL's dense gradient is one the step
# computes anyway), and the stored records were not all made on one machine. Machines that
# report the same CPU model name can differ in their vector instructions, and with them the
# speed of every kernel; records now say which (`environment.cpu_capability`), the earlier ones
# do not, so their seconds are not set side by side here.

# %%
def trainings(label):
    imp = report.IMP_LABEL.match(label)
    return int(imp.group(1)) + 1 if imp else 1


finished = [r for r in records if r["status"] == "finished"]
costs = pd.DataFrame(
    {
        "trainings per run": {
            label: trainings(label)
            for label in report.ordered_labels(r["label"] for r in finished)
        }
    }
)
tutorial.show(costs.rename_axis("method"), 0, title="Trainings per run")
tutorial.show_figure(
    figures.cost_accuracy_figure(records, seeded, trainings),
    "scratch_cost_figure",
)
mean = report.summary(records, "accuracy")[0]
survey_one_shot = [label for label in report.ONE_SHOT if label in mean.columns]
for c in seeded:
    at = f"c{c:g}".replace(".", "_")
    best = mean.loc[c, survey_one_shot].idxmax()
    tutorial.glue_numbers(
        "scratch",
        **{
            f"{report.label_key(label)}_{at}": float(mean.at[c, label])
            for label in mean.columns
        },
        **{
            f"best_one_shot_{at}": best,
            f"best_one_shot_accuracy_{at}": float(mean.at[c, best]),
        },
    )


# %% [markdown]
# ## What moving buys: SET and RigL against the static ERK network
#
# The three start from the same kind of random ERK mask; only SET and RigL move it. Each one's
# accuracy minus the static network's at the seeded compressions, judged as every hidden choice
# in this book is: it matters where it exceeds twice the larger of the typical seed spread and
# the cells' own spreads.

# %%
static_label = run.label("static")
spread = report.seed_spread(records)
rows = []
for method in moving:
    label = run.label(method)
    effects = report.effects(
        dynamic["static"] + dynamic[method], static_label, label
    )
    for c in seeded:
        if c not in effects.index:
            continue
        judged_by = float(np.nanmax([spread, effects.at[c, "seed spread"]]))
        rows.append(
            {
                "method": label,
                "compression": c,
                "minus static": effects.at[c, "effect"],
                "seeds": effects.at[c, "seeds"],
                "judged by": judged_by,
                "verdict": report.verdict(effects.at[c, "effect"], judged_by),
            }
        )
        key = f"{report.label_key(label)}_over_static_c{c:g}".replace(".", "_")
        tutorial.glue_numbers(
            "scratch",
            **{
                key: float(effects.at[c, "effect"]),
                f"{key}_judged_by": judged_by,
                f"{key}_matters": "matters"
                if report.matters(effects.at[c, "effect"], judged_by)
                else "within the spread",
            },
        )
tutorial.glue_numbers("scratch", seed_spread=spread)
tutorial.show(
    pd.DataFrame(rows).set_index("method"),
    2,
    title=(
        "What moving the connections adds to the static ERK network (points)"
    ),
)
