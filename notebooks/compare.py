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
# # Comparing the methods: the survey's tables from stored runs
#
# Every number below is computed from the run records in the results store; the survey's own
# numbers, transcribed from its poster, stand beside ours, labelled as the survey's. The tables are
# the survey's turned on their side, to fit a page: a row per method (the IMP rows last), a column
# per compression, the survey's number under ours.
#
# Read the time and memory tables knowing that a pruned model here is a *masked dense* model: it
# runs the same dense kernels whatever its density, so neither time nor memory can fall with
# compression. What real sparse kernels buy is measured separately (`python -m sparse_survey
# bench sparse`).
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # whose records: a preset, or auto
results: str = "results"  # folder of the results store
figure_compression: float = 1.0  # compression of the per-layer density picture
precision: str = "auto"  # whose runs: fp32, bf16 or "auto"

# %%
import pandas as pd
from IPython.display import Markdown, display

from sparse_survey import figures, report, tutorial

run = tutorial.parameters(
    preset,
    results=results,
    figure_compression=figure_compression,
    precision=precision,
)
# the survey's columns and the train-mode BN rows, at one precision
records = tutorial.stored_runs(run.preset, run.results, run.precision)
finished = [r for r in records if r["status"] == "finished"]
minutes = sum(r["timings"]["total_s"] for r in records) / 60
tutorial.glue_numbers(
    "compare",
    runs=len(records),
    finished=len(finished),
    run_minutes=minutes,
    preset=run.preset,
    scale=report.scale(records),
)
print(
    f"{len(records)} records at preset {run.preset}, {len(finished)} "
    "finished; their run "
    f"times add up to {minutes:.1f} minutes "
    f"(on {', '.join(sorted({report.host(r) for r in records}))})"
)

# the full-width VGG16 of the survey preset (trained on a GPU): its rows
# stand under this preset's in table 1 wherever its cells are stored
at_survey_scale = (
    []
    if run.preset == "survey"
    else tutorial.runs_at_scale("survey", run.results)
)
survey_scale_dense = [r for r in at_survey_scale if r["label"] == "Dense"]
tutorial.glue_numbers(
    "compare",
    survey_scale_runs=len(at_survey_scale),
    survey_scale_dense=100
    * sum(r["metrics"]["test_acc"] for r in survey_scale_dense)
    / len(survey_scale_dense)
    if survey_scale_dense
    else float("nan"),
)
print(
    f"{len(at_survey_scale)} finished runs at the survey preset beside them"
    + (
        f" ({at_survey_scale[0]['config']['precision']}, on "
        f"{', '.join(sorted({report.host(r) for r in at_survey_scale}))})"
        if at_survey_scale
        else ""
    )
)

# %% [markdown]
# ## The tables

# %%
display(Markdown(report.tables_markdown(records)))

# %% [markdown]
# How far ours sit from the survey's, table by table: the mean absolute difference between our
# cell (the mean over its seeds) and the survey's, over the cells both have, in the table's unit;
# for the remaining-FLOPs table (a property of the masks, comparable across budgets) also the share
# of method pairs ordered alike. The CPU-memory table has no row: the survey states no unit.

# %%
gaps = []
for name, spec in report.TABLES.items():
    diffs = report.survey_gaps(records, name)
    # none without the survey's table in our unit, or a run that measures it
    if not len(diffs):
        continue
    gaps.append(
        {
            "table": f"{spec.survey.replace('table', 'table ')}: {spec.title}",
            "cells compared": len(diffs),
            "mean absolute gap": diffs.mean(),
        }
    )
    tutorial.glue_numbers(
        "compare",
        **{
            f"{name}_gap": float(diffs.mean()),
            f"{name}_cells": int(len(diffs)),
        },
    )
# table 1 again at the survey's own scale, over the cells stored there
diffs = report.survey_gaps(at_survey_scale, "accuracy")
tutorial.glue_numbers(
    "compare",
    survey_scale_cells=int(len(diffs)),
    survey_scale_gap=float(diffs.mean()) if len(diffs) else float("nan"),
)
if len(diffs):
    gaps.append(
        {
            "table": "table 1 at the survey preset (full-width VGG16)",
            "cells compared": len(diffs),
            "mean absolute gap": diffs.mean(),
        }
    )
tutorial.show(
    pd.DataFrame(gaps).set_index("table"),
    3,
    title="Mean absolute gap to the survey, per table",
)
flops_agreement = report.ordering_agreement(records, "flops")
tutorial.glue_numbers(
    "compare",
    flops_pairs_alike=float(flops_agreement["pairs ordered alike"].mean()),
)

# %% [markdown]
# ## Accuracy against compression, and where each method puts its weights

# %%
tutorial.show_figure(
    figures.accuracy_figure(records), "compare_accuracy_figure"
)
compression = report.nearest_compression(records, run.figure_compression)
tutorial.show_figure(
    figures.layer_density_figure(records, compression),
    "compare_density_figure",
)

