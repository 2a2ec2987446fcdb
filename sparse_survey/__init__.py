"""sparse_survey: pruning methods for neural networks, compared and measured.

``import sparse_survey as ss`` gives the modules: ``ss.models`` (model zoo), ``ss.data`` (data sets
and the on-device loader), ``ss.masks`` (prunable weights and masks), ``ss.pruners`` (the pruning
methods), ``ss.train`` (training).
"""

__version__ = "0.1.0"

from . import data, masks, models, pruners, train  # noqa: E402

__all__ = ["data", "masks", "models", "pruners", "train"]
