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
# numbers, transcribed from its poster, stand beside ours, labelled as the survey's. The tables
# have the survey's shape: compression rows, one column per method, the IMP columns last.
#
# Read the time and memory tables knowing that a pruned model here is a *masked dense* model: it
# runs the same dense kernels whatever its density, so neither time nor memory can fall with
# compression. What real sparse kernels buy is measured separately (`python -m sparse_survey
# bench sparse`).

# %% tags=["parameters"]
preset: str = "auto"  # whose records: "auto" (survey on a GPU, laptop on a CPU), smoke, laptop, survey or paper
results: str = "results"  # folder of the results store
figure_compression: float = 1.0  # compression of the per-layer density picture

# %%
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from sparse_survey import report, tutorial

preset: str = tutorial.resolve_preset(preset)
records = tutorial.stored_runs(preset, results)  # the LTH controls left out
finished = [r for r in records if r["status"] == "finished"]
print(f"{len(records)} records at preset {preset}, {len(finished)} finished")
glue("compare_runs", len(records), display=False)
glue("compare_finished", len(finished), display=False)
minutes = sum(r["timings"]["total_s"] for r in records) / 60
print(f"their run times add up to {minutes:.1f} minutes "
      f"(on {', '.join(sorted({r['environment']['device_name'] for r in records}))})")
glue("compare_run_minutes", minutes, display=False)

# %% [markdown]
# ## The tables

# %%
for name, t in report.TABLES.items():
    note = f"\n\n{report.TIMING_NOTE}" if t.clock else ""
    display(Markdown(f"### {t.title}\n\n" + report.markdown(report.table(records, name)) + note))
    compared = report.comparison(records, name)
    if compared is not None:
        display(Markdown(f"Beside the survey's {t.survey} (diff = ours - survey):\n\n"
                         + report.markdown(compared, t.decimals)))

# %% [markdown]
# How far ours sit from the survey's, table by table: the mean absolute difference over the cells
# both have, and for the remaining-FLOPs table (a property of the masks, comparable across
# budgets) the share of method pairs ordered alike.

# %%
gaps = {}
for name in report.TABLES:
    compared = report.comparison(records, name)
    if compared is None:
        continue
    diffs = compared.xs("diff", axis=1, level=1).stack().dropna().abs()
    gaps[name] = {"cells compared": len(diffs),
                  "mean |ours - survey|": diffs.mean() if len(diffs) else float("nan")}
    glue(f"compare_{name}_gap", float(gaps[name]["mean |ours - survey|"]), display=False)
    glue(f"compare_{name}_cells", int(len(diffs)), display=False)
display(Markdown(report.markdown(pd.DataFrame(gaps).T.rename_axis("table"), 3)))
flops_agreement = report.ordering_agreement(records, "flops")
glue("compare_flops_pairs_alike", float(flops_agreement["pairs ordered alike"].mean()),
     display=False)

# %% [markdown]
# ## Accuracy against compression, and where each method puts its weights

# %%
import matplotlib.pyplot as plt

figure = report.accuracy_figure(records)
glue("compare_accuracy_figure", figure)  # shown here and on the results page
plt.close(figure)

# %%
available = {r["config"]["compression"] for r in finished}
figure = report.layer_density_figure(records,
                                     min(available, key=lambda c: abs(c - figure_compression)))
glue("compare_density_figure", figure)
plt.close(figure)

# %%
mean = report.summary(records, "accuracy")[0]
highest = max(mean.index)
best = mean.loc[highest].idxmax()
glue("compare_highest_compression", float(highest), display=False)
glue("compare_best_method", best, display=False)
glue("compare_best_accuracy", float(mean.loc[highest, best]), display=False)
print(f"best at compression {highest:g}: {best} with {mean.loc[highest, best]:.2f} %")
for method in mean.columns:  # glued as e.g. compare_acc_high_imp4iters
    glue(f"compare_acc_high_{report.label_key(method)}", float(mean.loc[highest, method]),
         display=False)

# %% [markdown]
# ## The dense network
#
# IMP's round 0 is the dense network trained with the same recipe: the reference every pruned
# accuracy should be read against.

# %%
dense = {r["config"]["seed"]: 100 * r["imp_rounds"][0]["test_acc"]
         for r in finished if r["config"]["method"] == "imp"}
