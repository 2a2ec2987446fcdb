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
arms = {
    "winning ticket": None,
    "random reinit": "reinit",
    "layerwise shuffle": "shuffle",
}
table = report.controls_table(
    {
        name: tutorial.runs(run.configs(control=control), run.results)
        for name, control in arms.items()
    }
)
tutorial.show(table, 2, title="Winning ticket against its two controls")
tutorial.show_figure(
    figures.controls_figure(
        table, f"winning tickets against random tickets ({iters} IMP rounds)"
    ),
    "lth_figure",
)

# %%
sparsest = table.iloc[-1]
tutorial.glue_numbers(
    "lth",
    density=float(sparsest["density"]),
    ticket_accuracy=float(sparsest["winning ticket"]),
    reinit_accuracy=float(sparsest["random reinit"]),
    shuffle_accuracy=float(sparsest["layerwise shuffle"]),
)
