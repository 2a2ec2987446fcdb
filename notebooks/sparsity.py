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
# # What sparsity buys
#
# A pruned network in this project, as in the survey and in most pruning research code, is a
# *masked dense* network: the pruned weights are zeros inside ordinary dense tensors, and the
# ordinary dense kernels multiply them. Such a network costs the same time and memory at any
# density. Sparsity pays only when the zeros are skipped: by sparse storage formats and sparse
# kernels (here CSR, :mod:`sparse_survey.sparse`), or by structured pruning that removes whole
# channels. This notebook measures three things:
#
# 1. the stored runs' inference time and memory against compression (masked dense);
# 2. what the pruned weights would take to store, dense against CSR and bitmask formats;
# 3. the forward time of a pruned VGG16 with CSR sparse kernels against masked dense, by density,
#    at batch 1 (latency) and a larger batch (throughput).

# %% tags=["parameters"]
preset: str = "auto"  # whose stored runs: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, survey or paper
results: str = "results"  # folder of the results store (the benchmark is stored there too)
model_name: str = "vgg16"  # model of the kernel benchmark
width: float = 1.0  # its channel multiplier (1: the survey's VGG16)
method: str = "rand"  # pruning method of the benchmark's masks
batch_sizes: list = [1, 64]  # batch sizes of the kernel benchmark
repeats: int = 5  # timed passes per measurement (the median is kept)
device: str = "cpu"  # device of the kernel benchmark

# %%
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from sparse_survey import bench, report, tutorial

preset: str = tutorial.resolve_preset(preset)
records = [r for r in tutorial.stored_runs(preset, results) if r["status"] == "finished"]
batch_sizes = [int(b) for b in tutorial.numbers(batch_sizes, "batch_sizes")]
print(f"{len(records)} finished runs at preset {preset}")

# %% [markdown]
# ## 1. Masked dense: time and memory do not follow density
#
# Inference time over the test set and peak resident CPU memory of every stored run, against its
# density. The dense kernels do the same work whatever the density, so both lie flat.

# %%
import matplotlib.pyplot as plt

frame = pd.DataFrame([{"method": r["label"], "density": r["metrics"]["density"],
                       "time (s)": r["metrics"]["time_s"],
                       "CPU memory (MiB)": r["metrics"]["cpu_rss_peak_bytes"] / 2**20,
                       "dense storage (MiB)": r["metrics"]["storage_dense_bytes"] / 2**20,
                       "CSR storage (MiB)": r["metrics"]["storage_csr_bytes"] / 2**20,
                       "bitmask storage (MiB)": r["metrics"]["storage_bitmask_bytes"] / 2**20}
                      for r in records])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, column in zip(axes, ("time (s)", "CPU memory (MiB)")):
    for i, (name, group) in enumerate(frame.groupby("method", sort=False)):
        ax.plot(group["density"], group[column], "o", color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density")
    ax.set_ylabel(column)
    ax.grid(alpha=0.3, which="both")
axes[0].set_title("inference over the test set")
axes[1].set_title("peak resident memory of inference")
axes[1].legend(fontsize=7)
fig.tight_layout()
spread = frame["time (s)"].max() / frame["time (s)"].min()
glue("sparsity_time_spread", float(spread), display=False)
print(f"slowest over fastest inference time across all runs: {spread:.2f}")

# %% [markdown]
# ## 2. Storage: what the zeros would cost in a sparse format
#
# CSR stores each kept weight with a 32-bit column index (plus one row pointer per output
# channel), so it is *larger* than dense until fewer than about half of the weights (at 32-bit
# values) remain; a bitmask costs one bit per weight plus the kept values.

# %%
storage = (frame.groupby("density")[["dense storage (MiB)", "CSR storage (MiB)",
                                      "bitmask storage (MiB)"]].mean()
           .sort_index(ascending=False))
display(Markdown(report.markdown(storage, 2)))
sparsest = storage.index.min()
glue("sparsity_csr_ratio", float(storage.loc[sparsest, "dense storage (MiB)"]
                                 / storage.loc[sparsest, "CSR storage (MiB)"]), display=False)
glue("sparsity_sparsest_density", float(sparsest), display=False)

# %% [markdown]
# ## 3. Sparse kernels against masked dense
#
# The same pruned network run twice: with its masked dense layers, and with every prunable layer
# replaced by a CSR sparse one (outputs checked equal first). Stored in the results folder, so the
# book shows one measurement; delete the file to measure again.

# %%
measured = tutorial.stored_benchmark(
    f"sparse-{model_name}-w{width:g}-{method}-{device}",
    lambda: {"rows": bench.bench_sparse(model_name, width, method, batch_sizes=tuple(batch_sizes),
                                        repeats=repeats, device=device)},
    preset, results)
rows = measured["result"]["rows"]
print(f"measured on {measured['environment']['device_name']} "
      f"({measured['environment']['threads']} threads)")
table = pd.DataFrame(rows).set_index(["batch", "compression"])
display(Markdown(report.markdown(table.reset_index(level=0).rename_axis("compression"), 3)))

# %%
figure = report.sparse_speed_figure(rows)
glue("sparsity_speed_figure", figure)  # shown here and in the chapter
plt.close(figure)

# %%
for batch in batch_sizes:
    mine = [r for r in rows if r["batch"] == batch]
    paying = [r["density"] for r in mine if r["speedup"] > 1]
    glue(f"sparsity_crossover_b{batch}", float(max(paying)) if paying else 0.0, display=False)
    glue(f"sparsity_best_speedup_b{batch}", float(max(r["speedup"] for r in mine)),
         display=False)
    print(f"batch {batch}: sparse faster at densities {paying or 'none'}; best speed-up "
          f"{max(r['speedup'] for r in mine):.2f}x")
