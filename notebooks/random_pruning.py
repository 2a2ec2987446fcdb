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
METHOD = "rand"
print(f"preset {preset}: {ss.experiment.PRESETS[preset]}")

# %% [markdown]
# ## The scores of a freshly initialised network
#
# The scores of every prunable layer: the same distribution everywhere, which is why every layer
# keeps about the same fraction.

# %%
model, batches = tutorial.fresh_model_and_batches(preset, device=device)
scores = ss.pruners.score(model, METHOD, batches)
report.score_figure(scores, "Random scores per layer (i.i.d. standard normal)")

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
glue("rand_density", ss.masks.density(model), display=False)
glue("rand_flops_fraction",
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
glue("rand_highest_compression", highest, display=False)
glue("rand_accuracy", accuracy, display=False)
print(f"accuracy at compression {highest:g}: {accuracy:.2f} %")
