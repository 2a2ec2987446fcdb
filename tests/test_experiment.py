"""Runs, the results store, sweeps (local and Ray) and report tables, at the smoke preset."""

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from sparse_survey import experiment, report
from sparse_survey.experiment import RunConfig, Store
from sparse_survey.train import Recipe

GRID = {"methods": ["mag", "snip"], "compressions": [0.5, 1], "imp_iters": [], "seeds": [0]}


@pytest.fixture
def configs():
    return experiment.grid_configs(experiment.load_grid(GRID), "smoke", device="cpu")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    configs = experiment.grid_configs(experiment.load_grid(GRID), "smoke", device="cpu")
    records = experiment.sweep(configs, Store(root), cache_dir=root / "cache", progress=False)
    return root, configs, records


def test_a_smoke_sweep_produces_records_and_tables(swept):
    root, configs, records = swept
    files = sorted((root / "smoke").glob("*.json"))
    assert len(files) == len(configs) == 4 and all(r["status"] == "finished" for r in records)
    record = json.loads(files[0].read_text())
    assert record["schema"] == experiment.SCHEMA
    for key in ("config", "metrics", "layer_densities", "history", "timings", "environment"):
        assert record[key]
    for key in ("test_acc", "best_test_acc", "density", "remaining_fraction", "flops_fraction",
                "time_s", "cpu_rss_peak_bytes"):
        assert math.isfinite(record["metrics"][key])
    assert record["environment"]["torch"] and record["environment"]["device"] == "cpu"
    accuracy = report.table(Store(root).records("smoke"), "accuracy")
    assert list(accuracy.columns) == ["Mag", "SNIP"] and list(accuracy.index) == [0.5, 1.0]
    assert all(float(v) > 10 for v in accuracy.to_numpy().flatten())


