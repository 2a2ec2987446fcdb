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
# # What do the methods find? Sanity checks of pruning at initialization
#
# Frankle, Dziugaite, Roy and Carbin (ICLR 2021) asked what a pruning-at-initialization mask
# *contains*, with three controls applied to a method's mask before training:
#
# - **layerwise shuffle**: the kept positions moved at random within each layer (every layer
#   keeps as many weights, over the same initial values);
# - **random reinit**: the same mask over freshly drawn weights;
# - **inverted scores**: keep the *lowest* scores instead of the highest, exactly as many: over
#   the whole network (global, as the paper does it), and within each layer at the method's own
#   count for that layer (per layer). The global inversion also moves weights between layers and
#   can empty a layer; the per-layer one asks only whether the method ranks weights well within
#   a layer.
#
# If a method found *which weights* matter, shuffle and reinit should hurt. If it found only *how
# many weights each layer keeps*, they should not: the method is then a recipe for per-layer
# densities. Inverting should hurt any method whose scores mean something. Beside them stands
# pruning *after* training, the references of the paper, each one round of IMP (train, prune by
# global magnitude, retrain) that differs only in where the survivors restart: not rewound
# (magnitude pruning after training, fine-tuned), rewound to an early step of the dense training
# (a lottery ticket with rewinding; the step chosen below by measurement), and rewound to the
# initialization (the original lottery ticket), a third line that collapses at high
# compression.
#
# **Parameters** (papermill: `-p NAME VALUE`; `papermill --help-notebook` lists them).
# `preset`: `auto` is `survey` on a GPU and `laptop` on a CPU. `precision`: `auto` is the
# preset's own on this machine (`cpu-full`: bf16 on a CPU with bf16 arithmetic, else fp32).
# Runs already in the `results` store are read, not trained again.

# %% tags=["parameters"]
preset: str = "auto"  # smoke, laptop, cpu-full, survey, paper, auto
methods: list = ["mag", "snip", "grasp", "synflow"]  # methods to check
compressions: list = [0.5, 1, 2]  # compressions c (density 10^-c)
seeds: int = 3  # seeds at the seeded compressions (one seed elsewhere)
seeded_compressions: list = [1, 2]  # c with every seed
rewind_fractions: list = [0.01, 0.05, 0.1]  # rewind steps / all steps
results: str = "results"  # the results store (runs are reused)
precision: str = "auto"  # fp32, bf16 or "auto" (the preset's own here)

# %%
import math

import numpy as np
import pandas as pd
from myst_nb import glue

import sparse_survey as ss
from sparse_survey import figures, report, tutorial

run = tutorial.parameters(
    preset, compressions, seeds, results, trains=True, precision=precision
)
if not methods:
    raise tutorial.ParameterError(
        "bad notebook parameter: methods must name at least one of "
        f"{', '.join(ss.pruners.METHODS)}"
    )
methods = [
    tutorial.choice(m, "each of methods", ss.pruners.METHODS) for m in methods
]
seeded = [
    c
    for c in tutorial.numbers(seeded_compressions, "seeded_compressions")
    if c in run.compressions
]
CONTROLS = ("shuffle", "reinit", "invert", "invert_layer")


def stored(method, **fields):
    """The records of one arm: seed 0 at every compression, every seed at the
    seeded ones (run here when not stored), and every other seed the store
    holds for those cells, so that a cell's number is the mean over all its
    stored seeds, as on every page of the book."""
    configs = run.configs(method, seeds=run.seeds[:1], **fields)
    configs += run.configs(method, seeded, run.seeds[1:], **fields)
    return tutorial.every_seed(
        tutorial.runs(configs, run.results), run.results
    )


# %% [markdown]
# ## The runs
#
# Each method with each control at every compression, the seeded compressions with every seed.
# Each is a stored run (`control` is part of a run's configuration), so a rerun of this notebook
# reuses them.

# %%
arms = {
    method: {
        None: stored(method),
        **{c: stored(method, control=c) for c in CONTROLS},
    }
    for method in methods
}
everything = [
    r
    for method in arms.values()
    for records in method.values()
    for r in records
]
spread = report.seed_spread(everything)

