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

# %% tags=["parameters"]
preset: str = "auto"  # training budget: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, cpu-full, survey or paper
iters: int = 2  # IMP prune rounds, the survey's "IMP (k Iters)" (a run's `iterations`)
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # final compressions c (density 10^-c)
rewind: str = "init"  # rewind the survivors to "init" (the survey's) or to a training step, e.g. 40
seeds: int = 1  # seeds of weights and data order (mean and spread when more than one)
results: str = "results"  # folder of the results store (finished runs are reused, not rerun)
precision: str = "auto"  # fp32, bf16, or "auto": the preset's own here (cpu-full: bf16 on a bf16 CPU)

# %%
from sparse_survey import report, tutorial

run = tutorial.parameters(preset, compressions, seeds, results, method="imp",
                          iterations=tutorial.count(iters, "iters"), rewind=rewind,
                          precision=precision)

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
tutorial.show(report.imp_rounds(records), 3, title="Every round of every IMP run")

# %% [markdown]
# ## Where the weights go
#
# The density of each layer of the final ticket, at the compression nearest 1.

# %%
tutorial.show_figure(report.layer_density_figure(
    records, report.nearest_compression(records, 1.0)))
