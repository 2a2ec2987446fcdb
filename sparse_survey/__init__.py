"""sparse_survey: pruning methods for neural networks, compared and measured.

``import sparse_survey as ss`` gives the modules: ``ss.models`` (model zoo), ``ss.data`` (data sets
and the on-device loader), ``ss.masks`` (prunable weights and masks), ``ss.pruners`` (the pruning
methods), ``ss.lottery`` (IMP and its controls), ``ss.train`` (training), ``ss.profile`` (costs),
``ss.sparse`` (CSR execution) and ``ss.experiment`` (runs, store, sweeps). ``sparse_survey.report``
(tables and figures) is imported on its own.
"""

__version__ = "0.1.0"

from . import data, experiment, lottery, masks, models, profile, pruners, sparse, train  # noqa: E402

__all__ = ["data", "experiment", "lottery", "masks", "models", "profile", "pruners", "sparse",
           "train"]
