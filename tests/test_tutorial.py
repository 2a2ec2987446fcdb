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


def test_a_stored_benchmark_is_measured_once_and_then_read_back(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"rows": [{"density": 0.1, "speedup": 2.0}]}

    first = tutorial.stored_benchmark("demo", measure, "smoke", str(tmp_path))
    again = tutorial.stored_benchmark("demo", measure, "smoke", str(tmp_path))
    assert len(calls) == 1 and first == again
    assert first["result"]["rows"][0]["speedup"] == 2.0
    assert first["environment"]["threads"] >= 1
    assert (tmp_path / "smoke" / "bench" / "demo.json").exists()


def test_accuracy_at_highest_compression_is_the_mean_over_seeds_there():
    def record(compression, seed, accuracy):
        return {"label": "Mag", "status": "finished",
                "config": {"compression": compression, "seed": seed},
                "metrics": {"test_acc": accuracy}}

    records = [record(1, 0, 0.8), record(2, 0, 0.5), record(2, 1, 0.7)]
    highest, accuracy = tutorial.accuracy_at_highest_compression(records)
    assert highest == 2 and accuracy == pytest.approx(60.0)
