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
# # Iterative magnitude pruning (IMP) with rewinding
#
# **The procedure** (Frankle & Carbin 2019; Han et al. 2015 for the iterative pruning). To reach
# compression $c$ in $k$ rounds: train the dense network; then $k$ times prune by global
# magnitude to density $d^{r/k}$ (with $d = 10^{-c}$) among the surviving weights, rewind the
# survivors to their initial values, and train again.
#
# **Why rounds.** Pruning a little at a time lets the network re-learn which weights matter; the
# survey found IMP ahead of the one-shot methods, most of all at high compression. Each extra
# round is a full training, so IMP (4 Iters) costs five trainings (the dense one is shared
# across every IMP configuration of a sweep through the cache).
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again. Papermill puts the values
# given with `-p` in a cell of its own after this one (the book's copy: `-p iters 4`).

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
iters: int = 2  # IMP rounds: the survey's "IMP (k Iters)"
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # final c (density 10^-c)
rewind: str = "init"  # "init" (survey) or a step, e.g. 40
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
    rewind=rewind,
    precision=precision,
)

# %% [markdown]
# ## The runs
#
# Each compression is one stored run; a rerun of this notebook reuses the finished ones, and
# the dense training is shared by all of them.

# %%
records = tutorial.trained(run)
tutorial.glue_numbers("imp", iterations=iters)

# %% [markdown]
# ## Round by round
#
# Density, remaining parameters and FLOPs, and test accuracy after each round (round 0 is the
# dense network).

# %%
tutorial.show(
    report.imp_rounds(records), 3, title="Every round of every IMP run"
)

# %% [markdown]
# ## Where the weights go
#
# The density of each layer of the final ticket, at the compression nearest 1.

# %%
tutorial.show_figure(
    figures.layer_density_figure(
        records, report.nearest_compression(records, 1.0)
    )
)
