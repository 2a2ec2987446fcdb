"""The notebooks' helpers: parameters as papermill passes them, and clear errors."""

import pytest

from sparse_survey import tutorial


def test_numbers_accepts_lists_numbers_and_the_text_papermill_passes():
    assert tutorial.numbers([0.5, 1]) == [0.5, 1]
    assert tutorial.numbers(2) == [2]
    assert tutorial.numbers("[0.5,1,2]") == [0.5, 1, 2]  # papermill -p compressions [0.5,1,2]
    for bad in ("fast", [], ["a"], [True], None):
        with pytest.raises(ValueError, match="compressions must be a non-empty list"):
            tutorial.numbers(bad, "compressions")


def test_stored_runs_says_what_to_run_when_the_store_is_empty(tmp_path):
    with pytest.raises(RuntimeError, match="sweep --preset smoke"):
        tutorial.stored_runs("smoke", str(tmp_path))


def test_preset_names_are_checked():
    assert tutorial.resolve_preset("smoke") == "smoke"
    assert tutorial.resolve_preset("auto") in ("laptop", "survey")
    with pytest.raises(ValueError, match="unknown preset"):
        tutorial.resolve_preset("huge")
