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
from IPython.display import Markdown, display
from myst_nb import glue

from sparse_survey import report, tutorial
from sparse_survey.experiment import Store

preset: str = tutorial.resolve_preset(preset)
records = Store(results).records(preset)
finished = [r for r in records if r["status"] == "finished"]
print(f"{len(records)} records at preset {preset}, {len(finished)} finished")
glue("compare_runs", len(records), display=False)
glue("compare_finished", len(finished), display=False)

# %% [markdown]
# ## The tables

# %%
for name, (caption, _, decimals, survey_table) in report.TABLES.items():
    display(Markdown(f"### {caption}\n\n" + report.markdown(report.table(records, name))))
    compared = report.comparison(records, name)
    if compared is not None:
        display(Markdown(f"Beside the survey's {survey_table} (diff = ours - survey):\n\n"
                         + report.markdown(compared, decimals)))

# %% [markdown]
# ## Accuracy against compression, and where each method puts its weights

# %%
report.accuracy_figure(records)

# %%
available = {r["config"]["compression"] for r in finished}
report.layer_density_figure(records, min(available, key=lambda c: abs(c - figure_compression)))

# %%
mean = report.summary(records, "accuracy")[0]
highest = max(mean.index)
best = mean.loc[highest].idxmax()
glue("compare_highest_compression", float(highest), display=False)
glue("compare_best_method", best, display=False)
glue("compare_best_accuracy", float(mean.loc[highest, best]), display=False)
print(f"best at compression {highest:g}: {best} with {mean.loc[highest, best]:.2f} %")
