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
# # The Lottery Ticket Hypothesis: winning tickets against random tickets
#
# **The claim** (Frankle & Carbin 2019). A dense network contains sparse subnetworks, "winning
# tickets", that train in isolation from *their original initialization* to the accuracy of the
# dense network. They are found by iterative magnitude pruning (IMP): train, prune the smallest
# weights, rewind the survivors to their initial values, repeat.
#
# **The test.** If the ticket's initial values matter, the same mask with fresh random weights
# (random reinitialization) should do worse, and so should the original weights under a mask
# shuffled within each layer (layerwise shuffle: same per-layer density, new positions). After
# $k$ rounds to compression $c$ the ticket keeps $\operatorname{round}(10^{-c} N)$ weights; round
# $r$ keeps $10^{-c r / k}$ of them.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.5, 1, 2]  # the tickets' final c (density 10^-c)
iters: int = 2  # IMP prune rounds per ticket (a run's `iterations`)
seeds: int = 1  # seeds per compression
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import pandas as pd

from sparse_survey import figures, report, tutorial

run = tutorial.parameters(
    preset,
    compressions,
    seeds,
    results,
    method="imp",
    iterations=tutorial.count(iters, "iters"),
    precision=precision,
)

# %% [markdown]
# ## Tickets and their controls
#
# One IMP run per compression (its dense training is cached and shared), then each control of
# that run's final ticket, trained with the same recipe and data order as the ticket's last round.
# All three are stored runs (`control` is part of a run's configuration), so a rerun reuses them.

# %%
controls = {"random reinit": "reinit", "layerwise shuffle": "shuffle"}
tried = tutorial.runs(run.configs(), run.results)  # the tickets
for control in controls.values():
    tried += tutorial.runs(run.configs(control=control), run.results)
cells = tutorial.every_seed(tried, run.results)  # all seeds stored
scale = figures.scale_label(cells)
tutorial.show(
    report.table(cells, "accuracy"),
    title=f"Winning tickets and their controls: top-1 accuracy (%), {scale}",
)
tutorial.show_figure(
    figures.accuracy_figure(cells, with_survey=False), "lth_figure"
)

# %% [markdown]
# **The ticket each control comes from.** A control's run takes its ticket from the IMP cache,
# or trains the ticket's rounds again where the cache lacks them, possibly on another machine
# than the stored ticket's: there the same seed's ticket differs by the rounding of the
# machine's kernels, and so does its mask. Each control's record keeps the IMP rounds of its
# ticket, so each control is judged against the ticket it was drawn from. The final-round
# accuracy of those tickets beside the stored ticket's, per compression and seed:

# %%
labels = {
    "ticket": run.label(),
    **{name: run.label(control=c) for name, c in controls.items()},
}


def seeds_of(label):
    """The finished runs of ``label`` by compression and seed: the accuracy (%)
    of the ticket their IMP rounds trained, and their own."""
    rows = [
        (
            r["config"]["compression"],
            r["config"]["seed"],
            100 * r["imp_rounds"][-1]["test_acc"],
            100 * r["metrics"]["test_acc"],
        )
        for r in cells
        if r["label"] == label and r["status"] == "finished"
    ]
    runs = pd.DataFrame(rows, columns=["compression", "seed", "ticket", "own"])
    return runs.set_index(["compression", "seed"])


arms = {name: seeds_of(label) for name, label in labels.items()}
tickets = pd.DataFrame(
    {
        "stored ticket": arms["ticket"]["own"],
        **{f"ticket of the {name}": arms[name]["ticket"] for name in controls},
    }
)
drift = tickets.sub(tickets["stored ticket"], axis=0).abs().max().max()
tutorial.show(
    tickets.set_axis(
        [f"c = {c:g}, seed {s}" for c, s in tickets.index], axis="index"
    ).rename_axis("run"),
    title="Final-round accuracy (%) of the ticket behind each arm",
)
print(f"largest difference from the stored ticket: {drift:.2f} points")

# %% [markdown]
# **Does the ticket's initialization matter?** Each control's accuracy below the ticket it was
# drawn from, in points (the mean over seeds), judged as the book judges every effect: it
# matters where it is more than twice the seed-to-seed spread, the typical spread of this
# preset's stored grid (a cell here may have one seed) or the cells' own where that is larger.

# %%
mean, _, count = report.summary(cells, "accuracy")
typical = report.seed_spread(
    tutorial.stored_runs(run.preset, run.results, run.precision)
)


def spread_at(c, control):
    """The spread the ticket's lead over ``control`` at compression ``c`` is
    judged by: the typical one, or its two cells' own where that is larger."""
    own = [
        report.seed_spread(cells, label=labels[arm], compression=c)
        for arm in ("ticket", control)
    ]
    return pd.Series([typical, *own]).max()


verdicts = pd.DataFrame(
    {
        f"ticket - {name}": {
            c: report.verdict(gap, spread_at(c, name))
            for c, gap in (arms[name]["ticket"] - arms[name]["own"])
            .groupby("compression")
            .mean()
            .items()
        }
        for name in controls
    }
)
tutorial.show(
    verdicts.rename_axis("compression"),
    title="Winning ticket minus each control",
)
sparsest = mean.index.max()
tutorial.glue_numbers(
    "lth",
    scale=scale,
    density=10.0**-sparsest,
    seeds=int(count.loc[sparsest, list(labels.values())].min()),
    ticket_accuracy=float(mean.at[sparsest, labels["ticket"]]),
    drawn_accuracy=float(
        tickets.loc[sparsest].drop(columns="stored ticket").mean().mean()
    ),
    reinit_accuracy=float(mean.at[sparsest, labels["random reinit"]]),
    shuffle_accuracy=float(mean.at[sparsest, labels["layerwise shuffle"]]),
    ticket_drift=drift,
    reinit_verdict=verdicts.loc[sparsest].iloc[0],
    shuffle_verdict=verdicts.loc[sparsest].iloc[1],
)
