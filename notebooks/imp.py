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
preset: str = "auto"  # training budget: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, survey or paper
iters: int = 2  # IMP prune rounds, the survey's "IMP (k Iters)"
compressions: list = [0.05, 0.1, 0.2, 0.5, 1, 2]  # final compressions c (density 10^-c)
seed: int = 0  # seed of weights and data order
dataset: str = None  # data set (None: the preset's)
figure_compression: float = 1.0  # compression of the per-layer picture
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
overrides = {"dataset": dataset} if dataset else {}
print(f"preset {preset}: {ss.experiment.PRESETS[preset]}")

# %% [markdown]
# ## The runs
#
# Each compression is one stored run; a rerun of this notebook reuses the finished ones.

# %%
records = tutorial.runs("imp", compressions, preset, [seed], iters=iters, results=results,
                        device=device, **overrides)
display(Markdown(report.markdown(report.table(records, "accuracy"))))

# %% [markdown]
# ## Round by round
#
# Density, remaining parameters and FLOPs, and test accuracy after each round (round 0 is the
# dense network).

# %%
rounds = pd.DataFrame([{"compression": r["config"]["compression"], **{
    k: v for k, v in row.items() if k not in ("history",)}}
    for r in records for row in r["imp_rounds"]]).set_index(["compression", "round"])
display(Markdown(report.markdown(rounds.reset_index(level=1).rename_axis("compression"), 4)))

# %%
report.accuracy_figure(records)

# %%
report.layer_density_figure(records, min({r["config"]["compression"] for r in records},
                                         key=lambda c: abs(c - figure_compression)))

# %%
highest, accuracy = tutorial.accuracy_at_highest_compression(records)
glue("imp_iters", iters, display=False)
glue("imp_highest_compression", highest, display=False)
glue("imp_accuracy", accuracy, display=False)
print(f"IMP ({iters} Iters) at compression {highest:g}: {accuracy:.2f} %")
