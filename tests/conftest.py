"""Shared fixtures. CIFAR-10 tests use the archive named by $SPARSE_SURVEY_DATA or the one in
../shared/data, and skip (saying so) when neither is there."""

import os
from pathlib import Path

import pytest
import torch

from sparse_survey import data, threads

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.zip"


def cifar10_source() -> str | None:
    for candidate in (os.environ.get("SPARSE_SURVEY_DATA"), SHARED):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def cifar10():
    source = cifar10_source()
    if source is None:
        pytest.skip("CIFAR-10 data missing: set SPARSE_SURVEY_DATA or put ../shared/data beside "
                    "the repository")
    return data.load("cifar10", source)


@pytest.fixture(scope="session")
def digits():
    return data.load("digits")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fixed_threads(monkeypatch):
    """torch's CPU thread count held fixed (``SPARSE_SURVEY_ADAPT_THREADS=0``; the processes a
    test starts inherit it), for tests that compare two trainings bit for bit: a count that made
    way for another process (on a busy machine) changes the order of some sums
    (see :mod:`sparse_survey.threads`)."""
    monkeypatch.setenv(threads.ENVIRONMENT_SWITCH, "0")
