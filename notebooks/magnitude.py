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
# # Magnitude pruning
#
# **The idea.** A weight of small magnitude contributes little to a layer's output, so remove the
# smallest ones (Han et al. 2015). Applied after training it is the classic compression method;
# applied at initialization, as here, it ranks weights by their random initial values, which
# favours layers initialised with a large spread (small fan-in).
#
# **The score.** For a weight $w$,
#
# $$ S(w) = |w| , $$
#
# and a global threshold keeps the $\operatorname{round}(10^{-c} N)$ highest scores of the $N$ prunable
# weights. Iterated with training and rewinding it becomes IMP (see the IMP notebook).
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
seeds: int = 1  # seeds per compression
scope: str = "global"  # "global" (survey) or "local"
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import warnings

import pandas as pd
import torch

import sparse_survey as ss
from sparse_survey import figures, tutorial

run = tutorial.parameters(
    preset,
    compressions,
    seeds,
    results,
    method="mag",
    scope=scope,
    precision=precision,
)
model, batches = tutorial.model_and_batches(run)

# %% [markdown]
# ## The score, by hand
#
# One line computes every score of a freshly initialised network; the package's `score` must
# agree. Kaiming initialization draws a layer's weights with standard deviation
# $\sqrt{2 / \text{fan-in}}$, so the scale of the scores is set by the fan-in: the late layers,
# which read 512 channels through 3x3 kernels, score lowest.

# %%
scores = {
    name: w.detach().abs() for name, w in ss.masks.prunable(model).items()
}
assert all(
    torch.equal(s, scores[n])
    for n, s in ss.pruners.score(model, "mag").items()
)
tutorial.show_figure(
    figures.score_figure(
        scores, "Magnitude scores per layer at initialization"
    )
)

# %% [markdown]
# ## One pruning, layer by layer
#
# Pruning to compression 1 keeps exactly round(10^-c x N) of the N prunable weights; how they
# spread over the layers is the method's signature.

# %%
tutorial.show(
    tutorial.prune_once(run, model, batches),
    4,
    title="Density of each prunable layer",
)

# %% [markdown]
# ## Its failure mode: emptied layers
#
# Because the threshold is global and the late layers' weights are small, a high enough
# compression takes *every* weight of some layer, and a network with an empty layer can only
# guess. Where that starts: the layers magnitude pruning empties at each compression, on copies
# of the same initialization. (`prune` warns whenever it empties a layer, naming the layers; here
# the table counts them instead.)

# %%
emptied = {}
# prune warns of each collapse; here the table counts them
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*layer collapse")
    for c in (1, 2, 2.5, 3):
        copy = tutorial.preset_model(run.preset)[0]
        kept = ss.pruners.prune(copy, "mag", c, scope=run.fields["scope"])
        emptied[c] = sum(int(m.sum()) == 0 for m in kept.values())
tutorial.show(
    pd.DataFrame({"emptied layers": emptied}).rename_axis("compression"),
    0,
    title="Prunable layers that global magnitude pruning empties",
)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run prunes a freshly initialised network, trains it with the preset's recipe and profiles
# it; its record lands in the results store, so a rerun of this notebook reuses it.

# %%
records = tutorial.trained(run)
