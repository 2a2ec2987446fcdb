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
# kernels (here CSR, the module `sparse_survey.sparse`), or by structured pruning that removes whole
# channels. This notebook measures three things:
#
# 1. the stored runs' inference time and memory against compression (masked dense);
# 2. what the pruned weights would take to store, dense against CSR and bitmask formats;
# 3. the forward time of a pruned VGG16 with CSR sparse kernels against masked dense, by density,
#    at batch 1 (latency) and a larger batch (throughput).
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # whose records: a preset, or auto
results: str = "results"  # the results store (and benchmark)
model_name: str = "vgg16"  # model of the kernel benchmark
width: float = 1.0  # its channel multiplier (1: the survey's VGG16)
method: str = "rand"  # pruning method of the benchmark's masks
batch_sizes: list = [1, 64]  # batch sizes of the kernel benchmark
repeats: int = 5  # timed passes per measurement (the median is kept)
device: str = "cpu"  # device of the kernel benchmark
precision: str = "auto"  # whose runs: fp32, bf16 or "auto"

# %%
import pandas as pd

import sparse_survey as ss
from sparse_survey import bench, figures, report, tutorial

run = tutorial.parameters(preset, results=results, precision=precision)
model_name = tutorial.choice(model_name, "model_name", ss.models.MODELS)
width = tutorial.positive(width, "width")
method = tutorial.choice(method, "method", ss.pruners.METHODS)
batch_sizes = tutorial.counts(batch_sizes, "batch_sizes")
repeats = tutorial.count(repeats, "repeats")
try:
    tutorial.usable_device(device)
except ValueError as error:
    raise tutorial.ParameterError(f"bad notebook parameter: {error}") from None
records = [
    r
    for r in tutorial.stored_runs(run.preset, run.results, run.precision)
    if r["status"] == "finished"
]
print(f"{len(records)} finished runs at preset {run.preset}")

# %% [markdown]
# ## 1. Masked dense: time and memory do not follow density
#
# Inference time over the test set and peak resident CPU memory of every stored run, against its
# density. The dense kernels do the same work whatever the density, so both lie flat; a run
# timed while other work shared the machine (hollow) is slower for that reason alone, and is
# left out of the spread below.

# %%
tutorial.show_figure(figures.cost_figure(records))

# %%
trusted = report.frame(report.uncontended(records, "inference_time"))[
    "inference_time"
]
spread = trusted.max() / trusted.min()
tutorial.glue_numbers("sparsity", time_spread=float(spread))
print(
    f"slowest over fastest inference time, {len(trusted)} uncontended runs: "
    f"{spread:.2f}"
)

# %% [markdown]
# ## 2. Storage: what the zeros would cost in a sparse format
#
# CSR stores each kept weight with a 32-bit column index (plus one row pointer per output
# channel), so it is *larger* than dense until fewer than about half of the weights (at 32-bit
# values) remain; a bitmask costs one bit per weight plus the kept values.

# %%
storage = pd.DataFrame(
    [
        {
            "compression": r["config"]["compression"],
            "density": r["metrics"]["density"],
            **{
                f"{kind} storage (MiB)": r["metrics"][f"storage_{kind}_bytes"]
                / 2**20
                for kind in ("dense", "csr", "bitmask")
            },
        }
        for r in records
    ]
)
storage = storage.groupby("compression").mean().sort_index()
tutorial.show(
    storage, 3, title="Storage of the pruned weights: dense, CSR and bitmask"
)
sparsest = storage["density"].idxmin()
tutorial.glue_numbers(
    "sparsity",
    sparsest_density=float(storage.loc[sparsest, "density"]),
    csr_ratio=float(
        storage.loc[sparsest, "dense storage (MiB)"]
        / storage.loc[sparsest, "csr storage (MiB)"]
    ),
)

# %% [markdown]
# ## 3. Sparse kernels against masked dense
#
# The same pruned network run twice: with its masked dense layers, and with every prunable layer
# replaced by a CSR sparse one (outputs checked equal first). Stored in the results folder, so the
# book shows one measurement; delete the file to measure again.

# %%
measured = tutorial.stored_benchmark(
    f"sparse-{model_name}-w{width:g}-{method}-{device}",
    lambda: {
        "rows": bench.bench_sparse(
            model_name,
            width,
            method,
            batch_sizes=tuple(batch_sizes),
            repeats=repeats,
            device=device,
        )
    },
    run.preset,
    run.results,
)
rows = measured["result"]["rows"]
print(
    f"measured on {measured['environment']['device_name']} "
    f"({measured['environment']['threads']} threads)"
)
table = pd.DataFrame(rows).set_index(["batch", "compression"])
tutorial.show(
    table.reset_index(level=0).rename_axis("compression"),
    3,
    title="Dense against sparse inference, per batch and compression",
)
tutorial.show_figure(
    figures.sparse_speed_figure(rows), "sparsity_speed_figure"
)

# %%
for batch in batch_sizes:
    mine = [r for r in rows if r["batch"] == batch]
    paying = [r["density"] for r in mine if r["speedup"] > 1]
    best = max(r["speedup"] for r in mine)
    tutorial.glue_numbers(
        "sparsity",
        **{
            f"crossover_b{batch}": float(max(paying)) if paying else 0.0,
            f"best_speedup_b{batch}": float(best),
        },
    )
    faster = ", ".join(f"{d:.3g}" for d in paying) or "none"
    print(
        f"batch {batch}: sparse faster at densities {faster}; best speed-up "
        f"{best:.2f}x"
    )
