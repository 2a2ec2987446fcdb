"""Executed notebooks the book still shows from an earlier execution, because the runs their
notebook now reads are not all stored yet (the work list, worklist.yaml, makes them). Each names
one of those runs: the book's tests pass over the copy's page only while that run is missing, so
once it is stored the copy must be executed again (the reproduce page's command) and removed
from here."""

from sparse_survey.experiment import RunConfig
from sparse_survey.store import Store

AWAITING_RUNS: dict[str, RunConfig] = {}


def awaiting(results) -> set[str]:
    """The executed notebooks (by name) that still wait for their runs in the store ``results``."""
    return {name for name, config in AWAITING_RUNS.items() if not Store(results).done(config)}
