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
# # The Lottery Ticket Hypothesis: winning tickets against random tickets
#
# **The claim** (Frankle & Carbin 2019). A dense network contains sparse subnetworks, "winning
# tickets", that train in isolation from *their original initialization* to the accuracy of the
# dense network. They are found by iterative magnitude pruning (IMP): train, prune the smallest
# weights, rewind the survivors to their initial values, repeat.
#
# **The test.** If the ticket's initial values matter, the same mask with fresh random weights
# (random reinitialization) should do worse, and so should the original weights under a mask
# shuffled within each layer (layerwise shuffle: same per-layer density, new positions). After
# $k$ rounds to compression $c$ the ticket keeps $\operatorname{round}(10^{-c} N)$ weights; round
# $r$ keeps $10^{-c r / k}$ of them.

# %% tags=["parameters"]
preset: str = "auto"  # training budget: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, survey or paper
compressions: list = [0.5, 1, 2]  # final compressions c of the tickets (density 10^-c)
iters: int = 2  # IMP prune rounds per ticket
seed: int = 0  # seed of weights and data order
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
compressions = tutorial.numbers(compressions, "compressions")
tutorial.use_data_root(data_root)
print(f"preset {preset}: {ss.experiment.PRESETS[preset]}")

# %% [markdown]
# ## Tickets and their controls
#
# One IMP run per compression (its dense training is cached and shared), then each control of
# that run's final ticket, trained with the same recipe and data order as the ticket's last round.
# All three are stored runs (`control` is part of a run's configuration), so a rerun reuses them.

# %%
arms = {"winning ticket": None, "random reinit": "reinit", "layerwise shuffle": "shuffle"}
accuracy = {name: tutorial.runs("imp", compressions, preset, [seed], iters=iters,
                                results=results, device=device, control=control)
            for name, control in arms.items()}
table = pd.DataFrame({"density": [10**-c for c in compressions],
                      **{name: [100 * r.get("metrics", {}).get("test_acc", float("nan"))
                                for r in records] for name, records in accuracy.items()}},
                     index=pd.Index(compressions, name="compression"))
display(Markdown(report.markdown(table, 2)))

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
for name in ("winning ticket", "random reinit", "layerwise shuffle"):
    ax.plot(table["density"], table[name], "-o", label=name)
ax.set_xscale("log")
ax.invert_xaxis()
ax.set_xlabel("density (kept fraction of prunable weights)")
ax.set_ylabel("top-1 test accuracy (%)")
ax.set_title(f"winning tickets against random tickets ({iters} IMP rounds)")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
glue("lth_figure", fig)  # shown here and in the chapter
plt.close(fig)

# %%
sparsest = table.iloc[-1]
glue("lth_density", float(sparsest["density"]), display=False)
glue("lth_ticket_accuracy", float(sparsest["winning ticket"]), display=False)
glue("lth_reinit_accuracy", float(sparsest["random reinit"]), display=False)
glue("lth_shuffle_accuracy", float(sparsest["layerwise shuffle"]), display=False)
