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
METHOD = "grasp"
print(f"preset {preset}: {ss.experiment.PRESETS[preset]}")

# %% [markdown]
# ## The scores of a freshly initialised network
#
# Scores of every prunable layer of the preset's model at initialization, on one training batch.
# Higher scores are kept.

# %%
model, batches = tutorial.fresh_model_and_batches(preset, device=device)
scores = ss.pruners.score(model, METHOD, batches)
report.score_figure(scores, "GraSP scores per layer at initialization")

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
glue("grasp_density", ss.masks.density(model), display=False)
glue("grasp_flops_fraction",
     ss.profile.remaining_flops_fraction(model, batches[0][0].shape[1:]), display=False)

# %% [markdown]
# ## A sign-biased mask
#
# The score $w \odot Hg$ is signed, and which sign it favours need not be balanced. Kaiming
# initialization draws half of every layer's weights positive; the share of *kept* weights that
# are positive shows whether GraSP's selection tilts that balance. A layer of mostly positive
# weights after a ReLU computes near-identical positive mixtures of its inputs in every channel,
# which is a poor starting point for training.

# %%
kept = ss.masks.get(model)
positive = {name: float((w.detach()[kept[name]] > 0).float().mean())
            for name, w in ss.masks.prunable(model).items()}
display(Markdown(report.markdown(
    pd.DataFrame({"share of kept weights that are positive": positive}).rename_axis("layer"), 3)))
inner = list(positive.values())[1:-1]  # the first and the classifier layers are left out
glue("grasp_positive_share_max", max(inner), display=False)
glue("grasp_positive_share_mean", sum(inner) / len(inner), display=False)

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
glue("grasp_highest_compression", highest, display=False)
glue("grasp_accuracy", accuracy, display=False)
mildest = min(records, key=lambda r: r["config"]["compression"])
glue("grasp_mildest_compression", float(mildest["config"]["compression"]), display=False)
glue("grasp_first_epoch_train_acc", 100 * mildest["history"][0]["train_acc"], display=False)
print(f"training accuracy after the first epoch at compression "
      f"{mildest['config']['compression']:g}: {100 * mildest['history'][0]['train_acc']:.1f} %")
print(f"accuracy at compression {highest:g}: {accuracy:.2f} %")