# %% [markdown]
# ## Pruning after training, and the step a ticket rewinds to
#
# A lottery ticket with rewinding restarts its survivors from their values at an early step of
# the dense training, where Frankle et al. (2020) found the training stable. Which step is
# measured here rather than assumed: seed 0's ticket at each candidate step (a share of the
# training), at every compression. The step chosen is the earliest whose accuracy is within
# twice the typical seed spread of the best candidate's, at the highest compression where the
# best candidate trains above chance by more than twice that spread: where every candidate is
# at chance (the shared mask has emptied a layer), they cannot be told apart.

# %%
config = run.configs("imp", seeds=run.seeds[:1], iterations=1)[0]
train_set = ss.experiment.dataset(
    config.dataset, limit_per_class=config.limit_per_class, progress=False
)[0]
steps_per_epoch = len(train_set) // config.recipe.batch_size
chance = 100 / len(train_set.classes)
total_steps = config.recipe.epochs * steps_per_epoch
candidates = [
    round(f * total_steps)
    for f in tutorial.numbers(rewind_fractions, "rewind_fractions")
]
tickets = {
    step: tutorial.runs(
        run.configs("imp", seeds=run.seeds[:1], iterations=1, rewind=step),
        run.results,
    )
    for step in candidates
}


def ticket_accuracy(step, c):
    """Seed 0's ticket rewound to ``step``, at compression ``c`` (%)."""
    return 100 * next(
        r["metrics"]["test_acc"]
        for r in tickets[step]
        if r["config"]["compression"] == c
    )


judged_at = max(
    (
        c
        for c in run.compressions
        if max(ticket_accuracy(s, c) for s in candidates) - chance
        > 2 * spread
    ),
    default=max(run.compressions),
)
best = max(ticket_accuracy(s, judged_at) for s in candidates)
rewind_step = min(
    s
    for s in candidates
    if best - ticket_accuracy(s, judged_at) <= 2 * spread
)
choice = pd.DataFrame(
    {
        "step": candidates,
        "share of training": [f"{s / total_steps:.1%}" for s in candidates],
        **{
            f"c = {c:g}": [ticket_accuracy(s, c) for s in candidates]
            for c in run.compressions
        },
    }
)
tutorial.show(
    choice.set_index("step"),
    2,
    title=(
        "A lottery ticket rewound to each candidate step, seed 0: top-1 "
        f"test accuracy (%); chosen at c = {judged_at:g}: step {rewind_step}"
    ),
)
tutorial.glue_numbers(
    "sanity",
    rewind_step=rewind_step,
    rewind_judged_at=judged_at,
    total_steps=total_steps,
    rewind_share=rewind_step / total_steps,
)

REFERENCES = {
    "fine-tuned": {"rewind": "none"},
    "rewound early": {"rewind": rewind_step},
    "rewound to init": {},
}
references = {
    name: stored("imp", iterations=1, **fields)
    for name, fields in REFERENCES.items()
}
reference_labels = {
    name: run.label("imp", iterations=1, **fields)
    for name, fields in REFERENCES.items()
}
everything += [r for records in references.values() for r in records]
spread = report.seed_spread(everything)
hours = sum(r["timings"]["total_s"] for r in everything) / 3600
tutorial.glue_numbers(
    "sanity", seed_spread=spread, runs=len(everything), run_hours=hours
)
print(
    f"{len(everything)} runs ({hours:.1f} hours of training and measuring); "
    f"typical seed-to-seed spread {spread:.2f} points"
)

# %% [markdown]
# ## Accuracy of each method and its controls
#
# Per method: its accuracy, each control's, and the three references after training, against
# compression, with a band of one standard deviation over seeds where there are several.

# %%
after_training = [r for records in references.values() for r in records]
for method, records in arms.items():
    mine = [r for arm in records.values() for r in arm] + after_training
    tutorial.show(
        report.table(mine, "accuracy")
        .T.rename_axis("arm")
        .rename(columns=lambda c: f"c = {c:g}"),
        title=f"{ss.pruners.METHODS[method].label}: top-1 test accuracy (%)",
    )
    tutorial.show_figure(
        figures.accuracy_figure(mine, with_survey=False),
        f"sanity_{method}_figure",
    )

# %% [markdown]
# ## The verdicts
#
# Each control's effect (control minus method) at each seeded compression, judged as the
# ablations notebook judges a hidden choice: it matters where it moves accuracy by more than
# twice the larger of the typical seed spread and the two cells' own spreads.