def test_running_the_sweep_again_does_no_work(swept, monkeypatch):
    root, configs, _ = swept

    def no_work(*_args, **_kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(experiment, "run", no_work)
    assert experiment.sweep(configs, Store(root), progress=False) == []


def test_a_killed_run_leaves_no_partial_file_and_the_rerun_completes(configs, tmp_path,
                                                                     monkeypatch):
    store = Store(tmp_path)
    real_write_text = Path.write_text

    def dies_while_writing(self, text, *args, **kwargs):
        if ".tmp" in self.name and len(list((tmp_path / "smoke").glob("*.json"))) == 1:
            real_write_text(self, text[: len(text) // 2])  # half a record on disk, then killed
            raise KeyboardInterrupt("killed")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        experiment.sweep(configs, store, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    finished = list((tmp_path / "smoke").glob("*.json"))
    assert len(finished) == 1 and json.loads(finished[0].read_text())["status"] == "finished"
    rerun = experiment.sweep(configs, store, cache_dir=tmp_path / "cache", progress=False)
    assert len(rerun) == 3
    assert all(json.loads(p.read_text())["status"] == "finished"
               for p in (tmp_path / "smoke").glob("*.json"))
    assert len(list((tmp_path / "smoke").glob("*.json"))) == 4


def test_a_nan_run_is_stored_as_diverged_and_the_sweep_goes_on(configs, tmp_path):
    exploding = Recipe(epochs=3, batch_size=32, lr=1e12, momentum=0.0, nesterov=False,
                       schedule="constant")
    runs = [replace(configs[0], recipe=exploding), configs[1]]
    records = experiment.sweep(runs, Store(tmp_path), progress=False)
    assert [r["status"] for r in records] == ["diverged", "finished"]
    assert "loss became" in records[0]["error"]
    stored = Store(tmp_path).records("smoke", stale=True)  # the exploding recipe is no preset's
    assert sorted(r["status"] for r in stored) == ["diverged", "finished"]
    assert "Runs that did not finish" in report.write_report(stored, tmp_path / "report",
                                                             "t").read_text()


def test_a_failing_run_is_stored_as_failed():
    broken = RunConfig.from_preset("smoke", "mag", 1, model="vgg16", device="cpu")
    record = experiment.run(broken)  # VGG16's five pools cannot shrink an 8x8 digit
    assert record["status"] == "failed" and record["error"].startswith("RuntimeError: ")
    assert "Traceback" in record["traceback"]
    assert "metrics" not in record and record["timings"]["total_s"] > 0


def test_ray_backend_gives_the_same_records_as_the_local_one(swept, tmp_path):
    ray = pytest.importorskip("ray")
    _, configs, local = swept
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = experiment.sweep(configs, Store(tmp_path), backend="ray",
                                  cache_dir=tmp_path / "cache", progress=False)
    finally:
        ray.shutdown()
    by_key = {r["key"]: r for r in remote}
    assert set(by_key) == {r["key"] for r in local}

    def deterministic(record):
        measured = ("time", "images_per_s", "latency", "cpu_", "seconds")
        return {"config": record["config"], "status": record["status"],
                "layer_densities": record["layer_densities"],
                "metrics": {k: v for k, v in record["metrics"].items()
                            if not k.startswith(measured)},
                "history": [{k: v for k, v in e.items() if not k.startswith(measured)}
                            for e in record["history"]]}

    for record in local:
        assert deterministic(by_key[record["key"]]) == deterministic(record)


def test_config_keys_and_bad_input():
    a = RunConfig.from_preset("smoke", "mag", 1)
    assert a.key == RunConfig.from_preset("smoke", "mag", 1, device="cuda").key  # not identity
    assert a.key != RunConfig.from_preset("smoke", "mag", 1, seed=1).key
    assert experiment.config_from_dict(json.loads(json.dumps(
        {**a.__dict__, "recipe": a.recipe.__dict__}))) == a
    assert RunConfig.from_preset("smoke", "imp", 1, iters=3).label == "IMP (3 Iters)"
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig.from_preset("smoke", "obd", 1)
    with pytest.raises(ValueError, match="unknown preset"):
        RunConfig.from_preset("huge", "mag", 1)
    with pytest.raises(ValueError, match="compression"):
        RunConfig.from_preset("smoke", "mag", -1)
    with pytest.raises(ValueError, match="unknown grid keys"):
        experiment.load_grid({"method": ["mag"]})
    with pytest.raises(ValueError, match="control"):
        RunConfig.from_preset("smoke", "mag", 1, control="reinit")
    with pytest.raises(ValueError, match="control"):
        RunConfig.from_preset("smoke", "imp", 1, control="retrain")
    with pytest.raises(ValueError, match="eval_every"):
        RunConfig.from_preset("smoke", "mag", 1, eval_every=0)


def test_a_control_run_trains_the_same_control_as_lottery_controls(tmp_path):
    """A stored control run and :func:`lottery.controls` build and train the same models."""
    from sparse_survey import data, lottery, models
    from sparse_survey.tutorial import runs

    records = {control: runs("imp", [1], "smoke", [0], iters=2, results=tmp_path / "r",
                             progress=False, cache_dir=tmp_path / "c", device="cpu",
                             control=control)[0]
               for control in (None, "reinit", "shuffle")}
    assert records["reinit"]["label"] == "IMP (2 Iters), random reinit"
    assert records["shuffle"]["imp_rounds"] == records[None]["imp_rounds"]  # the ticket reused
    preset = experiment.PRESETS["smoke"]
    digits = data.load("digits", limit_per_class=preset.limit_per_class)
    torch.manual_seed(0)
    model = models.build("mlp", 10, 1, image_size=8)
    result = lottery.imp(model, digits, 1, 2, preset.recipe, device="cpu",
                         cache_dir=tmp_path / "c", progress=False)
    expected = lottery.controls(result, digits, preset.recipe, device="cpu", progress=False)
    assert records[None]["metrics"]["test_acc"] == expected["winning ticket"]
    assert records["reinit"]["metrics"]["test_acc"] == expected["random reinit"]
    assert records["shuffle"]["metrics"]["test_acc"] == expected["layerwise shuffle"]


def test_grid_from_a_yaml_file(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("methods: [rand]\ncompressions: [1, 2]\nimp_iters: [2]\nseeds: [0, 1]\n")
    configs = experiment.grid_configs(experiment.load_grid(spec), "smoke")
    assert len(configs) == 2 * 2 * 2
    assert len(experiment.grid_configs(experiment.load_grid("survey"), "smoke")) == 6 * 8


def fabricated(label, method, compression, seed, accuracy, time_s, status="finished",
               waited_s=0.0):
    iters = int(label[5]) if method == "imp" else 1
    config = RunConfig.from_preset("smoke", method, compression, seed=seed, iters=iters)
    return {"label": label, "status": status, "key": config.key, "data": "made up",
            "config": {"compression": compression, "seed": seed},
            "metrics": {"test_acc": accuracy, "time_s": time_s, "flops_fraction": 0.5,
                        "remaining_fraction": 0.5, "cpu_rss_peak_bytes": 2**20,
                        "time_passes_s": 5 * time_s, "time_passes_wait_s": waited_s,
                        "time_passes_load": [0.5, 0.5]},
            "timings": {"prune_s": time_s / 10}, "environment": {"cpus": 2}}


def test_report_tables_match_hand_computed_means():
    records = [fabricated("Mag", "mag", 1, 0, 0.80, 1.0), fabricated("Mag", "mag", 1, 1, 0.90, 3.0),
               fabricated("Mag", "mag", 2, 0, 0.50, 2.0),
               fabricated("IMP (2 Iters)", "imp", 1, 0, 0.85, 1.5),
               fabricated("Mag", "mag", 2, 1, 0.10, 9.0, status="diverged")]
    mean, std, count = report.summary(records, "accuracy")
    assert mean.at[1, "Mag"] == pytest.approx(85.0) and count.at[1, "Mag"] == 2
    assert std.at[1, "Mag"] == pytest.approx(math.sqrt(50))  # (80, 90): sample std 7.07
    assert mean.at[2, "Mag"] == pytest.approx(50.0) and count.at[2, "Mag"] == 1  # diverged: out
    formatted = report.table(records, "accuracy")
    assert list(formatted.columns) == ["Mag", "IMP (2 Iters)"]
    assert formatted.at[1, "Mag"] == "85.00 ± 7.07" and formatted.at[2, "Mag"] == "50.00"
    assert formatted.at[2, "IMP (2 Iters)"] == "n/a"
    assert report.table(records, "inference_time").at[1, "Mag"] == "2.000 ± 1.414"
    assert report.table(records, "cpu_memory").at[1, "Mag"] == "1.0 ± 0.0"
    compared = report.comparison(records, "accuracy")
    assert compared.at[1.0, ("Mag", "survey")] == 88.88  # the survey's table 1
    assert compared.at[1.0, ("Mag", "diff")] == pytest.approx(85.0 - 88.88)
    assert report.comparison(records, "params") is None  # the survey has no such table


def test_time_tables_mark_contended_and_unknown_timings():
    records = [fabricated("Mag", "mag", 1, 0, 0.8, 1.0),
               fabricated("Mag", "mag", 1, 1, 0.8, 3.0, waited_s=2.0),  # 2 s of 15 s waiting
               fabricated("SNIP", "snip", 1, 0, 0.8, 1.0)]
    del records[2]["metrics"]["time_passes_wait_s"], records[2]["metrics"]["time_passes_load"]
    timing = report.table(records, "inference_time")
    assert timing.at[1, "Mag"] == "2.000 ± 1.414" + report.CONTENDED
    assert timing.at[1, "SNIP"] == "1.000" + report.UNKNOWN
    assert report.table(records, "accuracy").at[1, "Mag"] == "80.00 ± 0.00"  # no marks
    assert [r["config"]["seed"] for r in report.uncontended(records, "inference_time")
            if r["label"] == "Mag"] == [0]
    assert report.table(records, "prune_time").at[1, "Mag"] == "0.20 ± 0.14" + report.UNKNOWN


def test_records_of_an_earlier_preset_definition_are_left_out(swept, tmp_path):
    root, configs, _ = swept
    store = Store(tmp_path)
    for path in (root / "smoke").glob("*.json"):
        (tmp_path / "smoke").mkdir(exist_ok=True)
        (tmp_path / "smoke" / path.name).write_text(path.read_text())
    old = json.loads(next((tmp_path / "smoke").glob("*.json")).read_text())
    old["config"]["recipe"]["epochs"] += 1  # as if made when the preset trained longer
    old["key"] = "0" * 16
    store.write(old)
    assert len(store.records("smoke")) == len(configs)
    assert len(store.records("smoke", stale=True)) == len(configs) + 1


def test_ordering_agreement_counts_concordant_pairs_by_hand():
    # the survey at c = 0.5: Mag 89.95 > SNIP 88.55 > Rand 86.80 > GraSP 80.86
    records = [fabricated(label, method, 0.5, 0, acc, 1.0) for label, method, acc in
               [("Mag", "mag", 0.80), ("SNIP", "snip", 0.85), ("Rand", "rand", 0.70),
                ("GraSP", "grasp", 0.60)]]
    agreement = report.ordering_agreement(records)
    row = agreement.loc[0.5]
    assert row["ours, best first"] == "SNIP > Mag > Rand > GraSP"
    assert row["survey, best first"] == "Mag > SNIP > Rand > GraSP"
    assert row["pairs ordered alike"] == pytest.approx(5 / 6)  # only Mag-SNIP is swapped
    assert list(agreement.index) == [0.5]


def test_collapsed_layers_and_depth_profile_from_layer_densities():
    def with_layers(label, method, seed, densities):
        record = fabricated(label, method, 1, seed, 0.5, 1.0)
        record["layer_densities"] = {f"l{i}.weight": d for i, d in enumerate(densities)}
        return record

    records = [with_layers("Mag", "mag", 0, [0.5, 0.5, 0.0, 0.0]),
               with_layers("Mag", "mag", 1, [0.5, 0.3, 0.1, 0.0]),
               with_layers("SNIP", "snip", 0, [0.4, 0.4, 0.2, 0.1])]
    collapsed = report.collapsed_layers(records)
    assert collapsed.at[1, "Mag"] == 1.5 and collapsed.at[1, "SNIP"] == 0
    depth = report.depth_profile(records, 1, last=2)
    assert depth.at["Mag", "first 2 layers"] == pytest.approx(0.45)
    assert depth.at["Mag", "last 2 layers"] == pytest.approx(0.025)
    assert depth.at["SNIP", "late / early"] == pytest.approx(0.15 / 0.4)


def test_survey_runs_leave_out_the_controls():
    records = [fabricated("IMP (2 Iters)", "imp", 1, 0, 0.8, 1.0),
               fabricated("IMP (2 Iters), random reinit", "imp", 1, 0, 0.6, 1.0)]
    records[1]["config"]["control"] = "reinit"
    assert [r["label"] for r in report.survey_runs(records)] == ["IMP (2 Iters)"]


def test_a_compiled_sweep_compiles_the_architecture_once(tmp_path):
    """The second run of a sweep (another method and compression, so other masks and weights)
    reuses the graphs the first one compiled."""
    from torch._dynamo.utils import counters

    first, second = (RunConfig.from_preset("smoke", method, c, device="cpu", compile=True,
                                           profile_repeats=1)
                     for method, c in (("mag", 1), ("snip", 0.5)))
    assert first.key == replace(first, compile=False).key  # how a run runs is not its identity
    torch._dynamo.reset()  # forget what earlier tests compiled
    store, graphs = Store(tmp_path), []
    for config in (first, second):
        before = counters["stats"]["unique_graphs"]
        record = experiment.sweep([config], store, progress=False)[0]
        assert record["status"] == "finished" and record["config"]["compile"] is True
        graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs[0] >= 1 and graphs[1] == 0, f"graphs compiled per run: {graphs}"


def test_a_time_budget_starts_no_run_that_would_end_past_it(configs, tmp_path):
    store = Store(tmp_path)
    first = experiment.sweep(configs, store, time_budget=0.01, progress=False)
    assert len(first) == 1  # nothing known yet: one run starts, and it alone fills the budget
    assert first[0]["status"] == "finished"
    again = experiment.sweep(configs, store, time_budget=0.5 * first[0]["timings"]["total_s"],
                             progress=False)
    assert again == []  # the stored run says a run takes longer than that
    rest = experiment.sweep(configs, store, time_budget=3600, progress=False)
    assert len(rest) == 3 and all(store.done(c) for c in configs)
    with pytest.raises(ValueError, match="local backend"):
        experiment.sweep(configs, store, backend="ray", time_budget=60, progress=False)


def timed_record(method, seconds, iters=1, control=None, status="finished"):
    config = RunConfig.from_preset("smoke", method, 1, iters=iters, control=control)
    return {"status": status, "config": asdict(config),
            "timings": {"total_s": seconds}}


def test_run_time_estimates_by_kind_then_by_training():
    snip = RunConfig.from_preset("smoke", "snip", 2)
    imp3 = RunConfig.from_preset("smoke", "imp", 2, iters=3)
    this_call = [timed_record("snip", 10), timed_record("snip", 30), timed_record("snip", 12),
                 timed_record("snip", 999, status="failed")]
    stored = [timed_record("snip", 100), timed_record("imp", 40, iters=2)]
    assert experiment.estimate_seconds(snip, this_call, stored) == 12  # median, same kind
    assert experiment.estimate_seconds(snip, [], stored) == 100
    assert experiment.estimate_seconds(imp3, this_call, stored) == 4 * 12  # 3 rounds + dense
    assert experiment.estimate_seconds(imp3, [], stored[:1]) == 4 * 100
    assert experiment.estimate_seconds(imp3, [], []) is None
    assert experiment.trainings(asdict(
        RunConfig.from_preset("smoke", "imp", 1, iters=2, control="reinit"))) == 4
