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
# # SNIP: single-shot network pruning by connection sensitivity
#
# **The idea.** Give every weight a mask $m$ and ask how much the loss would change if the mask
# entry went from 1 to 0. To first order that is the derivative of the loss with respect to the
# mask (Lee et al. 2019), computed once, on a batch, before training.
#
# **The score.** With $L$ the cross-entropy on the scoring batches,
#
# $$ S(w) = \left| \frac{\partial L}{\partial m} \right|_{m=1} = \left| w \, \frac{\partial L}{\partial w} \right| . $$
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
prune_batches: int = 1  # batches of 256 images to score on
seeds: int = 1  # seeds per compression
bn_mode: str = "eval"  # BatchNorm: "eval" (survey) or "train" (SNIP's)
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import pandas as pd
import torch

import sparse_survey as ss
from sparse_survey import figures, tutorial

run = tutorial.parameters(
    preset,
    compressions,
    seeds,
    results,
    method="snip",
    prune_batches=prune_batches,
    bn_mode=bn_mode,
    precision=precision,
)
model, batches = tutorial.model_and_batches(run, batches=max(2, prune_batches))

# %% [markdown]
# ## The score, by hand
#
# The loss gradient on the first scoring batch, times the weight, in absolute value; the
# package's `score` on the same batch must agree (BatchNorm in the run's mode in both).

# %%
with ss.pruners.scoring_mode(model, bn_mode):
    gradient = ss.pruners.loss_gradient(model, batches[:1])
scores = {
    n: (w.detach() * gradient[n]).abs()
    for n, w in ss.masks.prunable(model).items()
}
packaged = ss.pruners.score(model, "snip", batches[:1], bn_mode=bn_mode)
assert all(torch.allclose(packaged[n], s) for n, s in scores.items())
tutorial.show_figure(
    figures.score_figure(scores, "SNIP scores per layer at initialization")
)

# %% [markdown]
# ## Its failure mode: a mask that depends on the batch
#
# SNIP scores on a few hundred images at random initialization, where gradients are noisy. How
# much of the mask is the method, and how much the batch? The share of kept weights that two
# masks at the same compression have in common, each scored on one of two different batches.

# %%
overlap = {}
for c in (0.5, 1, 2):
    pair = [
        ss.pruners.select(
            ss.pruners.score(model, "snip", [b], bn_mode=bn_mode),
            ss.masks.get(model),
            10**-c,
        )
        for b in batches[:2]
    ]
    shared = sum(
        int((a & b).sum()) for a, b in zip(pair[0].values(), pair[1].values())
    )
    overlap[c] = shared / sum(int(m.sum()) for m in pair[0].values())
tutorial.show(
    pd.DataFrame({"kept weights in common": overlap}).rename_axis(
        "compression"
    ),
    3,
    title=(
        "Masks scored on two different batches: share of kept weights in "
        "common"
    ),
)

# %% [markdown]
# ## One pruning, layer by layer
#
# Pruning to compression 1 keeps exactly round(10^-c x N) of the N prunable weights; how they
# spread over the layers is the method's signature.

# %%
tutorial.show(
    tutorial.prune_once(run, model, batches[:prune_batches]),
    4,
    title="Density of each prunable layer",
)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run scores a freshly initialised network on its own training batches, trains it with the
# preset's recipe and profiles it; its record lands in the results store, so a rerun reuses it.

# %%
records = tutorial.trained(run)
