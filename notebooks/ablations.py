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
# # What moves the numbers: the methods' hidden choices
#
# Every method hides choices that papers and code bases make differently: the BatchNorm mode
# while scoring, the number of scoring rounds, global or per-layer thresholds, how much data the
# scores see, IMP's rewind point. This notebook changes one choice at a time, keeps everything
# else at the survey's convention, and sets each effect beside the seed-to-seed spread: a choice
# matters where it moves accuracy by more than twice that spread. Then it tries the plausible
# mistakes that could produce the survey's chance-level cells. Every number comes from stored
# runs, like the rest of the book.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
seeds: int = 3  # seeds at seeded_compressions
seeded_compressions: list = [0.05, 1, 2]  # c with every seed
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import dataclasses

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
first_seed = run.seeds[:1]


def grid(method, compressions=run.compressions, seeds=first_seed, **fields):
    """The records of one method and variant (the survey's settings when no
    fields), trained where missing, with every other seed the store holds for
    their cells: a cell's number is the mean over all its stored seeds, as on
    every page of the book."""
    configs = run.configs(method, compressions, seeds, **fields)
    return tutorial.every_seed(
        tutorial.runs(configs, run.results), run.results
    )


def near(*wanted):
    """The compressions of this run nearest to the wanted ones (the smoke
    preset runs fewer)."""
    return sorted(
        {min(run.compressions, key=lambda c: abs(c - w)) for w in wanted}
    )


# %% [markdown]
# ## BatchNorm while scoring: eval mode (the survey's code) or train mode (SNIP's and GraSP's)
#
# The Synaptic-Flow code base that the survey used scores with BatchNorm in eval mode: a freshly
# initialised network's running statistics are 0 and 1, so BatchNorm does nothing. The original
# SNIP and GraSP code score in train mode, with the batch's own statistics, which normalise every
# channel. SNIP multiplies gradient by weight and takes the magnitude; GraSP's signed
# Hessian-gradient product can change sign with the scale of each channel.

# %%
bn_records, bn_effects = {}, {}
for method in ("snip", "grasp"):
    records = {}  # by key: the two grids share the seeded cells
    for mode in ("eval", "train"):
        for r in grid(method, bn_mode=mode) + grid(
            method, seeded, run.seeds[1:], bn_mode=mode
        ):
            records[r["key"]] = r
    records = bn_records[method] = list(records.values())
    bn_effects[method] = report.effects(
        records, run.label(method), run.label(method, bn_mode="train")
    )
    tutorial.show(
        bn_effects[method],
        2,
        title=(
            f"{ss.pruners.METHODS[method].label}: eval-mode against "
            "train-mode BatchNorm at scoring"
        ),
    )
    tutorial.show_figure(
        figures.accuracy_figure(records, with_survey=False),
        f"ablations_bn_{method}_figure",
    )

# %% [markdown]
# An effect is judged against the typical seed-to-seed spread of these seeded cells or, where
# the method's own cell varies more over seeds (GraSP's do, by several points), against that.

# %%
seeded_records = bn_records["snip"] + bn_records["grasp"]
spread = report.seed_spread(seeded_records)
tutorial.glue_numbers("ablations", seed_spread=spread)
print(f"typical seed-to-seed spread: {spread:.2f} points")


# one row per judged effect: the summary at the end of the notebook
verdicts = []


def judged(table, compression, records):
    """The verdict on one row of an effects table: its effect against the
    largest of the typical spread, the row's own spread and its baseline
    method's spread at that compression among ``records`` (the table's). The
    row is added to the summary."""
    own = report.seed_spread(
        records, label=table.columns[0], compression=compression
    )
    judged_by = float(
        np.nanmax([spread, own, table.at[compression, "seed spread"]])
    )
    effect = float(table.at[compression, "effect"])
    verdicts.append(
        {
            "variant": table.columns[1],
            "against": table.columns[0],
            "compression": compression,
            "effect (points)": effect,
            "seed spread": judged_by,
            "matters": "yes" if report.matters(effect, judged_by) else "no",
        }
    )
    return report.verdict(effect, judged_by)


