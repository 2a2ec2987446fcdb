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
# # Random pruning: the baseline every method must beat
#
# **The idea.** Keep a uniformly random subset of the weights. With a *global* threshold on
# i.i.d. scores every layer keeps about the same fraction $d = 10^{-c}$, so random pruning is
# also the simplest "layerwise uniform" method. A pruning criterion earns its cost only where it
# beats this baseline at the same density (Frankle et al. 2021; Blalock et al. 2020).
#
# **The score.** For every prunable weight, independently,
#
# $$ S(w) \sim \mathcal{N}(0, 1) , $$
#
# and the $\operatorname{round}(10^{-c} N)$ highest scores of the $N$ prunable weights are kept.
# Each layer's kept count is then close to binomial with mean $d\,n_l$, so a small layer at high
# compression can lose all its weights by chance.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
seeds: int = 1  # seeds per compression
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import pandas as pd
import torch

import sparse_survey as ss
from sparse_survey import figures, tutorial

run = tutorial.parameters(
    preset, compressions, seeds, results, method="rand", precision=precision
)
model, batches = tutorial.model_and_batches(run)

# %% [markdown]
# ## The score, by hand
#
# An i.i.d. standard normal draw per weight from a seeded generator: the same draw as the
# package's `score` with that seed. Every layer's scores follow the same distribution.

# %%
generator = torch.Generator().manual_seed(7)
scores = {
    n: torch.randn(w.shape, generator=generator)
    for n, w in ss.masks.prunable(model).items()
}
assert all(
    torch.equal(s.cpu(), scores[n])
    for n, s in ss.pruners.score(model, "rand", seed=7).items()
)
tutorial.show_figure(
    figures.score_figure(
        scores, "Random scores per layer (i.i.d. standard normal)"
    )
)

# %% [markdown]
# ## One pruning, layer by layer
#
# Every layer keeps about the same fraction: the overall density.

# %%
tutorial.show(
    tutorial.prune_once(run, model, batches),
    4,
    title="Density of each prunable layer",
)

# %% [markdown]
# ## Its failure mode: small layers left with a handful of weights
#
# A layer of $n_l$ weights keeps about $d\,n_l$ of them. At compression 2 (1 % kept) the first
# layers, which have the fewest weights, keep only a few dozen: a bottleneck that no later layer
# can undo.

# %%
kept = {}
for c in (1, 2):
    copy = tutorial.preset_model(run.preset)[0]
    counts = ss.pruners.prune(copy, "rand", c, seed=0)
    kept[f"kept at c = {c:g}"] = {n: int(m.sum()) for n, m in counts.items()}
tutorial.show(
    pd.DataFrame(kept).rename_axis("layer").head(3),
    0,
    title="Weights kept in the first three layers",
)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run draws its own random scores (from its seed), trains with the preset's recipe and is
# profiled; its record lands in the results store, so a rerun of this notebook reuses it.

# %%
records = tutorial.trained(run)