# %%
rows = []
for method, records in arms.items():
    base = run.label(method)
    for control in CONTROLS:
        effects = report.effects(
            records[None] + records[control],
            base,
            run.label(method, control=control),
        )
        for c in seeded:
            if c not in effects.index:
                continue
            judged_by = float(
                np.nanmax([spread, effects.at[c, "seed spread"]])
            )
            rows.append(
                {
                    "method": base,
                    "control": ss.experiment.CONTROLS[control],
                    "compression": c,
                    "effect": effects.at[c, "effect"],
                    "judged by": judged_by,
                    "verdict": report.verdict(
                        effects.at[c, "effect"], judged_by
                    ),
                }
            )
verdicts = pd.DataFrame(rows).set_index("method")
tutorial.show(
    verdicts, 2, title="Each control's effect on accuracy (points), per method"
)
for row in rows:
    key = (
        f"{report.label_key(row['method'])}_{report.label_key(row['control'])}"
        f"_c{row['compression']:g}".replace(".", "_")
    )
    tutorial.glue_numbers("sanity", **{f"{key}_effect": float(row["effect"])})

# %% [markdown]
# ## How far each method sits from pruning after training
#
# Each method's accuracy minus each reference's at each seeded compression: negative where
# pruning at initialization falls short of pruning after training, judged by the same rule.

# %%
gaps = []
for method, records in arms.items():
    base = run.label(method)
    for name, label in reference_labels.items():
        effects = report.effects(references[name] + records[None], label, base)
        for c in seeded:
            if c not in effects.index:
                continue
            judged_by = float(
                np.nanmax([spread, effects.at[c, "seed spread"]])
            )
            gaps.append(
                {
                    "method": base,
                    "reference": name,
                    "compression": c,
                    "method - reference": effects.at[c, "effect"],
                    "seeds": effects.at[c, "seeds"],
                    "judged by": judged_by,
                    "verdict": report.verdict(
                        effects.at[c, "effect"], judged_by
                    ),
                }
            )
            after = f"{report.label_key(base)}_after_{report.label_key(name)}"
            key = f"{after}_c{c:g}".replace(".", "_")
            tutorial.glue_numbers(
                "sanity", **{f"{key}_gap": float(effects.at[c, "effect"])}
            )
tutorial.show(
    pd.DataFrame(gaps).set_index("method"),
    2,
    title=(
        "Each method against pruning after training (one round of IMP: "
        f"fine-tuned, rewound to step {rewind_step}, rewound to "
        "initialization), points"
    ),
)

# %% [markdown]
# ## At a glance
#
# Every judged effect above in one table, in points: a control's effect (control minus method)
# and the method's distance to each reference after training (method minus reference), per
# seeded compression; "matters" marks an effect of more than twice the spread it is judged by.

# %%
def judged(effect, spread):
    if math.isnan(spread):
        return f"{effect:+.1f} (no spread)"
    return f"{effect:+.1f}" + (
        " matters" if report.matters(effect, spread) else ""
    )


glance = pd.DataFrame(
    [
        {
            "method": r["method"],
            "against": f"{r['control']} - method",
            "compression": r["compression"],
            "effect": judged(r["effect"], r["judged by"]),
        }
        for r in rows
    ]
    + [
        {
            "method": g["method"],
            "against": f"method - after training, {g['reference']}",
            "compression": g["compression"],
            "effect": judged(g["method - reference"], g["judged by"]),
        }
        for g in gaps
    ]
)
glance = glance.pivot_table(
    index=["method", "against"],
    columns="compression",
    values="effect",
    aggfunc="first",
    sort=False,
).rename(columns=lambda c: f"c = {c:g}")
glance = glance.rename_axis(columns=None).reset_index(level="against")
tutorial.show(
    glance,
    title="Every control's effect and each method's distance to pruning "
    "after training (points)",
)
glue(
    "sanity_glance_table",
    tutorial.for_the_book(glance),
    display=False,
)

# %% [markdown]
# ## What the shuffle keeps, and where inverting puts the weights
#
# Shuffling moves weights only within a layer, so a shuffled mask has its method's per-layer
# densities exactly (checked below on every stored pair). Inverting spends the same budget
# elsewhere: each method's per-layer densities beside its inverted mask's, at the
# compression nearest 1, seed 0.