dense_accuracy = sum(dense.values()) / len(dense) if dense else float("nan")
print(f"dense accuracy {dense_accuracy:.2f} % (seeds {sorted(dense)}); data: "
      + ", ".join(sorted({r["data"] for r in finished})))
glue("compare_dense_accuracy", dense_accuracy, display=False)

# %% [markdown]
# ## The survey's claims, tested
#
# **Orderings.** Per compression, the methods ranked by accuracy here and in the survey, and the
# share of method pairs ordered alike (pairs the survey ties are left out).

# %%
agreement = report.ordering_agreement(records)
display(Markdown(report.markdown(agreement, 2)))
glue("compare_agreement_table", agreement.style.format(precision=2).format_index("{:g}")
     .set_table_attributes('class="table"'),
     display=False)
accuracy_vs_survey = report.comparison(records, "accuracy").T  # methods as rows: fits a page
accuracy_vs_survey.columns = [f"c = {c:g}" for c in accuracy_vs_survey.columns]
glue("compare_accuracy_table", accuracy_vs_survey.style.format(precision=2, na_rep="n/a")
     .set_table_attributes('class="table"'),
     display=False)
glue("compare_pairs_alike", float(agreement["pairs ordered alike"].mean()), display=False)

# %% [markdown]
# **"IMP outperforms the one-shot methods, especially at high compression."** The best IMP
# column against the best one-shot column at each compression.

# %%
one_shot = [m for m in ("Rand", "Mag", "SNIP", "GraSP", "SynFlow") if m in mean]
iterative = [m for m in mean if m.startswith("IMP")]
both = mean[one_shot].notna().any(axis=1) & mean[iterative].notna().any(axis=1)
edge = pd.DataFrame({"best one-shot": mean.loc[both, one_shot].idxmax(axis=1),
                     "its accuracy": mean.loc[both, one_shot].max(axis=1),
                     "best IMP": mean.loc[both, iterative].idxmax(axis=1),
                     "IMP accuracy": mean.loc[both, iterative].max(axis=1)})
edge["IMP - one-shot"] = edge["IMP accuracy"] - edge["its accuracy"]
display(Markdown(report.markdown(edge, 2)))
glue("compare_imp_edge_low", float(edge["IMP - one-shot"].iloc[0]), display=False)
glue("compare_imp_edge_high", float(edge["IMP - one-shot"].iloc[-1]), display=False)
glue("compare_best_one_shot_high", edge["best one-shot"].iloc[-1], display=False)

# %% [markdown]
# **Layer collapse.** Prunable layers left with no weight at all (mean over seeds): such a
# network cannot pass a signal from input to output and scores at chance.

# %%
collapsed = report.collapsed_layers(records)
display(Markdown(report.markdown(collapsed, 1)))
glue("compare_collapsed_max", float(collapsed.max().max()), display=False)
glue("compare_collapsed_method", str(collapsed.max().idxmax()), display=False)

# %% [markdown]
# **"SNIP, GraSP and SynFlow prune later layers more aggressively; IMP's extra iterations
# concentrate pruning in the final layers."** Mean density of the first and of the last prunable
# layers at `figure_compression`; a ratio below 1 means the late layers are pruned harder.

# %%
compression = min(available, key=lambda c: abs(c - figure_compression))
layers = len(finished[0]["layer_densities"])
depth = report.depth_profile(records, compression, last=min(4, layers // 2))
display(Markdown(report.markdown(depth, 4)))
for method, row in depth.iterrows():  # glued as e.g. compare_late_early_imp2iters
    glue(f"compare_late_early_{report.label_key(method)}", float(row["late / early"]),
         display=False)

# %% [markdown]
# **"IMP gives lower inference time and memory."** How far each method's inference time and
# peak CPU memory move across all compressions (largest over smallest): a masked dense model runs
# the same kernels at every density, so both stay within measurement noise.

# %%
spread = pd.DataFrame({
    name: report.summary(records, name)[0].pipe(lambda t: t.max() / t.min())
    for name in ("inference_time", "cpu_memory")})
display(Markdown(report.markdown(spread.rename_axis("method"), 3)))
glue("compare_time_spread", float(spread["inference_time"].max()), display=False)
glue("compare_memory_spread", float(spread["cpu_memory"].max()), display=False)
