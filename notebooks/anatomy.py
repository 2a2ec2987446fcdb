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
# # Where VGG16 keeps its weights and spends its compute
#
# A global pruning threshold takes weights wherever scores are low, so it matters where the
# weights are. In VGG16 for CIFAR-10 they sit at the end: each of the six 512-channel
# convolutions holds $512 \cdot 512 \cdot 9 \approx 2.36$ M weights. The compute does not: a
# convolution costs (weights) x (output positions), the early layers run at 32 x 32 positions and
# the last three at 2 x 2, so each stage of the network costs about the same. Removing a late
# weight saves little compute; removing an early one saves a lot. That is why a method that prunes
# the late layers hardest leaves a remaining-FLOPs fraction far above its density.

# %% tags=["parameters"]
model_name: str = "vgg16"  # any name of sparse_survey.models.build
width: float = 1.0  # channel multiplier (the laptop preset uses 0.25)
image_size: int = 32  # input height and width
in_channels: int = 3  # input channels
num_classes: int = 10  # outputs

# %%
import pandas as pd
from myst_nb import glue

import sparse_survey as ss
from sparse_survey import figures, tutorial

tutorial.refuse_unknown_parameters()
model_name = tutorial.choice(model_name, "model_name", ss.models.MODELS)
width = tutorial.positive(width, "width")
for count, name in (
    (image_size, "image_size"),
    (in_channels, "in_channels"),
    (num_classes, "num_classes"),
):
    tutorial.count(count, name)
try:
    model = ss.models.build(
        model_name, num_classes, in_channels, width, image_size=image_size
    )
# too small an image for the model, too wide for the memory
except ValueError as error:
    raise tutorial.ParameterError(f"bad notebook parameter: {error}") from None
input_shape = (in_channels, image_size, image_size)
weights = {name: w.numel() for name, w in ss.masks.prunable(model).items()}
macs = ss.profile.layer_macs(model, input_shape)
table = pd.DataFrame(
    {
        "shape": {
            n: " x ".join(map(str, w.shape))
            for n, w in ss.masks.prunable(model).items()
        },
        "weights": weights,
        "MACs per image": macs,
    }
)
table["% of weights"] = 100 * table["weights"] / table["weights"].sum()
table["% of MACs"] = (
    100 * table["MACs per image"] / table["MACs per image"].sum()
)
tutorial.show(
    table.rename_axis("layer"),
    1,
    title=f"Where {model_name}'s weights and compute sit",
)
total = sum(p.numel() for p in model.parameters())
print(
    f"{total:,} parameters, {sum(weights.values()):,} prunable; "
    f"{sum(macs.values()) / 1e6:.1f} M multiply-accumulates per image"
)

# %%
figure = figures.anatomy_figure(
    weights,
    macs,
    f"{model_name} (width {width:g}): weights and compute by layer",
)
tutorial.show_figure(figure, "anatomy_figure")  # the background chapter's

# %%
# the six last convolutions (512 channels in VGG16)
late = list(weights)[-7:-1]
glue("anatomy_params", total, display=False)
glue("anatomy_prunable", sum(weights.values()), display=False)
glue("anatomy_macs_millions", sum(macs.values()) / 1e6, display=False)
glue(
    "anatomy_late_weight_share",
    float(table.loc[late, "% of weights"].sum()),
    display=False,
)
glue(
    "anatomy_late_mac_share",
    float(table.loc[late, "% of MACs"].sum()),
    display=False,
)