for method, table in bn_effects.items():
    mildest, highest_effect = (float(e) for e in table["effect"].iloc[[0, -1]])
    text = judged(table, table.index[0], bn_records[method])
    judged(table, table.index[-1], bn_records[method])
    densities = [
        list(r["layer_densities"].values())
        for r in bn_records[method]
        if r["label"] == table.columns[1]
        and r["status"] == "finished"
        and r["config"]["compression"] == table.index[-1]
    ]
    starved = np.mean([sum(d < 1e-3 for d in layers) for layers in densities])
    tutorial.glue_numbers(
        f"ablations_bn_{method}",
        mild_effect=mildest,
        high_effect=highest_effect,
        verdict=text,
        starved_train=float(starved),
        thinnest_train=float(np.mean([min(layers) for layers in densities])),
    )
    print(
        f"{method}, train mode at compression {table.index[-1]:g}: "
        f"{starved:.1f} layers "
        "keep less than 0.1 % of their weights"
    )
    print(
        f"{method}, train-mode BatchNorm at compression {table.index[0]:g}: "
        f"{text}"
    )

# %% [markdown]
# The sign of GraSP's kept weights in both modes, on one initialization: the share of kept
# weights that are positive in the hidden layers, at compression 1.

# %%
model, batches = tutorial.model_and_batches(run)
shares = {}
for mode in ("eval", "train"):
    copy = tutorial.preset_model(run.preset)[0]
    ss.pruners.prune(copy, "grasp", 1, batches, bn_mode=mode)
    shares[f"{mode} mode"] = tutorial.positive_shares(copy)["hidden layers"]
tutorial.show(
    pd.DataFrame({"positive share of kept hidden weights": shares}),
    3,
    title="GraSP at c = 1: share of kept hidden weights that are positive",
)
tutorial.glue_numbers(
    "ablations_grasp",
    positive_eval=shares["eval mode"],
    positive_train=shares["train mode"],
)

# %% [markdown]
# ## SynFlow: 100 scoring rounds or one
#
# SynFlow's paper prunes in 100 rounds, rescoring the thinned network; scored once, the flow
# concentrates on the strongest paths. Accuracy and the layers each leaves empty.

# %%
synflow = grid("synflow") + grid("synflow", iterations=1)
one_round = run.label("synflow", iterations=1)
rounds = report.effects(synflow, run.label("synflow"), one_round)
tutorial.show(rounds, 2, title="SynFlow: 100 scoring rounds against one")
emptied = report.collapsed_layers(synflow)
tutorial.show(
    emptied, 1, title="Prunable layers left with no weight (mean over seeds)"
)
tutorial.show_figure(
    figures.accuracy_figure(synflow, with_survey=False),
    "ablations_synflow_figure",
)
tutorial.glue_numbers(
    "ablations_synflow",
    high_effect=float(rounds["effect"].iloc[-1]),
    emptied_one_round=float(emptied[one_round].max()),
    verdict=judged(rounds, rounds.index[-1], synflow),
)

# %% [markdown]
# ## Scope: one global threshold or one per layer
#
# A global threshold lets a method move weights between layers; a per-layer (local) one keeps
# every layer at the same density, like random pruning does by chance.

# %%
for method in ("mag", "snip"):
    records = grid(method, near(0.5, 1, 2)) + grid(
        method, near(0.5, 1, 2), scope="local"
    )
    label = run.label(method)
    table = report.effects(records, label, run.label(method, scope="local"))
    tutorial.show(
        table, 2, title=f"{label}: one global threshold against one per layer"
    )
    tutorial.glue_numbers(
        f"ablations_scope_{method}",
        high_effect=float(table["effect"].iloc[-1]),
        verdict=judged(table, table.index[-1], records),
    )

# %% [markdown]
# ## Scoring data: one batch of 256 or ten
#
# SNIP and GraSP sum their scores over the given batches; more data averages out the noise of a
# single batch at random initialization.

# %%
for method in ("snip", "grasp"):
    records = grid(method, near(1, 2)) + grid(
        method, near(1, 2), prune_batches=10
    )
    label = run.label(method)
    table = report.effects(records, label, run.label(method, prune_batches=10))
    tutorial.show(table, 2, title=f"{label}: scored on one batch against ten")
    tutorial.glue_numbers(
        f"ablations_data_{method}",
        high_effect=float(table["effect"].iloc[-1]),
        verdict=judged(table, table.index[-1], records),
    )

# %% [markdown]
# ## IMP's rewind point: initialization or an early training step
#
# Frankle et al. (2020) found that on deeper networks, winning tickets appear only when the
# survivors are rewound to an early point of training rather than to initialization. Here IMP
# with 2 rounds rewinds to the step at about 1 % of the dense training.

