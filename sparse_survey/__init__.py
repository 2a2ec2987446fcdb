"""sparse_survey: pruning methods for neural networks, compared and measured.

``import sparse_survey as ss`` gives the modules: ``ss.models`` (model zoo), ``ss.data`` (data sets
and the on-device loader), ``ss.masks`` (prunable weights and masks), ``ss.pruners`` (the pruning
methods), ``ss.lottery`` (IMP and its controls), ``ss.train`` (training), ``ss.profile`` (costs),
``ss.sparse`` (CSR execution), ``ss.experiment`` (presets, run configs, one run), ``ss.store``
(the results store) and ``ss.sweeps`` (grids and sweeps). ``sparse_survey.report`` (tables),
``sparse_survey.figures`` (the book's figures) and ``sparse_survey.tutorial`` (the notebooks'
helpers) are imported on their own.
"""

__version__ = "0.1.0"

from . import (  # noqa: E402
    data,
    experiment,
    lottery,
    masks,
    models,
    profile,
    pruners,
    sparse,
    store,
    sweeps,
    train,
)

__all__ = ["data", "experiment", "lottery", "masks", "models", "profile", "pruners", "sparse",
           "store", "sweeps", "train"]
