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
# # SynFlow: iterative synaptic flow pruning, without data
#
# **The idea.** Pruning at initialization can disconnect a whole layer (layer collapse) long before
# the network stops being trainable. SynFlow scores weights by the "synaptic flow" they carry
# through a copy of the network with all parameters made positive, fed an all-ones input, and
# prunes in 100 small rounds so that scores are recomputed as the network thins (Tanaka et al.
# 2020). It needs no data.
#
# **The score.** With $R = \mathbb{1}^\top \left( \prod_l |W_l| \right) \mathbb{1}$ the summed output
# of the absolute-valued network,
#
# $$ S(w) = \left| w \, \frac{\partial R}{\partial w} \right| , $$
#
# and in a plain feed-forward network every layer's scores sum to the same $R$ (conservation),
# which is what keeps layers from collapsing.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
iterations: int = 100  # scoring rounds (SynFlow's: 100)
results: str = "results"  # the results store (runs are reused)
seeds: int = 1  # seeds per compression
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
    method="synflow",
    iterations=iterations,
    precision=precision,
)
model, batches = tutorial.model_and_batches(run)

# %% [markdown]
# ## The score, by hand
#
# Copy the network, make every parameter and BatchNorm statistic positive, feed one all-ones
# image, sum the output to $R$, and take $|w \, \partial R / \partial w|$; the package's `score`
# must agree. No data is needed.

# %%
positive = ss.pruners.absolute_copy(model)
flow = positive(
    torch.ones(1, *batches[0][0].shape[1:], device=batches[0][0].device)
).sum()
weights = ss.masks.prunable(positive)
gradients = torch.autograd.grad(flow, list(weights.values()))
scores = {
    n: (w.detach() * g).abs() for (n, w), g in zip(weights.items(), gradients)
}
assert all(
    torch.allclose(s, scores[n])
    for n, s in ss.pruners.score(model, "synflow").items()
)
tutorial.show_figure(
    figures.score_figure(scores, "SynFlow scores per layer at initialization")
)

# %% [markdown]
# ## One pruning, layer by layer
#
# Pruning to compression 1 in `iterations` rounds keeps exactly round(10^-c x N) of the N
# prunable weights; how they spread over the layers is the method's signature.

# %%
tutorial.show(
    tutorial.prune_once(run, model, batches),
    4,
    title="Density of each prunable layer",
)

# %% [markdown]
# ## Why the rounds: layer collapse in one shot
#
# Scored once, the flow favours the weights on the strongest paths and a global threshold can
# empty a whole layer; rescored after every small step, a thinning layer's remaining weights carry
# more of the flow and survive. The layers each way empties, on copies of the same
# initialization (the smallest layer density besides; `prune` warns whenever it empties a layer,
# and here the table counts them instead).

# %%
collapse = []
# prune warns of each collapse; here the table counts them
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*layer collapse")
    for c in (2, 3):
        for rounds in (1, iterations):
            copy = tutorial.preset_model(run.preset)[0]
            kept = ss.pruners.prune(copy, "synflow", c, iterations=rounds)
            density = min(float(m.float().mean()) for m in kept.values())
            collapse.append(
                {
                    "compression": c,
                    "rounds": rounds,
                    "smallest layer density": density,
                    "emptied layers": sum(
                        int(m.sum()) == 0 for m in kept.values()
                    ),
                }
            )
tutorial.show(
    pd.DataFrame(collapse).set_index("compression"),
    5,
    title="Layer collapse against the number of scoring rounds",
)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run prunes a freshly initialised network, trains it with the preset's recipe and profiles
# it; its record lands in the results store, so a rerun of this notebook reuses it.

# %%
records = tutorial.trained(run)