# %%
mean = report.summary(records, "accuracy")[0]
highest = max(mean.index)
best = mean.loc[highest].idxmax()
tutorial.glue_numbers(
    "compare",
    highest_compression=float(highest),
    best_method=best,
    best_accuracy=float(mean.loc[highest, best]),
)
print(
    f"best at compression {highest:g}: {best} with "
    f"{mean.loc[highest, best]:.2f} %"
)
tutorial.glue_numbers(
    "compare",
    **{
        f"acc_high_{report.label_key(method)}": float(
            mean.loc[highest, method]
        )
        for method in mean.columns
    },
)

# %% [markdown]
# ## The dense network
#
# IMP's round 0 is the dense network trained with the same recipe: the reference every pruned
# accuracy should be read against. Each dense network counts once: IMP runs of a seed that took
# it from the cache, or trained it again on the same machine, report the same round 0; a grid made
# on several machines trained it on each (their kernels differ, so the same seed ends slightly
# apart). The dense accuracy is the mean over seeds of each seed's mean over its distinct dense
# networks; the range is the widest gap between two dense networks of one seed.

# %%
dense = {}  # seed -> {accuracy: the machine that trained it}
for r in finished:
    if r["config"]["method"] == "imp":
        dense.setdefault(r["config"]["seed"], {})[
            100 * r["imp_rounds"][0]["test_acc"]
        ] = report.host(r)
per_seed = [sum(a) / len(a) for a in dense.values()]
dense_accuracy = sum(per_seed) / len(per_seed) if per_seed else float("nan")
dense_range = max(
    (max(a) - min(a) for a in dense.values()), default=float("nan")
)
tutorial.glue_numbers(
    "compare", dense_accuracy=dense_accuracy, dense_range=dense_range
)
for seed, accuracies in sorted(dense.items()):
    print(
        f"seed {seed}: dense "
        + ", ".join(
            f"{a:.2f} % ({machine})"
            for a, machine in sorted(accuracies.items())
        )
    )
print(
    f"dense accuracy {dense_accuracy:.2f} %; data: "
    + ", ".join(sorted({r["data"] for r in finished}))
)

# %% [markdown]
# ## The survey's claims, tested
#
# **Orderings.** Per compression, the methods ranked by accuracy here and in the survey, and the
# share of method pairs ordered alike (pairs the survey ties are left out).

# %%
from myst_nb import glue

agreement = report.ordering_agreement(records)
tutorial.show(
    agreement, 2, title="Method pairs ordered as the survey orders them"
)
glue(
    "compare_agreement_table",
    tutorial.for_the_book(agreement).format(precision=2).format_index("{:g}"),
    display=False,
)


# the survey's six tables, each beside ours, for the results chapter
for name in (
    "accuracy",
    "inference_time",
    "flops",
    "cpu_memory",
    "gpu_allocated",
    "gpu_reserved",
):
    glue(
        f"compare_{name}_table",
        tutorial.for_the_book(
            report.beside_survey(
                records,
                name,
                {"survey scale": at_survey_scale}
                if name == "accuracy"
                else None,
            )
        ),
        display=False,
    )
tutorial.glue_numbers(
    "compare", pairs_alike=float(agreement["pairs ordered alike"].mean())
)

# %% [markdown]
# **"IMP outperforms the one-shot methods, especially at high compression."** The best IMP
# column against the best one-shot column at each compression.

# %%
one_shot = [m for m in report.ONE_SHOT if m in mean]
iterative = [m for m in mean if m.startswith("IMP")]
both = mean[one_shot].notna().any(axis=1) & mean[iterative].notna().any(axis=1)
edge = pd.DataFrame(
    {
        "best one-shot": mean.loc[both, one_shot].idxmax(axis=1),
        "its accuracy": mean.loc[both, one_shot].max(axis=1),
        "best IMP": mean.loc[both, iterative].idxmax(axis=1),
        "IMP accuracy": mean.loc[both, iterative].max(axis=1),
    }
)
edge["IMP - one-shot"] = edge["IMP accuracy"] - edge["its accuracy"]
if len(edge):
    tutorial.show(
        edge, 2, title="Best IMP against best one-shot method, per compression"
    )
else:
    print("no compression has both an IMP run and a one-shot run stored yet")
tutorial.glue_numbers(
    "compare",
    imp_edge_low=float(edge["IMP - one-shot"].iloc[0])
    if len(edge)
    else float("nan"),
    imp_edge_high=float(edge["IMP - one-shot"].iloc[-1])
    if len(edge)
    else float("nan"),
    best_one_shot_high=edge["best one-shot"].iloc[-1] if len(edge) else "",
)

# %% [markdown]
# **GraSP, the weakest at mild compression.** At each compression, how far GraSP sits below the
# weakest of the other one-shot methods (positive: below all of them), scored as the survey
# scored it and, where that was run, with BatchNorm in train mode as GraSP's own code scores.

