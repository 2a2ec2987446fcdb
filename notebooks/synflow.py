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

# %% tags=["parameters"]
preset: str = "auto"  # training budget: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, survey or paper
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # compressions c to train at (density 10^-c)
seeds: int = 1  # seeds per compression (tables show mean and spread when more than one)
figure_compression: float = 1.0  # compression of the per-layer pictures
results: str = "results"  # folder of the results store (finished runs are reused, not rerun)
data_root: str = None  # where CIFAR-10 is (None: $SPARSE_SURVEY_DATA, else torchvision's download)
device: str = None  # torch device (None: cuda when available)

# %%
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

import sparse_survey as ss
from sparse_survey import report, tutorial

preset: str = tutorial.resolve_preset(preset)
tutorial.use_data_root(data_root)
METHOD = "synflow"
print(f"preset {preset}: {ss.experiment.PRESETS[preset]}")

# %% [markdown]
# ## The scores of a freshly initialised network
#
# Scores of every prunable layer of the preset's model at initialization, which needs no data (SynFlow ignores the batches).
# Higher scores are kept.

# %%
model, batches = tutorial.fresh_model_and_batches(preset, device=device)
scores = ss.pruners.score(model, METHOD, batches)
report.score_figure(scores, "SynFlow scores per layer at initialization")

# %% [markdown]
# ## One pruning, layer by layer
#
# Pruning to compression `figure_compression` keeps exactly round(10^-c x N) of the N prunable
# weights; how they spread over the layers is the method's signature.

# %%
ss.pruners.prune(model, METHOD, figure_compression, batches)
per_layer = ss.masks.layer_densities(model)
display(Markdown(report.markdown(
    pd.DataFrame({"density": per_layer}).rename_axis("layer"), 4)))
glue("synflow_density", ss.masks.density(model), display=False)
glue("synflow_flops_fraction",
     ss.profile.remaining_flops_fraction(model, batches[0][0].shape[1:]), display=False)

# %% [markdown]
# ## Trained across the survey's compressions
#
# Each run prunes a freshly initialised network, trains it with the preset's recipe and profiles
# it; its record lands in the results store, so a rerun of this notebook reuses it.

# %%
records = tutorial.runs(METHOD, compressions, preset, seeds, results=results, device=device)
display(Markdown(report.markdown(report.table(records, "accuracy"))))

# %%
report.accuracy_figure(records)

# %%
highest, accuracy = tutorial.accuracy_at_highest_compression(records)
glue("synflow_highest_compression", highest, display=False)
glue("synflow_accuracy", accuracy, display=False)
print(f"accuracy at compression {highest:g}: {accuracy:.2f} %")
