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
# # GraSP: gradient signal preservation
#
# **The idea.** Instead of preserving the loss, preserve the *gradient flow*: remove the weights
# whose removal reduces the gradient norm least, or even increases it (Wang et al. 2020). The
# change of $g^\top g$ when a weight is removed is, to first order, $-w \, (Hg)$, with $H$ the
# Hessian of the loss and $g$ its gradient.
#
# **The score.** With logits divided by a temperature $T = 200$,
#
# $$ S(w) = w \odot (H g) , $$
#
# signed; keeping the highest $S$ is the paper's "remove the largest $-w \odot Hg$". $Hg$ comes
# from a double backward pass. The score is signed, so GraSP can prefer weights by their sign:
# the laptop-scale runs found it keeps mostly positive weights in the middle layers.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # c: density 10^-c
bn_mode: str = "eval"  # BatchNorm: "eval" (survey) or "train" (GraSP's)
seeds: int = 1  # seeds per compression
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import torch

import sparse_survey as ss
from sparse_survey import figures, tutorial

run = tutorial.parameters(
    preset,
    compressions,
    seeds,
    results,
    method="grasp",
    bn_mode=bn_mode,
    precision=precision,
)
model, batches = tutorial.model_and_batches(run)

# %% [markdown]
# ## The score, by hand
#
# $Hg$ by double backward: the gradient $g$ at temperature 200 is held constant, and the
# gradient of $g \cdot \partial L / \partial w$ is $Hg$. Times the weight, signed; the package's
# `score` must agree (its tests also check $Hg$ against finite differences).

# %%
with ss.pruners.scoring_mode(model, bn_mode):
    hg = ss.pruners.hessian_gradient_product(model, batches)
scores = {n: w.detach() * hg[n] for n, w in ss.masks.prunable(model).items()}
packaged = ss.pruners.score(model, "grasp", batches, bn_mode=bn_mode)
assert all(torch.allclose(packaged[n], s) for n, s in scores.items())
tutorial.show_figure(
    figures.score_figure(
        scores, "GraSP scores per layer at initialization (magnitude)"
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
# ## Its failure mode: a sign-biased mask
#
# The score $w \odot Hg$ is signed, and which sign it favours need not be balanced. Kaiming
# initialization draws half of every layer's weights positive; the share of *kept* weights that
# are positive shows whether GraSP's selection tilts that balance. A layer of mostly positive
# weights after a ReLU computes near-identical positive mixtures of its inputs in every channel,
# which is a poor starting point for training. The last row pools the hidden layers (all but the
# first and the classifier), each kept weight counted once: the share the book quotes.

# %%
positive = tutorial.positive_shares(model)
tutorial.show(
    positive.to_frame(),
    3,
    title="Share of kept weights that are positive, per layer",
)
# the first and the classifier left out
layers = positive.drop("hidden layers").iloc[1:-1]
tutorial.glue_numbers(
    "grasp",
    positive_share_max=float(layers.max()),
    positive_share_hidden=float(positive["hidden layers"]),
)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run scores a freshly initialised network on its own training batch, trains it with the
# preset's recipe and profiles it; its record lands in the results store, so a rerun reuses it.
# The training accuracy after the first epoch shows how slowly a GraSP network starts.

# %%
records = tutorial.trained(run)
mildest = min(records, key=lambda r: r["config"]["compression"])
first_epoch = 100 * mildest["history"][0]["train_acc"]
tutorial.glue_numbers(
    "grasp",
    mildest_compression=float(mildest["config"]["compression"]),
    first_epoch_train_acc=first_epoch,
)
print(
    f"training accuracy after the first epoch at compression "
    f"{mildest['config']['compression']:g}: {first_epoch:.1f} %"
)