# %%
others = [m for m in ("Rand", "Mag", "SNIP", "SynFlow") if m in mean]
lags = pd.DataFrame(
    {
        grasp: mean[others].min(axis=1) - mean[grasp]
        for grasp in ("GraSP", "GraSP (train-mode BN)")
        if grasp in mean and others
    },
    index=mean.index,
)
if lags.notna().any().any():
    tutorial.show(
        lags.dropna(how="all"),
        2,
        title="How far GraSP sits below the weakest other "
        "one-shot method, per compression",
    )
else:
    print(
        "GraSP and another one-shot method are not both stored at any "
        "compression yet"
    )
nothing = pd.Series(float("nan"), index=mean.index)
lag = lags.get("GraSP", nothing).dropna()
behind = lag[lag > 0]
train_lag = lags.get("GraSP (train-mode BN)", nothing).dropna()
# what scoring in train mode gains GraSP, per compression
# (eval mode's lag less train mode's)
train_gain = (
    lags.get("GraSP", nothing) - lags.get("GraSP (train-mode BN)", nothing)
).dropna()
tutorial.glue_numbers(
    "compare",
    grasp_weakest=len(behind),
    grasp_compressions=len(lag),
    grasp_lag_min=float(behind.min()),
    grasp_lag_max=float(behind.max()),
    grasp_train_compressions=len(train_lag),
    grasp_train_lag_max=float(train_lag.max()),
    grasp_train_gain_max=float(train_gain.max()),
)

# %% [markdown]
# **Layer collapse.** Prunable layers left with no weight at all (mean over seeds): such a
# network cannot pass a signal from input to output and scores at chance.

# %%
collapsed = report.collapsed_layers(records)
tutorial.show(
    collapsed.T.rename_axis("method").rename(columns=lambda c: f"c = {c:g}"),
    1,
    title="Prunable layers left with no weight (mean over seeds)",
)
tutorial.glue_numbers(
    "compare",
    collapsed_max=float(collapsed.max().max()),
    collapsed_method=str(collapsed.max().idxmax()),
)

# %% [markdown]
# **"SNIP, GraSP and SynFlow prune later layers more aggressively; IMP's extra iterations
# concentrate pruning in the final layers."** Mean density of the first and of the last prunable
# layers at `figure_compression`; a ratio below 1 means the late layers are pruned harder.

# %%
layers = len(finished[0]["layer_densities"])
depth = report.depth_profile(records, compression, last=min(4, layers // 2))
tutorial.show(
    depth, 4, title="Mean density of the first and the last prunable layers"
)
tutorial.glue_numbers(
    "compare",
    **{
        f"late_early_{report.label_key(method)}": float(row["late / early"])
        for method, row in depth.iterrows()
    },
)

# %% [markdown]
# **"IMP gives lower inference time and memory."** How far each method's inference time and
# peak CPU memory move across all compressions (largest over smallest), over the runs that were
# timed alone: a masked dense model runs the same kernels at every density, so both stay within
# measurement noise.

# %%
shared = [r for r in finished if report.contended(r, "inference_time")]
alone = report.uncontended(finished, "inference_time")
measured = {"inference_time": alone, "cpu_memory": finished}
spread = pd.DataFrame(
    {
        name: report.summary(runs, name)[0].pipe(lambda t: t.max() / t.min())
        for name, runs in measured.items()
        if runs
    }
).dropna(axis="columns", how="all")
glued = {"inference_time": "time_spread", "cpu_memory": "memory_spread"}
why_not = {  # why a column has no number
    "inference_time": "no run was timed alone",
    "cpu_memory": report.TABLES["cpu_memory"].unmeasured,
}
for name in measured:
    if name not in spread:
        print(f"no spread of {name}: {why_not[name]}")
if len(spread.columns):
    tutorial.show(
        spread.rename_axis("method"),
        3,
        title="Largest over smallest mean across compressions, per method",
    )
if alone:
    seconds = pd.DataFrame(
        {
            "machine": [report.host(r) for r in alone],
            "inference time (s)": [r["metrics"]["time_s"] for r in alone],
        }
    )
    by_machine = (
        seconds.groupby("machine")["inference time (s)"]
        .describe()[["count", "min", "50%", "max"]]
        .rename(columns={"50%": "median"})
        .astype({"count": int})
    )
    tutorial.show(
        by_machine,
        2,
        title="Inference time of the test set by machine, runs timed alone",
    )
    glue(
        "compare_time_by_machine",
        tutorial.for_the_book(by_machine).format(precision=2),
        display=False,
    )
tutorial.glue_numbers(
    "compare",
    contended_runs=len(shared),
    **{glued[name]: float(column.max()) for name, column in spread.items()},
)
print(
    f"{len(shared)} of {len(finished)} runs were timed while other work "
    "shared the machine"
)