# %%
def cell(record):
    return record["config"]["compression"], record["config"]["seed"]


made_on = report.kind_of_device  # "cpu" or "cuda"
pairs = [
    (plain, moved)
    for records in arms.values()
    for plain in records[None]
    for moved in records["shuffle"]
    if cell(plain) == cell(moved)
    and plain["status"] == moved["status"] == "finished"
]
same_device = [(p, m) for p, m in pairs if made_on(p) == made_on(m)]
kept = all(
    p["layer_densities"] == m["layer_densities"] for p, m in same_device
)
print(
    f"{len(same_device)} method and shuffle pairs made on one kind of device; "
    f"every layer's density the same in each: {kept}"
)
assert kept, "a shuffled mask changed a layer's density"

# A method scored on a GPU and its controls scored on the CPU start from
# masks that float rounding of the scores sets a few weights apart: how many
# at most?
layer_sizes = {
    name: w.numel()
    for name, w in ss.masks.prunable(
        ss.experiment.fresh_model(
            config.model,
            config.width,
            train_set.shape,
            len(train_set.classes),
            config.seed,
            run.device,
        )
    ).items()
}
across = [(p, m) for p, m in pairs if made_on(p) != made_on(m)]
moved_weights = max(
    (
        round(abs(p["layer_densities"][n] - m["layer_densities"][n]) * size)
        for p, m in across
        for n, size in layer_sizes.items()
    ),
    default=0,
)
tutorial.glue_numbers(
    "sanity",
    shuffle_pairs=len(same_device),
    cross_device_pairs=len(across),
    cross_device_layer_weights=moved_weights,
)
if across:
    print(
        f"{len(across)} pairs whose method ran on another kind of device than "
        f"its shuffle ({', '.join(sorted({made_on(p) for p, _ in across}))}); "
        f"their masks differ by at most {moved_weights} weights in a layer "
        f"(of {min(layer_sizes.values())} to {max(layer_sizes.values())})"
    )
middle = min(run.compressions, key=lambda c: abs(c - 1))
first_seed = [
    r
    for records in arms.values()
    for arm in (records[None], records["invert"])
    for r in arm
    if r["config"]["seed"] == run.seeds[0]
]
tutorial.show_figure(
    figures.layer_density_figure(first_seed, middle), "sanity_density_figure"
)

# %% [markdown]
# ## Why shuffling can help: units left with no weight
#
# A method that ranks weights one by one can keep no weight at all in some units of a layer (a
# convolution's filters, the classifier's rows). Such a unit outputs a constant, its bias: behind
# BatchNorm a dead channel, and the next layer's weights that read it are spent on nothing.
# Shuffling spreads a layer's kept weights at random over all its units, so that at these
# densities few stay empty. Below, each method's starting mask and its shuffle are rebuilt from
# the run's config (seed 0), checked against the stored run's per-layer densities, and their
# empty units counted, beside the accuracy each trained to.

# %%
def starting_model(config):
    """The stored run's model as it started training: initialised, pruned,
    control applied."""
    train = ss.experiment.dataset(
        config.dataset, limit_per_class=config.limit_per_class, progress=False
    )[0]
    model = ss.experiment.fresh_model(
        config.model,
        config.width,
        train.shape,
        len(train.classes),
        config.seed,
        run.device,
    )
    return ss.experiment.prune_at_init(model, config, train)


def rebuilt(method, c, records, **fields):
    """Seed 0's starting model at compression ``c`` and its stored record among
    ``records``, the rebuilt mask checked against the record's per-layer
    densities."""
    config = run.configs(method, [c], run.seeds[:1], **fields)[0]
    record = next(r for r in records if cell(r) == (c, run.seeds[0]))
    model = starting_model(config)
    assert ss.masks.layer_densities(model) == record["layer_densities"], (
        config.label
    )
    return model, record


