"""The notebooks' helpers: parameters as papermill passes them, and clear errors."""

import dataclasses
from pathlib import Path

import pytest
import torch

from sparse_survey import tutorial
from sparse_survey.experiment import RunConfig, config_dict, preset_precision
from sparse_survey.store import Store

ROOT = Path(__file__).resolve().parents[1]


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


def test_stored_runs_are_read_at_one_precision_the_machines_unless_told(tmp_path):
    """A preset whose precision is the machine's stores bf16 runs from one machine and fp32 runs
    from another; a notebook reads the ones its own runs would be (or those it names)."""
    def stored(precision, accuracy):
        config = RunConfig.from_preset("smoke", "mag", 1, precision=precision)
        return Store(tmp_path).write({
            "key": config.key, "label": config.label, "status": "finished",
            "config": config_dict(config), "metrics": {"test_acc": accuracy}, "history": [],
            "layer_densities": {}, "weight_histograms": {}, "timings": {}, "environment": {}})

    stored("bf16", 0.9)
    with pytest.raises(RuntimeError, match=r"no finished fp32 runs .* in bf16 \(precision='bf16' "
                                           "reads them"):
        tutorial.stored_runs("smoke", tmp_path, precision="fp32")
    stored("fp32", 0.8)
    for precision, accuracy in (("fp32", 0.8), ("bf16", 0.9),
                                ("auto", 0.9 if preset_precision("smoke") == "bf16" else 0.8)):
        (read,) = tutorial.stored_runs("smoke", tmp_path, precision=precision)
        assert read["metrics"]["test_acc"] == accuracy
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        tutorial.stored_runs("smoke", tmp_path, precision="fp16")


def test_runs_at_another_scale_are_its_current_grid_and_dense_at_its_commonest_precision(
        tmp_path):
    """The survey preset's runs that table 1 shows beside cpu-full's: none, not an error, while
    none are stored; then its survey-grid and dense runs of the preset's current recipe, at the
    precision most of them took (a cell holds one), fp32 on a tie; failed runs left out."""
    assert tutorial.runs_at_scale("survey", tmp_path) == []

    def stored(method, precision, status="finished", seed=0, **recipe):
        config = RunConfig.from_preset("survey", method, 0 if method == "dense" else 1,
                                       seed=seed, precision=precision)
        if recipe:  # a sizing run with another recipe: stale once the preset is set
            config = dataclasses.replace(
                config, recipe=dataclasses.replace(config.recipe, **recipe))
        Store(tmp_path).write({
            "key": config.key, "label": config.label, "status": status,
            "config": config_dict(config), "metrics": {"test_acc": 0.9}, "history": [],
            "layer_densities": {}, "weight_histograms": {}, "timings": {}, "environment": {}})

    stored("mag", "fp32")
    stored("snip", "bf16")
    assert [r["label"] for r in tutorial.runs_at_scale("survey", tmp_path)] == ["Mag"]  # a tie
    stored("dense", "bf16")
    stored("dense", "bf16", seed=1, epochs=7)
    stored("grasp", "bf16", status="failed")
    chosen = tutorial.runs_at_scale("survey", tmp_path)
    assert sorted(r["label"] for r in chosen) == ["Dense", "SNIP"]
    assert {r["config"]["precision"] for r in chosen} == {"bf16"}
    with pytest.raises(ValueError, match="unknown preset 'wide'"):
        tutorial.runs_at_scale("wide", tmp_path)


def test_preset_names_are_checked():
    assert tutorial.resolve_preset("smoke") == "smoke"
    assert tutorial.resolve_preset("auto") == ("survey" if torch.cuda.is_available() else "laptop")
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


def test_glued_accuracy_is_the_mean_over_seeds_at_the_highest_compression(capsys):
    def record(compression, seed, accuracy):
        return {"label": "Mag", "status": "finished",
                "config": {"compression": compression, "seed": seed, "precision": "fp32"},
                "metrics": {"test_acc": accuracy}}

    records = [record(1, 0, 0.8), record(2, 0, 0.5), record(2, 1, 0.7)]
    highest, accuracy = tutorial.glue_accuracy("mag", records)
    assert highest == 2 and accuracy == pytest.approx(60.0)
    assert "accuracy at compression 2: 60.00 %" in capsys.readouterr().out


def test_relative_results_folders_are_the_repositorys():
    assert tutorial.results_dir("results") == ROOT / "results"
    assert tutorial.results_dir("/elsewhere/results") == Path("/elsewhere/results")


def test_positive_shares_count_kept_weights_per_layer_and_pooled_over_the_hidden_layers():
    from sparse_survey import masks

    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False),
                                torch.nn.Linear(2, 2, bias=False),
                                torch.nn.Linear(2, 3, bias=False),
                                torch.nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
        model[1].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, -1.0]]))
        model[3].weight.copy_(torch.tensor([[1.0, -1.0, -1.0]]))
    masks.attach(model, {"1.weight": torch.tensor([[True, True], [True, False]]),  # 3 kept, +
                         "2.weight": torch.tensor([[True, False], [True, True], [True, False]])})
    shares = tutorial.positive_shares(model)
    assert list(shares.index) == ["0.weight", "1.weight", "2.weight", "3.weight", "hidden layers"]
    assert shares["0.weight"] == 3 / 4 and shares["3.weight"] == 1 / 3  # no masks: all kept
    assert shares["1.weight"] == 1.0 and shares["2.weight"] == 1 / 4  # -1, +1, -1, -1 kept
    assert shares["hidden layers"] == 4 / 7  # pooled: (3 + 1) of (3 + 4); the layers' mean: 5/8


def test_every_seed_gathers_a_cells_seeds_from_every_machine_and_no_other_cell(tmp_path):
    """A cell is its config but for the seed and where it ran: seeds made on a CPU (device
    unnamed or "cpu") and on a GPU are one cell, as the results tables count them; another
    compression, precision or variant is another cell."""
    def stored(seed=0, compression=1, precision="fp32", **fields):
        config = RunConfig.from_preset("smoke", "mag", compression, seed=seed,
                                       precision=precision, **fields)
        Store(tmp_path).write({
            "key": config.key, "label": config.label, "status": "finished",
            "config": config_dict(config), "metrics": {"test_acc": 0.5 + seed / 10},
            "history": [], "layer_densities": {}, "weight_histograms": {}, "timings": {},
            "environment": {}})
        return {"config": config_dict(config)}

    mine = stored(seed=0)
    stored(seed=1, device="cpu")
    stored(seed=2, device="cuda", compile=False)
    stored(seed=0, compression=2)
    stored(seed=1, scope="local")
    stored(seed=1, precision="bf16")
    cell = tutorial.every_seed([mine], tmp_path)
    assert sorted(r["config"]["seed"] for r in cell) == [0, 1, 2]
    assert {r["config"]["compression"] for r in cell} == {1}
    assert {r["label"] for r in cell} == {"Mag"}


def test_a_table_for_the_book_has_one_header_row_with_the_index_name_in_its_corner():
    import pandas as pd

    table = pd.DataFrame({"accuracy": [80.0, 70.0]}, index=pd.Index([1, 2], name="compression"))
    html = tutorial.for_the_book(table).to_html()
    head = html.split("<thead>")[1].split("</thead>")[0]
    assert head.count("<tr>") == 1 and "compression" in head and "accuracy" in head
    assert 'class="table"' in html