# %%
train_images = len(tutorial.preset_model(run.preset)[1][0])
recipe = ss.experiment.PRESETS[run.preset].recipe
early = max(
    1, round(0.01 * recipe.epochs * (train_images // recipe.batch_size))
)
rewinds = grid("imp", near(1, 2), iterations=2) + grid(
    "imp", near(1, 2), iterations=2, rewind=early
)
table = report.effects(
    rewinds,
    run.label("imp", iterations=2),
    run.label("imp", iterations=2, rewind=early),
)
tutorial.show(
    table,
    2,
    title=f"IMP (2 Iters): rewound to initialization against step {early}",
)
tutorial.glue_numbers(
    "ablations_rewind",
    step=early,
    high_effect=float(table["effect"].iloc[-1]),
    verdict=judged(table, table.index[-1], rewinds),
)

# %% [markdown]
# ## The survey's chance-level cells: which mistakes produce them?
#
# The survey reports 10.00 % (chance) for random pruning at compressions 1 and 2, for SynFlow at
# compression 2, and 19.34 % for IMP with 4 rounds at compression 2. Candidate mistakes, each
# tried here where the survey's correct runs would not show it:
#
# - **SynFlow scored once** instead of in 100 rounds (above: the one-round runs);
# - **SynFlow's flow overflowing float32**, which turns scores into infinities or NaN;
# - **a learning rate too high for a sparse network** (ten times the preset's);
# - **an IMP round that does not rewind**, fine-tuning the trained survivors instead.

# %%
import torch

positive_vgg = ss.pruners.absolute_copy(ss.models.build("vgg16"))
with torch.no_grad():
    flow = float(positive_vgg(torch.ones(1, 3, 32, 32)).sum())
largest = float(torch.finfo(torch.float32).max)
tutorial.glue_numbers("ablations", synflow_flow=flow, float32_max=largest)
print(
    f"SynFlow's R for the survey's VGG16 at initialization: {flow:.3g}; "
    "float32 holds up to "
    f"{largest:.3g}, so the flow "
    f"{'overflows' if flow > largest else 'does not overflow'}"
)

# %%
highest = max(run.compressions)
fast = dataclasses.replace(recipe, lr=10 * recipe.lr)
tried = {
    "SynFlow, one scoring round": [
        r for r in synflow if r["label"] == one_round
    ],
    "Rand, 10 x learning rate": grid("rand", near(1, highest), recipe=fast),
    "SynFlow, 10 x learning rate": grid("synflow", [highest], recipe=fast),
    "IMP (4 Iters), 10 x learning rate": grid(
        "imp", [highest], iterations=4, recipe=fast
    ),
    "IMP (4 Iters), no rewind (fine-tuned)": grid(
        "imp", [highest], iterations=4, rewind="none"
    ),
    "IMP (4 Iters), as the survey describes it": grid(
        "imp", [highest], iterations=4
    ),
}
outcome = pd.DataFrame(
    [
        {
            "candidate": name,
            "compression": r["config"]["compression"],
            "seed": r["config"]["seed"],
            "status": r["status"],
            "accuracy (%)": 100 * r["metrics"]["test_acc"]
            if r["status"] == "finished"
            else float("nan"),
        }
        for name, records in tried.items()
        for r in records
    ]
)
outcome["at chance (10 %)?"] = [
    s != "finished" or a < 11
    for s, a in zip(outcome["status"], outcome["accuracy (%)"])
]
tutorial.show(
    outcome.set_index("candidate"),
    2,
    title="Candidate explanations tried, and their outcome",
)
chance = outcome[outcome["at chance (10 %)?"]]["candidate"].unique().tolist()
tutorial.glue_numbers(
    "ablations",
    chance_candidates=", ".join(chance) or "none",
    chance_count=len(chance),
)

# %% [markdown]
# ## Every choice at a glance
#
# Each judged effect (variant minus the survey's convention, in accuracy points) beside the seed
# spread it was judged by: a choice matters where the effect is more than twice that spread.

# %%
from myst_nb import glue

at_a_glance = pd.DataFrame(verdicts).set_index("variant")
tutorial.show(
    at_a_glance,
    2,
    title="Every ablation at a glance: effect against seed spread",
)
glue(
    "ablations_summary_table",
    tutorial.for_the_book(at_a_glance)
    .format(precision=2)
    .format("{:g}", subset="compression"),
    display=False,
)