empty, unit_counts = [], set()  # every model of the preset has the same units
for method, records in arms.items():
    for c in seeded:
        row = {"method": run.label(method), "compression": c}
        for control, arm in ((None, "method"), ("shuffle", "shuffled")):
            model, record = rebuilt(
                method, c, records[control], control=control
            )
            unit_counts.add(
                sum(w.shape[0] for w in ss.masks.prunable(model).values())
            )
            row[f"empty units, {arm}"] = sum(
                ss.masks.empty_units(model).values()
            )
            row[f"accuracy (%), {arm}"] = 100 * record["metrics"]["test_acc"]
        empty.append(row)
        method_key = report.label_key(run.label(method))
        key = f"{method_key}_empty_units_c{c:g}".replace(".", "_")
        tutorial.glue_numbers(
            "sanity",
            **{
                key: row["empty units, method"],
                f"{key}_shuffled": row["empty units, shuffled"],
            },
        )
(units,) = unit_counts
tutorial.glue_numbers("sanity", units=units)
empty = pd.DataFrame(empty).set_index("method")
tutorial.show(
    empty,
    1,
    title=f"Units that keep no weight, of {units} in all, and accuracy "
    "(seed 0), each method's mask against its shuffle",
)

# %% [markdown]
# ## SynFlow from the inside: one weight of rounding per round
#
# The shuffle control asks whether *which* weights a method keeps matters. The same question can
# be asked of SynFlow from the inside: each of its 100 rounds keeps a whole number of weights, and
# implementations differ in how they round it. This package rounds to the nearest; Synaptic-Flow's
# own code prunes the `int((1 - d) * N)` lowest scores, so it keeps the count rounded *up*, one
# weight more at most (`rounding="up"`, a run of its own). Both starting masks are rebuilt below
# from the stored runs' configs (seed 0, checked against the records' per-layer densities) and
# compared: the share of kept weights they have in common (intersection over union) and the
# largest difference of a layer's density; beside them, what each trains to, judged by the same
# rule as the controls.

# %%
rounded_up = stored("synflow", rounding="up")
plain_synflow = (
    arms["synflow"][None] if "synflow" in arms else stored("synflow")
)
up_label = run.label("synflow", rounding="up")
rounding_effects = report.effects(
    plain_synflow + rounded_up, run.label("synflow"), up_label
)
# overlap: compression -> (IoU, largest layer density gap)
rounding_rows, overlap = [], {}
for c in run.compressions:
    nearest, up = (
        ss.masks.get(rebuilt("synflow", c, records, rounding=rounding)[0])
        for rounding, records in (
            ("nearest", plain_synflow),
            ("up", rounded_up),
        )
    )
    both = sum(int((nearest[n] & up[n]).sum()) for n in nearest)
    either = sum(int((nearest[n] | up[n]).sum()) for n in nearest)
    iou = both / either
    layer_gap = max(
        abs(float(nearest[n].float().mean() - up[n].float().mean()))
        for n in nearest
    )
    overlap[c] = iou, layer_gap
    row = {
        "compression": c,
        "kept in common (IoU)": f"{iou:.1%}",
        "largest layer density gap": f"{layer_gap:.4f}",
    }
    if c in rounding_effects.index:
        effect = rounding_effects.at[c, "effect"]
        judged_by = float(
            np.nanmax([spread, rounding_effects.at[c, "seed spread"]])
        )
        row.update(
            {
                "nearest (%)": (
                    f"{rounding_effects.at[c, run.label('synflow')]:.2f}"
                ),
                "up (%)": f"{rounding_effects.at[c, up_label]:.2f}",
                "up - nearest": judged(effect, judged_by),
                "judged by": f"{judged_by:.2f}",
                "seeds": rounding_effects.at[c, "seeds"],
            }
        )
        key = f"synflow_rounding_c{c:g}".replace(".", "_")
        tutorial.glue_numbers(
            "sanity", **{f"{key}_effect": float(effect), f"{key}_iou": iou}
        )
    rounding_rows.append(row)
tutorial.show(
    pd.DataFrame(rounding_rows).set_index("compression"),
    title=(
        "SynFlow (100 rounds), kept counts rounded to the nearest against "
        "rounded up: the starting masks (seed 0) and the accuracy they train "
        'to (points; "matters": more than twice the spread it is judged by)'
    ),
)
iou_high, layer_gap_high = overlap[max(overlap)]
tutorial.glue_numbers(
    "sanity", synflow_iou_high=iou_high, synflow_layer_gap_high=layer_gap_high
)
