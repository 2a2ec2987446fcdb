"""Runs, the results store, sweeps (local and Ray) and report tables, at the smoke preset."""

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from sparse_survey import experiment, figures, report, sweeps, train
from sparse_survey.experiment import RunConfig, config_dict
from sparse_survey.profile import device_name
from sparse_survey.store import Store
from sparse_survey.train import Recipe

GRID = {"methods": ["mag", "snip"], "compressions": [0.5, 1], "imp_iterations": [], "seeds": [0]}


@pytest.fixture
def configs():
    return sweeps.grid_configs(sweeps.load_grid(GRID), "smoke", device="cpu")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A smoke sweep at a fixed thread count (the Ray test compares its numbers exactly)."""
    root = tmp_path_factory.mktemp("results")
    configs = sweeps.grid_configs(sweeps.load_grid(GRID), "smoke", device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARSE_SURVEY_ADAPT_THREADS", "0")
        records = sweeps.sweep(configs, Store(root), cache_dir=root / "cache", progress=False)
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
                "time_s"):
        assert math.isfinite(record["metrics"][key])
    assert not [k for k in record["metrics"] if k.startswith("cpu_")]  # smoke: no memory probe
    assert record["environment"]["torch"] and record["environment"]["device"] == "cpu"
    assert record["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["environment"]["bf16_hardware"] is train.bf16_supported("cpu")
    accuracy = report.table(Store(root).records("smoke"), "accuracy")
    assert list(accuracy.columns) == ["Mag", "SNIP"] and list(accuracy.index) == [0.5, 1.0]
    assert all(float(v) > 10 for v in accuracy.to_numpy().flatten())
    scale = report.scale(records)
    assert scale.startswith("MLP at width 1, ") and "30 training images per class" in scale
    assert f"10 epochs at batch 32, {records[0]['config']['precision']}, on " in scale
    assert scale.endswith("seeds per cell: 1")


def test_a_preset_that_measures_cpu_memory_stores_the_probes_numbers_under_the_same_key(
        tmp_path, monkeypatch):
    config = RunConfig.from_preset("smoke", "mag", 1, device="cpu")
    monkeypatch.setitem(experiment.PRESETS, "smoke",
                        replace(experiment.PRESETS["smoke"], cpu_memory=True))
    measured = RunConfig.from_preset("smoke", "mag", 1, device="cpu")
    assert measured.key == config.key  # what is measured is not what is computed
    metrics = experiment.run(measured)["metrics"]
    assert metrics["cpu_rss_peak_bytes"] >= max(metrics["cpu_rss_model_loaded_bytes"],
                                                metrics["cpu_rss_baseline_bytes"]) > 0
    assert metrics["cpu_uss_increase_bytes"] == \
        metrics["cpu_uss_peak_bytes"] - metrics["cpu_uss_baseline_bytes"] >= 0


def test_running_the_sweep_again_does_no_work(swept, monkeypatch):
    root, configs, _ = swept

    def no_work(*_args, **_kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(sweeps, "run", no_work)
    assert sweeps.sweep(configs, Store(root), progress=False) == []


def test_a_sweep_does_not_repeat_a_grid_stored_at_the_other_precision(swept, monkeypatch):
    """The smoke preset's precision is the machine's (``auto``): on a machine of the other kind
    its stored cells would each train again under a new key. The sweep refuses, naming both
    ways on, until the precision is chosen; a pinned preset (laptop: fp32) is left alone."""
    root, configs, _ = swept
    other = {"fp32": "bf16", "bf16": "fp32"}[configs[0].precision]
    elsewhere = [replace(c, precision=other) for c in configs]
    assert sweeps.stored_at_other_precision(elsewhere, Store(root)) == elsewhere
    assert sweeps.stored_at_other_precision(configs, Store(root)) == []  # stored as they are
    with pytest.raises(ValueError, match=f"--precision {configs[0].precision} continues the "
                                         f"stored grid.*--precision {other} adds"):
        sweeps.sweep(elsewhere, Store(root), progress=False)

    class Started(Exception):
        pass

    def started(*_args, **_kwargs):
        raise Started

    monkeypatch.setattr(sweeps, "run", started)
    with pytest.raises(Started):  # chosen: the runs start
        sweeps.sweep(elsewhere, Store(root), progress=False, other_precision=True)
    laptop = RunConfig.from_preset("laptop", "mag", 1)
    Store(root).write({**json.loads(next((root / "smoke").glob("*.json")).read_text()),
                       "key": laptop.key, "config": config_dict(laptop)})
    assert Store(root).done(laptop)
    assert sweeps.stored_at_other_precision([replace(laptop, precision="bf16")],
                                            Store(root)) == []


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
        sweeps.sweep(configs, store, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    finished = list((tmp_path / "smoke").glob("*.json"))
    assert len(finished) == 1 and json.loads(finished[0].read_text())["status"] == "finished"
    rerun = sweeps.sweep(configs, store, cache_dir=tmp_path / "cache", progress=False)
    assert len(rerun) == 3
    assert all(json.loads(p.read_text())["status"] == "finished"
               for p in (tmp_path / "smoke").glob("*.json"))
    assert len(list((tmp_path / "smoke").glob("*.json"))) == 4


def test_a_nan_run_is_stored_as_diverged_and_the_sweep_goes_on(tmp_path):
    exploding = Recipe(epochs=3, batch_size=32, lr=1e12, momentum=0.0, nesterov=False,
                       schedule="constant")
    custom = {"preset": "custom", "model": "mlp", "width": 1.0, "dataset": "digits",
              "limit_per_class": 30, "profile_repeats": 1, "eval_every": 1}  # a whole budget
    runs = [RunConfig("mag", 0.5, recipe=exploding, **custom),
            RunConfig("snip", 0.5, recipe=experiment.PRESETS["smoke"].recipe, **custom)]
    records = sweeps.sweep(runs, Store(tmp_path), progress=False)
    assert [r["status"] for r in records] == ["diverged", "finished"]
    assert "loss became" in records[0]["error"]
    stored = Store(tmp_path).records("custom")
    assert sorted(r["status"] for r in stored) == ["diverged", "finished"]
    assert "Runs that did not finish" in report.write_report(stored, tmp_path / "report",
                                                             "t").read_text()


def test_a_failing_run_is_stored_as_failed(tmp_path):
    with pytest.raises(ValueError, match="vgg16 halves its images 4 times"):  # refused at once
        RunConfig.from_preset("smoke", "mag", 1, model="vgg16", device="cpu")
    elsewhere = RunConfig.from_preset("smoke", "mag", 1, dataset="cifar10", device="cpu")
    record = experiment.run(elsewhere, data_root=tmp_path / "moved")  # the data went missing
    assert record["status"] == "failed" and record["error"].startswith("DataNotFoundError: ")
    assert "Traceback" in record["traceback"]
    assert "metrics" not in record and record["timings"]["total_s"] > 0


@pytest.mark.usefixtures("fixed_threads")  # the Ray workers inherit it
def test_ray_backend_gives_the_same_records_as_the_local_one(swept, tmp_path):
    """At a fixed thread count (Ray's own processes take CPU time, which a thread count that
    adapts would make way for, and a count changes the order of some sums)."""
    import ray  # a requirement: this test never skips
    _, configs, local = swept
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sweeps.sweep(configs, Store(tmp_path), backend="ray",
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
    a = RunConfig.from_preset("smoke", "mag", 1, precision="bf16")
    assert a.key == RunConfig.from_preset("smoke", "mag", 1, device="cuda",  # not identity
                                          precision="bf16").key
    assert a.key != RunConfig.from_preset("smoke", "mag", 1, seed=1).key
    assert experiment.config_from_dict(json.loads(json.dumps(
        {**a.__dict__, "recipe": a.recipe.__dict__}))) == a
    assert RunConfig.from_preset("smoke", "imp", 1, iterations=3).label == "IMP (3 Iters)"
    with pytest.raises(ValueError, match="unknown method"):
        RunConfig.from_preset("smoke", "obd", 1)
    with pytest.raises(ValueError, match="unknown preset"):
        RunConfig.from_preset("huge", "mag", 1)
    with pytest.raises(ValueError, match="compression"):
        RunConfig.from_preset("smoke", "mag", -1)
    with pytest.raises(ValueError, match="unknown grid keys"):
        sweeps.load_grid({"method": ["mag"]})
    with pytest.raises(ValueError, match="control"):
        RunConfig.from_preset("smoke", "mag", 1, control="retrain")
    with pytest.raises(ValueError, match="control"):
        RunConfig.from_preset("smoke", "imp", 1, control="invert")  # IMP: reinit or shuffle
    with pytest.raises(ValueError, match="control"):
        RunConfig.from_preset("smoke", "dense", 0, control="reinit")
    with pytest.raises(ValueError, match="eval_every"):
        RunConfig.from_preset("smoke", "mag", 1, eval_every=0)


@pytest.mark.usefixtures("fixed_threads")  # the same trainings twice, compared exactly
def test_a_control_run_trains_the_same_control_as_lottery_controls(tmp_path):
    """A stored control run and :func:`lottery.controls` build and train the same models."""
    from sparse_survey import data, lottery, models
    from sparse_survey.tutorial import runs

    records = {control: runs([RunConfig.from_preset("smoke", "imp", 1, iterations=2,
                                                    device="cpu", control=control)],
                             tmp_path / "r", progress=False, cache_dir=tmp_path / "c")[0]
               for control in (None, "reinit", "shuffle")}
    assert records["reinit"]["label"] == "IMP (2 Iters), random reinit"
    def uncached(rounds):
        return [{k: v for k, v in r.items() if k != "cached"} for r in rounds]

    assert all(r["cached"] for r in records["shuffle"]["imp_rounds"])  # the ticket reused
    assert uncached(records["shuffle"]["imp_rounds"]) == uncached(records[None]["imp_rounds"])
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


def test_one_shot_controls_keep_the_counts_and_change_what_they_say(tmp_path):
    """Shuffle keeps each layer's kept count over the initial weights at new positions; reinit
    keeps the masks under fresh weights; both seeded apart from the run (the same seed, the same
    control); invert keeps exactly as many weights, the lowest scores. Each is its own run."""
    from sparse_survey import masks, models, pruners

    def pruned(seed: int = 0):
        torch.manual_seed(seed)
        model = models.build("mlp", 10, 1, image_size=8)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        pruners.prune(model, "mag", 1)
        return model, initial

    model, initial = pruned()
    kept = masks.get(model)
    shuffled = experiment.one_shot_control(pruned()[0], "shuffle", initial, seed=0)
    moved = masks.get(shuffled)
    for name, w in masks.prunable(shuffled).items():
        assert int(moved[name].sum()) == int(kept[name].sum())  # each layer's count kept
        assert not torch.equal(moved[name], kept[name])  # at new positions
        assert torch.equal(w.detach()[moved[name]], initial[name][moved[name]])  # initial values
        assert not w.detach()[~moved[name]].any()
    again = masks.get(experiment.one_shot_control(pruned()[0], "shuffle", initial, seed=0))
    assert all(torch.equal(again[n], moved[n]) for n in moved)  # seeded: reproducible
    fresh = experiment.one_shot_control(pruned()[0], "reinit", initial, seed=0)
    for name, w in masks.prunable(fresh).items():
        assert torch.equal(masks.get(fresh)[name], kept[name])  # the same mask
        assert not torch.equal(w.detach()[kept[name]], initial[name][kept[name]])  # new weights
        assert not w.detach()[~kept[name]].any()
    assert experiment.one_shot_control(model, None, initial, seed=0) is model

    configs = [RunConfig.from_preset("smoke", "mag", 1, device="cpu", control=control)
               for control in (None, "shuffle", "reinit", "invert", "invert_layer")]
    assert [c.label for c in configs] == ["Mag", "Mag, layerwise shuffle", "Mag, random reinit",
                                          "Mag, inverted scores",
                                          "Mag, inverted scores per layer"]
    assert len({c.key for c in configs}) == 5
    from sparse_survey.tutorial import runs

    records = runs(configs, tmp_path / "r", progress=False)
    assert all(r["status"] == "finished" for r in records)
    plain, shuffle, reinit, invert, invert_layer = (r["layer_densities"] for r in records)
    assert shuffle == plain and reinit == plain and invert_layer == plain  # counts kept
    assert invert != plain and sum(invert.values()) != sum(plain.values())  # other layers kept
    assert records[3]["metrics"]["prunable_kept"] == records[0]["metrics"]["prunable_kept"]
    train = experiment.dataset("digits", limit_per_class=experiment.PRESETS["smoke"]
                               .limit_per_class, progress=False)[0]
    for config, record in zip(configs, records):  # each run's starting mask, rebuilt
        model = experiment.fresh_model(config.model, config.width, train.shape,
                                       len(train.classes), config.seed, "cpu")
        experiment.prune_at_init(model, config, train)
        assert masks.layer_densities(model) == record["layer_densities"], config.label


def test_rounding_up_is_its_own_run_and_leaves_every_other_key_alone(tmp_path):
    """A field added after schema 4 is stored, and keyed, only away from the value that records
    before it mean: a config at the default keeps the key it had before the field existed."""
    plain = RunConfig.from_preset("smoke", "synflow", 1, device="cpu")
    up = replace(plain, rounding="up")
    assert "rounding" not in config_dict(plain)
    assert config_dict(up)["rounding"] == "up"
    before = {k: v for k, v in config_dict(plain).items()
              if k not in experiment.EXECUTION}  # the identity hashed before the field existed
    assert plain.key == hashlib.sha256(json.dumps(experiment.canonical(before), sort_keys=True)
                                       .encode()).hexdigest()[:16]
    assert up.key != plain.key and up.label == "SynFlow (kept counts rounded up)"
    assert experiment.config_from_dict(config_dict(up)) == up
    assert experiment.config_from_dict(config_dict(plain)) == plain
    for method in ("imp", "dense", "rigl"):
        with pytest.raises(ValueError, match="other methods to the nearest only"):
            RunConfig.from_preset("smoke", method, 1, rounding="up")
    with pytest.raises(ValueError, match="rounds its kept counts nearest or up"):
        RunConfig.from_preset("smoke", "synflow", 1, rounding="down")
    grid = sweeps.load_grid("{methods: [synflow], compressions: [1], imp_iterations: [2], "
                            "rounding: up}")
    assert [c.rounding for c in sweeps.grid_configs(grid, "smoke")] == ["up", "nearest"]

    from sparse_survey import masks
    from sparse_survey.tutorial import runs

    records = runs([plain, up], tmp_path / "r", progress=False)
    assert all(r["status"] == "finished" for r in records)
    kept = [r["metrics"]["prunable_kept"] for r in records]
    assert kept[0] <= kept[1] <= kept[0] + 1
    assert records[1]["config"]["rounding"] == "up" and "rounding" not in records[0]["config"]
    train = experiment.dataset("digits", limit_per_class=experiment.PRESETS["smoke"]
                               .limit_per_class, progress=False)[0]
    model = experiment.fresh_model(up.model, up.width, train.shape, len(train.classes),
                                   up.seed, "cpu")
    experiment.prune_at_init(model, up, train)  # the stored run's starting mask, rebuilt
    assert masks.layer_densities(model) == records[1]["layer_densities"]


def test_grid_from_a_yaml_file(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("methods: [rand]\ncompressions: [1, 2]\nimp_iterations: [2]\nseeds: [0, 1]\n")
    configs = sweeps.grid_configs(sweeps.load_grid(spec), "smoke")
    assert len(configs) == 2 * 2 * 2
    assert len(sweeps.grid_configs(sweeps.load_grid("survey"), "smoke")) == 6 * 8


def test_a_grid_sets_each_run_field_on_the_runs_of_its_kind():
    grid = sweeps.load_grid("{methods: [dense, snip, grasp], compressions: [1, 2], "
                            "imp_iterations: [2], seeds: [0], bn_mode: train, "
                            "prune_batches: 2, control: shuffle, precision: fp32}")
    configs = sweeps.grid_configs(grid, "smoke")
    snip, grasp = ("SNIP (2 x 256 scoring images, train-mode BN), layerwise shuffle",
                   "GraSP (2 x 256 scoring images, train-mode BN), layerwise shuffle")
    assert [c.label for c in configs] == [  # the dense network takes no control
        "Dense", snip, grasp, "IMP (2 Iters), layerwise shuffle",
        snip, grasp, "IMP (2 Iters), layerwise shuffle"]
    assert configs[0].compression == 0 and {c.precision for c in configs} == {"fp32"}
    rounds = sweeps.grid_configs(sweeps.load_grid(
        {"methods": ["synflow"], "compressions": [1], "imp_iterations": [],
         "iterations": 1, "scope": "local"}), "smoke")
    assert [c.label for c in rounds] == ["SynFlow (1 round, local scope)"]
    with pytest.raises(ValueError, match="one value each"):
        sweeps.load_grid({"bn_mode": ["eval", "train"]})
    with pytest.raises(ValueError, match="applies to the methods that score on data"):
        sweeps.grid_configs(sweeps.load_grid({"methods": ["rand"], "bn_mode": "train"}), "smoke")
    with pytest.raises(ValueError, match="not valid YAML"):
        sweeps.load_grid("{methods: [snip]")
    with pytest.raises(ValueError, match="unknown grid keys"):
        sweeps.load_grid("{method: [snip]}")


def fabricated(label, method, compression, seed, accuracy, time_s, status="finished",
               waited_s=0.0, precision="fp32"):
    iters = int(label[5]) if method == "imp" else 1
    config = RunConfig.from_preset("smoke", method, compression, seed=seed, iterations=iters,
                                   precision=precision)
    return {"label": label, "status": status, "key": config.key, "data": "made up",
            "config": config_dict(config),
            "metrics": {"test_acc": accuracy, "time_s": time_s, "flops_fraction": 0.5,
                        "remaining_fraction": 0.5, "cpu_rss_peak_bytes": 2**20,
                        "time_passes_s": 5 * time_s, "time_passes_wait_s": waited_s,
                        "time_passes_load": [0.5, 0.5]},
            "timings": {"prune_s": time_s / 10}, "environment": {"cpus": 2},
            "layer_densities": {"features.0.weight": 0.5, "classifier.weight": 0.5}}


def test_the_scale_line_names_each_machine_and_how_many_runs_it_made():
    """Two CPUs of one name that dispatch different vector instructions are two machines (their
    kernels run at different speeds), each counted; one machine is named without a count; a
    record from before the field, or from a GPU, gives the device's name alone."""
    def on(capability, device="cpu", seed=0):
        record = fabricated("Mag", "mag", 1, seed, 0.8, 1.0)
        record["environment"] = {"device": device, "device_name": "AMD EPYC",
                                 "cpu_capability": capability}
        return record

    two = [on("AVX2"), on("AVX512", seed=1), on("AVX512", seed=2)]
    assert report.scale(two).endswith(
        ", on AMD EPYC with AVX2 (1 run), AMD EPYC with AVX512 (2 runs); seeds per cell: 3")
    assert ", fp32, on AMD EPYC with AVX512; seeds" in report.scale(two[1:])
    assert report.host(on(None)) == report.host(on("AVX2", device="cuda:0")) == "AMD EPYC"
    xeon = on("AVX512")
    xeon["environment"]["device_name"] = "Intel(R) Xeon(R) Processor"
    assert report.host(xeon) == "Intel Xeon Processor with AVX512"  # no trademark signs


def test_times_and_memory_come_from_one_kind_of_device_and_say_which_runs_they_leave_out():
    """A GPU-made seed among CPU-made ones counts in the accuracy of its cell but not in its
    inference time or memory (some fifty times apart, no two seeds of one cell); the tables say
    which runs they left out. Where GPU runs are most, the CPU's are the ones left out."""
    def on(device, seed, accuracy, seconds):
        record = fabricated("Mag", "mag", 1, seed, accuracy, seconds)
        record["environment"] = {"device": device, "device_name": "NVIDIA H200"
                                 if device.startswith("cuda") else "AMD EPYC", "cpus": 2}
        return record

    records = [on("cpu", 0, 0.80, 4.0), on("cpu", 1, 0.82, 6.0), on("cuda:0", 2, 0.84, 0.06)]
    assert report.device_kind(records) == "cpu"
    assert report.left_out(records) == {"NVIDIA H200": 1}
    assert report.table(records, "accuracy").at[1, "Mag"] == "82.00 ± 2.00 (3)"
    assert report.table(records, "inference_time").at[1, "Mag"] == "5.000 ± 1.414 (2)"
    assert report.table(records, "cpu_memory").at[1, "Mag"] == "1.0 ± 0.0 (2)"
    text = report.tables_markdown(records)
    note = "Runs made on a CPU only: this table leaves out the 1 run made on NVIDIA H200"
    assert text.count(note) == 3  # inference time, CPU memory, prune time (GPU memory: CUDA's)
    assert note not in report.tables_markdown(records[:2])
    mostly_gpu = records[:1] + [on("cuda", seed, 0.8, 0.05) for seed in (3, 4)]
    assert report.device_kind(mostly_gpu) == "cuda"
    assert report.table(mostly_gpu, "inference_time").at[1, "Mag"] == "0.050 ± 0.000 (2)"
    assert report.device_kind([]) is None


def test_every_method_of_a_figure_is_drawn_its_own_way_and_the_same_way_everywhere():
    """The results figure's methods, the references after training, SET, RigL and static, a
    method with every control and a lottery ticket with its two: no two lines share colour,
    line style and marker; and a method's colour and marker do not depend on the figure
    (SynFlow looks the same beside the survey's grid and beside SET and RigL)."""
    labels = ["Rand", "Mag", "SNIP", "GraSP", "SynFlow", "SNIP (train-mode BN)",
              "GraSP (train-mode BN)", "IMP (2 Iters)", "IMP (3 Iters)", "IMP (4 Iters)",
              "IMP (1 Iter)", "IMP (1 Iter, no rewind, fine-tuned)",
              "IMP (1 Iter, rewind to step 107)", "SET (ERK)", "RigL (ERK)", "Static (ERK)",
              *(f"Mag, {control}" for control in experiment.CONTROLS.values()),
              "IMP (2 Iters), random reinit", "IMP (2 Iters), layerwise shuffle"]
    records = [fabricated(label, "mag", c, 0, 0.5 + i / 100, 1.0)
               for i, label in enumerate(dict.fromkeys(labels)) for c in (1, 2)]
    figure = figures.accuracy_figure(records, with_survey=False)
    looks = {line.get_label(): (line.get_color(), line.get_marker())
             for ax in figure.axes for line in ax.get_lines()}
    assert set(looks) == set(labels)
    # two panels: what was pruned at initialization, and the rest
    one_shot, rest = ({line.get_label() for line in ax.get_lines()} for ax in figure.axes)
    assert "SynFlow" in one_shot and "Mag, random reinit" in one_shot and "IMP (2 Iters)" in rest
    assert one_shot.isdisjoint(rest) and "SET (ERK)" in rest
    assert figure._suptitle.get_text().endswith("smoke preset, fp32")
    assert RunConfig.from_preset("smoke", "imp", 1, iterations=1).label == "IMP (1 Iter)"
    assert RunConfig.from_preset("smoke", "imp", 1, iterations=3).label == "IMP (3 Iters)"
    styles = [figures.method_style(label) for label in labels]  # a custom dash, not "--" alone
    assert len({(s["color"], str(s["linestyle"]), s["marker"]) for s in styles}) == len(labels)
    assert all(looks[label] == (s["color"], s["marker"]) for label, s in zip(labels, styles))
    alone = figures.accuracy_figure(
        [r for r in records if r["label"] in ("SynFlow", "SET (ERK)")], with_survey=False)
    assert {line.get_label(): line.get_color() for ax in alone.axes
            for line in ax.get_lines()} == {
        "SynFlow": looks["SynFlow"][0], "SET (ERK)": looks["SET (ERK)"][0]}
    assert figures.method_style("Mag, layerwise shuffle")["marker"] != \
        figures.method_style("Mag, random reinit")["marker"]  # controls read apart
    assert figures.method_style("Mag, layerwise shuffle")["color"] == \
        figures.method_style("Mag")["color"]  # a control keeps its method's colour
    assert figures.method_style("IMP (2 Iters), random reinit")["color"] == \
        looks["IMP (2 Iters)"][0] != looks["IMP (3 Iters)"][0]  # a ticket's control, its rounds'
    # the survey's numbers and the seed bands are named in the legend where they are drawn
    seeded = records + [fabricated("Mag", "mag", c, 1, 0.6, 1.0) for c in (1, 2)]
    legend = [t.get_text() for t in figures.accuracy_figure(
        [r for r in seeded if r["label"] == "Mag"]).axes[0].get_legend().get_texts()]
    assert legend == ["Mag", "the survey's number (open)", figures.BAND_NOTE]
    axis = figure.axes[-1].xaxis  # each compression drawn is a tick, named as the tables name it
    assert [t.get_text() for t in axis.get_ticklabels()] == ["1", "2"]
    assert list(axis.get_minorticklocs()) == []


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
    assert formatted.at[1, "Mag"] == "85.00 ± 7.07 (2)" and formatted.at[2, "Mag"] == "50.00"
    assert formatted.at[2, "IMP (2 Iters)"] == "n/a"
    assert report.table(records, "inference_time").at[1, "Mag"] == "2.000 ± 1.414 (2)"
    assert report.table(records, "cpu_memory").at[1, "Mag"] == "1.0 ± 0.0 (2)"
    compared = report.comparison(records, "accuracy")
    assert compared.at[1.0, ("Mag", "survey")] == 88.88  # the survey's table 1
    assert compared.at[1.0, ("Mag", "diff")] == pytest.approx(85.0 - 88.88)
    assert report.comparison(records, "params") is None  # the survey has no such table
    assert ("Mag", "diff") not in report.comparison(records, "cpu_memory")  # no stated unit
    beside = report.beside_survey(records, "accuracy")
    assert list(beside.index[:3]) == ["Mag", "↳ survey", "↳ ours − survey"]
    assert beside.loc["Mag", "c = 1"] == "85.00 ± 7.07 (2)"
    assert beside.iloc[1]["c = 1"] == "88.88" and beside.iloc[2]["c = 1"] == "−3.88"
    assert beside.iloc[0]["c = 0.05"] == "n/a"  # a compression the survey has and we lack
    assert list(report.beside_survey(records, "cpu_memory").index[:3]) == [
        "Mag", "↳ survey", "IMP (2 Iters)"]  # no difference row without a common unit


def test_another_scales_rows_stand_under_each_method_it_has_with_their_own_gap():
    """The results chapter's table 1 shows the survey preset's full-width runs under the
    cpu-full rows: a row of their cells and one of their difference to the survey, only for the
    methods stored there, the survey's numbers and our difference unchanged."""
    ours = [fabricated("Mag", "mag", 1, 0, 0.80, 1.0), fabricated("SNIP", "snip", 1, 0, 0.70, 1.0)]
    wide = [fabricated("Mag", "mag", c, s, a, 1.0, precision="bf16")
            for c, s, a in ((1, 0, 0.89), (1, 1, 0.87), (2, 0, 0.85))]
    beside = report.beside_survey(ours, "accuracy", {"survey scale": wide})
    assert list(beside.index) == ["Mag", "↳ survey", "↳ ours − survey", "↳ survey scale",
                                  "↳ survey scale − survey", "SNIP", "↳ survey",
                                  "↳ ours − survey"]
    rows = {label: beside.iloc[i] for i, label in enumerate(beside.index) if i < 5}
    assert rows["↳ survey scale"]["c = 1"] == "88.00 ± 1.41 (2)"
    assert rows["↳ survey scale"]["c = 2"] == "85.00"
    assert rows["↳ survey scale"]["c = 0.05"] == "n/a"
    assert rows["↳ survey scale − survey"]["c = 1"] == "−0.88"  # 88.00 - 88.88
    assert rows["↳ ours − survey"]["c = 1"] == "−8.88"  # the cpu-full row's own, unchanged
    assert beside.equals(report.beside_survey(ours, "accuracy", {"survey scale": wide}))
    for nothing in ({}, {"survey scale": []}, None):  # no runs there: no rows, as before
        assert report.beside_survey(ours, "accuracy", nothing).equals(
            report.beside_survey(ours, "accuracy"))
    memory = report.beside_survey(ours, "cpu_memory", {"survey scale": wide})
    assert "↳ survey scale − survey" not in memory.index  # no difference without a unit


def test_a_cell_stored_at_two_precisions_is_refused_not_averaged_or_dropped():
    """A preset whose precision is the machine's (cpu-full) can hold a cell in bf16 from one
    machine and in fp32 from another: as seeds of one mean, or as one run's repeats, either would
    give a silently mixed number."""
    fp32 = [fabricated("Mag", "mag", 1, s, 0.80, 1.0, precision="fp32") for s in (0, 1)]
    bf16 = [fabricated("Mag", "mag", 1, s, 0.90, 1.0, precision="bf16") for s in (0, 1)]
    assert report.table(fp32, "accuracy").at[1, "Mag"] == "80.00 ± 0.00 (2)"
    assert report.table(bf16, "accuracy").at[1, "Mag"] == "90.00 ± 0.00 (2)"
    for mixed in (fp32 + bf16, fp32[:1] + bf16[1:]):  # the same seeds, or other seeds
        with pytest.raises(ValueError, match="Mag at compression 1 in bf16 and fp32"):
            report.table(mixed, "accuracy")
    snip = fabricated("SNIP", "snip", 1, 0, 0.70, 1.0, precision="bf16")  # another cell: fine
    assert report.table(fp32 + [snip], "accuracy").at[1, "SNIP"] == "70.00"


def test_records_are_read_one_precision_at_a_time_and_the_other_is_named():
    fp32 = [fabricated("Mag", "mag", 1, 0, 0.80, 1.0, precision="fp32")]
    bf16 = [fabricated("Mag", "mag", 1, 0, 0.90, 1.0, precision="bf16"),
            fabricated("SNIP", "snip", 1, 0, 0.10, 1.0, precision="bf16", status="diverged")]
    chosen = report.at_precision(fp32 + bf16, "smoke", "bf16")
    assert chosen == ("bf16", bf16, ["fp32"])  # a failed run is kept: tables say it failed
    assert report.at_precision(bf16, "smoke", "fp32") == ("fp32", [], ["bf16"])
    assert report.at_precision(fp32 + bf16, "laptop").precision == "fp32"  # pinned: any machine
    auto = report.at_precision(fp32 + bf16, "smoke")  # the machine's own
    assert auto.precision == ("bf16" if train.bf16_supported("cpu") else "fp32")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        report.at_precision(fp32, "smoke", "fp16")


def test_tables_say_what_their_symbols_mean_only_where_they_appear():
    one = [fabricated("Mag", "mag", 1, 0, 0.80, 1.0)]
    two = one + [fabricated("Mag", "mag", 1, 1, 0.90, 3.0, waited_s=2.0)]
    assert report.notes(report.table(one, "accuracy")) == []
    assert report.notes(report.table(two, "accuracy")) == [report.CELL_NOTE]
    assert report.notes(report.table(two, "inference_time")) == [
        report.CELL_NOTE, report.MARK_NOTES[report.CONTENDED]]
    text = report.tables_markdown(two)
    assert text.count(report.MARK_NOTES[report.CONTENDED]) == 1  # under the timing table only
    assert text.count(report.MARK_NOTES[report.UNKNOWN]) == 1  # the prune times: unknown
    assert "No run here measured this" in text  # GPU memory on a CPU: the survey's alone
    counts = pd.DataFrame({"cells": [48], "gap": [1.5]}, index=["table 1"])
    assert report.markdown(counts, 3).splitlines()[-1] == "| table 1 | 48 | 1.500 |"


def test_time_tables_mark_contended_and_unknown_timings():
    records = [fabricated("Mag", "mag", 1, 0, 0.8, 1.0),
               fabricated("Mag", "mag", 1, 1, 0.8, 3.0, waited_s=2.0),  # 2 s of 15 s waiting
               fabricated("SNIP", "snip", 1, 0, 0.8, 1.0)]
    del records[2]["metrics"]["time_passes_wait_s"], records[2]["metrics"]["time_passes_load"]
    timing = report.table(records, "inference_time")
    assert timing.at[1, "Mag"] == "2.000 ± 1.414 (2)" + report.CONTENDED
    assert timing.at[1, "SNIP"] == "1.000" + report.UNKNOWN
    assert report.table(records, "accuracy").at[1, "Mag"] == "80.00 ± 0.00 (2)"  # no marks
    assert [r["config"]["seed"] for r in report.uncontended(records, "inference_time")
            if r["label"] == "Mag"] == [0]
    assert report.table(records, "prune_time").at[1, "Mag"] == "0.20 ± 0.14 (2)" + report.UNKNOWN


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


def test_effects_spread_and_verdict_match_hand_computed_values():
    records = [fabricated("SNIP", "snip", 1, seed, acc, 1.0)
               for seed, acc in enumerate((0.60, 0.62, 0.64))]
    records += [fabricated("SNIP (train-mode BN)", "snip", 1, seed, acc, 1.0)
                for seed, acc in enumerate((0.70, 0.70, 0.73))]
    records += [fabricated("SNIP", "snip", 2, seed, acc, 1.0)
                for seed, acc in enumerate((0.4, 0.5))]
    records += [fabricated("SNIP (train-mode BN)", "snip", 2, 0, 0.3, 1.0)]
    table = report.effects(records, "SNIP", "SNIP (train-mode BN)")
    assert table.at[1, "effect"] == pytest.approx(71.0 - 62.0)
    assert table.at[1, "seed spread"] == pytest.approx(2.0)  # the larger: std 2 vs 1.73
    assert table.at[2, "effect"] == pytest.approx(30.0 - 45.0) and table.at[2, "seeds"] == "2 / 1"
    # cells with two seeds or more: SNIP at 1 (2.0), train-mode at 1 (1.73), SNIP at 2 (7.07)
    assert report.seed_spread(records) == pytest.approx(2.0)
    assert report.seed_spread(records, label="SNIP", compression=2) == pytest.approx(math.sqrt(50))
    assert math.isnan(report.seed_spread(records, label="SNIP (train-mode BN)", compression=2))
    assert math.isnan(report.seed_spread(records, label="GraSP", compression=1))
    assert report.verdict(9.0, 2.0).endswith("it matters")
    assert report.verdict(-3.9, 2.0).endswith("it does not matter here")
    assert "no seed spread" in report.verdict(1.0, math.nan)
    assert report.matters(-4.1, 2.0) and not report.matters(4.0, 2.0)
    assert not report.matters(100.0, math.nan)


def test_the_typical_spread_leaves_out_cells_whose_every_seed_lost_a_layer():
    """A network with an empty layer predicts one class whatever its seed: a cell whose every
    run collapsed has a spread of 0 by construction, which must not pull the median down. A cell
    with one collapsed seed among trained ones still counts (its spread is real)."""
    def run(label, compression, seed, accuracy, empty_layer):
        record = fabricated(label, "mag", compression, seed, accuracy, 1.0)
        record["layer_densities"]["classifier.weight"] = 0.0 if empty_layer else 0.5
        return record

    records = [run("Mag", 1, seed, acc, False) for seed, acc in enumerate((0.60, 0.62, 0.64))]
    records += [run("Mag", 2, seed, 0.1, True) for seed in range(3)]  # collapsed: std 0
    records += [run("SNIP", 2, 0, 0.1, True), run("SNIP", 2, 1, 0.5, False)]
    assert report.collapsed_cells(records) == {(2, "Mag")}
    # left: Mag at 1 (std 2.0) and SNIP at 2 (std 28.28); median 15.14, not the 2.0 with Mag at 2
    assert report.seed_spread(records) == pytest.approx((2.0 + math.sqrt(800)) / 2)
    assert report.seed_spread(records, label="Mag", compression=2) == 0.0


def test_survey_runs_leave_out_the_controls_and_variants_but_train_mode_scoring():
    labels = ["RigL (ERK)", "IMP (2 Iters)", "IMP (2 Iters), random reinit", "IMP (1 Iter)",
              "GraSP (train-mode BN)", "SNIP (train-mode BN)", "SNIP (local scope)",
              "SynFlow (1 round)", "GraSP", "GraSP, inverted scores", "SET (ERK)"]
    records = [fabricated(label, "imp" if "IMP" in label else "grasp", 1, 0, 0.8, 1.0)
               for label in labels]
    assert [r["label"] for r in report.survey_runs(records)] == [
        "RigL (ERK)", "IMP (2 Iters)", "GraSP (train-mode BN)", "SNIP (train-mode BN)", "GraSP",
        "SET (ERK)"]
    assert list(report.summary(records, "accuracy")[0].columns) == [  # beside their method
        "SNIP (local scope)", "SNIP (train-mode BN)", "GraSP", "GraSP (train-mode BN)",
        "GraSP, inverted scores", "SynFlow (1 round)", "IMP (1 Iter)", "IMP (2 Iters)",
        "IMP (2 Iters), random reinit", "SET (ERK)", "RigL (ERK)"]


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
        record = sweeps.sweep([config], store, progress=False)[0]
        assert record["status"] == "finished" and record["config"]["compile"] is True
        graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs[0] >= 1 and graphs[1] == 0, f"graphs compiled per run: {graphs}"


def test_a_time_budget_starts_no_run_that_would_end_past_it(configs, tmp_path):
    store = Store(tmp_path)
    first = sweeps.sweep(configs, store, time_budget=0.01, progress=False)
    assert len(first) == 1  # nothing known yet: one run starts, and it alone fills the budget
    assert first[0]["status"] == "finished"
    with pytest.raises(ValueError, match="no run fits the time budget"):  # and says so
        sweeps.sweep(configs, store, time_budget=0.5 * first[0]["timings"]["total_s"],
                     progress=False)  # the stored run says a run takes longer than that
    rest = sweeps.sweep(configs, store, time_budget=3600, progress=False)
    assert len(rest) == 3 and all(store.done(c) for c in configs)
    with pytest.raises(ValueError, match="local backend"):
        sweeps.sweep(configs, store, backend="ray", time_budget=60, progress=False)


def timed_record(method, seconds, iterations=None, control=None, status="finished", **fields):
    config = RunConfig.from_preset("smoke", method, 1, iterations=iterations, control=control,
                                   **fields)
    return {"status": status, "config": config_dict(config),
            "timings": {"total_s": seconds}}


def test_run_time_estimates_by_kind_then_by_training():
    snip = RunConfig.from_preset("smoke", "snip", 2)
    imp3 = RunConfig.from_preset("smoke", "imp", 2, iterations=3)
    this_call = [timed_record("snip", 10), timed_record("snip", 30), timed_record("snip", 12),
                 timed_record("snip", 999, status="failed")]
    stored = [timed_record("snip", 100), timed_record("imp", 40, iterations=2)]
    assert sweeps.estimate_seconds(snip, this_call, stored) == 12  # median, same kind
    assert sweeps.estimate_seconds(snip, [], stored) == 100
    assert sweeps.estimate_seconds(imp3, this_call, stored) == 4 * 12  # 3 rounds + dense
    assert sweeps.estimate_seconds(imp3, [], stored[:1]) == 4 * 100
    assert sweeps.estimate_seconds(imp3, [], []) is None
    assert sweeps.trainings(config_dict(
        RunConfig.from_preset("smoke", "imp", 1, iterations=2, control="reinit"))) == 4


def test_run_time_estimates_scale_with_the_epochs():
    """A preset's sizing runs differ only in their epochs: a run of 30 epochs is estimated at
    twice a stored run of 15, one of 5 at a third."""
    def recipe(epochs):
        return replace(experiment.PRESETS["smoke"].recipe, epochs=epochs)

    def at(epochs):
        return RunConfig.from_preset("smoke", "dense", 0, recipe=recipe(epochs))

    stored = [timed_record("dense", 60, recipe=recipe(15))]
    assert sweeps.estimate_seconds(at(30), stored) == pytest.approx(120)
    assert sweeps.estimate_seconds(at(5), stored) == pytest.approx(20)
    assert sweeps.estimate_seconds(at(15), stored) == pytest.approx(60)


def imp_record(seconds, cached):
    """A finished IMP record of ``len(cached) - 1`` rounds, those marked True from the cache."""
    record = timed_record("imp", seconds, iterations=len(cached) - 1)
    return {**record, "imp_rounds": [{"round": r, "cached": c} for r, c in enumerate(cached)]}


def test_run_time_estimates_count_only_the_trainings_a_run_does():
    imp2 = RunConfig.from_preset("smoke", "imp", 2, iterations=2)
    stored = [imp_record(300, [False, False, False]),  # 100 s a training
              imp_record(220, [True, False, False]),  # 110 s: its dense run came from the cache
              imp_record(3, [True, True, True])]  # trained nothing: says nothing of a training
    assert [sweeps.trained(r) for r in stored] == [3, 2, 0]
    assert sweeps.trained(timed_record("imp", 40, iterations=2)) == 3  # rounds not recorded
    assert sweeps.estimate_seconds(imp2, stored) == 3 * 105  # nothing cached: 3 trainings
    assert sweeps.estimate_seconds(imp2, stored, left=1) == 105
    assert sweeps.estimate_seconds(imp2, stored, left=0) == 0
    assert sweeps.estimate_seconds(imp2, stored[2:]) is None


def test_trainings_left_counts_the_imp_rounds_the_cache_holds(tmp_path):
    two = RunConfig.from_preset("smoke", "imp", 1, iterations=2, device="cpu")
    four = RunConfig.from_preset("smoke", "imp", 2, iterations=4, device="cpu")  # rounds 1-2: two's
    mag = RunConfig.from_preset("smoke", "mag", 1, device="cpu")
    assert [experiment.trainings_left(c, tmp_path) for c in (two, four, mag)] == [3, 5, 1]
    experiment.run(two, tmp_path)
    assert [experiment.trainings_left(c, tmp_path) for c in (two, four, mag)] == [0, 2, 1]
    control = RunConfig.from_preset("smoke", "imp", 1, iterations=2, device="cpu",
                                    control="reinit")
    assert experiment.trainings_left(control, tmp_path) == 1  # the control's own training


def test_a_time_budget_starts_an_imp_run_whose_rounds_the_cache_holds(tmp_path):
    """IMP (4 Iters) at c = 2 after IMP (2 Iters) at c = 1 trains two rounds, not five: a budget
    of one IMP (2 Iters) run (three trainings) fits it, and then no IMP (3 Iters) run."""
    store, cache = Store(tmp_path), tmp_path / "cache"
    two, four, three = (RunConfig.from_preset("smoke", "imp", c, iterations=k, device="cpu")
                        for c, k in ((1, 2), (2, 4), (1, 3)))
    budget = sweeps.sweep([two], store, cache_dir=cache, progress=False)[0]["timings"]["total_s"]
    ran = sweeps.sweep([four, three], store, cache_dir=cache, time_budget=budget, progress=False)
    assert [r["label"] for r in ran] == ["IMP (4 Iters)"]
    assert [r["cached"] for r in ran[0]["imp_rounds"]] == [True, True, True, False, False]


def test_time_estimates_draw_only_on_runs_made_as_this_one_will_be():
    config = RunConfig.from_preset("smoke", "mag", 1, device="cpu", precision="fp32")
    here = {"device": "cpu", "device_name": device_name(torch.device("cpu")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    def record(precision="fp32", **environment):
        return {"config": {"precision": precision}, "environment": {**here, **environment}}

    alike, unrecorded = record(), record()
    del unrecorded["environment"]["cpu_capability"]  # a record from before it was recorded

    class Stored:  # what past_runs reads of a Store
        def records(self, preset):
            return [alike, record("bf16"), record(cpu_capability="another"),
                    record(device_name="another CPU"), unrecorded] if preset == "smoke" else []

    assert sweeps.past_runs(Stored(), [config]) == [alike, unrecorded]


def test_a_config_takes_its_budget_from_its_preset_and_names_every_departure():
    laptop = experiment.PRESETS["laptop"]
    config = RunConfig("snip", 1, preset="laptop")
    assert (config.model, config.width, config.recipe) == (laptop.model, laptop.width,
                                                           laptop.recipe)
    assert config == RunConfig.from_preset("laptop", "snip", 1) and config.label == "SNIP"
    assert RunConfig("mag", 1).recipe == experiment.PRESETS["smoke"].recipe  # not Recipe()'s
    fast = replace(laptop.recipe, lr=1.0)
    assert RunConfig("rand", 2, preset="laptop", recipe=fast).label == "Rand (lr 1)"
    assert RunConfig.from_preset("laptop", "grasp", 1, bn_mode="train", prune_batches=10).label \
        == "GraSP (10 x 256 scoring images, train-mode BN)"
    assert RunConfig.from_preset("laptop", "synflow", 1, iterations=1).label == \
        "SynFlow (1 round)"
    assert RunConfig.from_preset("laptop", "synflow", 1, iterations=100).label == "SynFlow"
    assert RunConfig.from_preset("laptop", "mag", 1, scope="local").label == "Mag (local scope)"
    assert RunConfig.from_preset("laptop", "imp", 1, iterations=2, rewind=6).label == \
        "IMP (2 Iters, rewind to step 6)"
    assert RunConfig.from_preset("laptop", "imp", 1).iterations == 1
    with pytest.raises(ValueError, match="gives its whole budget"):
        RunConfig("mag", 1, preset="mine")
    for bad, message in [({"bn_mode": "train"}, "bn_mode"), ({"rewind": 5}, "rewind"),
                         ({"iterations": 0}, "iterations"), ({"scope": "layer"}, "scope")]:
        with pytest.raises(ValueError, match=message):
            RunConfig.from_preset("smoke", "mag", 1, **bad)


def test_config_dicts_of_schema_1_are_upgraded():
    old = config_dict(RunConfig.from_preset("laptop", "imp", 1, iterations=3))
    del old["iterations"], old["bn_mode"], old["rewind"], old["compile"]
    one_shot = config_dict(RunConfig.from_preset("laptop", "synflow", 2))
    del one_shot["iterations"], one_shot["bn_mode"], one_shot["rewind"], one_shot["compile"]
    assert experiment.config_from_dict({**old, "iters": 3, "rounds": None}).iterations == 3
    assert experiment.config_from_dict({**one_shot, "iters": 1, "rounds": 7}).iterations == 7
    with pytest.raises(ValueError, match="unknown config fields"):
        experiment.config_from_dict({**one_shot, "temperature": 5})


def test_the_cpu_full_preset_is_the_laptop_network_on_all_of_cifar10_on_the_fast_path():
    """The full-data CPU preset: the laptop's model, every image of both splits, the test set
    evaluated once (after the last epoch), and bf16 wherever the CPU does bf16 arithmetic."""
    full, laptop = experiment.PRESETS["cpu-full"], experiment.PRESETS["laptop"]
    assert (full.model, full.width, full.dataset) == (laptop.model, laptop.width, laptop.dataset)
    assert full.limit_per_class is None and full.eval_every == full.recipe.epochs
    assert full.recipe.label_smoothing == 0.1 and laptop.recipe.label_smoothing == 0
    config = RunConfig.from_preset("cpu-full", "dense", 0, device="cpu")
    assert config.precision == ("bf16" if train.bf16_supported("cpu") else "fp32")
    assert config.label == "Dense"  # its own precision is no departure


def test_methods_of_one_cost_stand_side_by_side_in_the_cost_figure():
    """The cost figure draws each method at its number of trainings; methods that cost the
    same are spread around that number, each at its own place, none past half a training."""
    labels = ["Rand", "Mag", "SNIP", "IMP (2 Iters)"]
    methods = ["rand", "mag", "snip", "imp"]
    records = [fabricated(label, method, c, 0, 0.5 + i / 100, 1.0)
               for i, (label, method) in enumerate(zip(labels, methods)) for c in (1, 2)]
    trainings = {"Rand": 1, "Mag": 1, "SNIP": 1, "IMP (2 Iters)": 3}
    figure = figures.cost_accuracy_figure(records, [1, 2], trainings.get)
    for ax in figure.axes[:2]:
        where = {container.get_label(): container.lines[0].get_xdata()[0]
                 for container in ax.containers}
        assert set(where) == set(labels)
        assert len({where[label] for label in ("Rand", "Mag", "SNIP")}) == 3
        assert all(abs(where[label] - trainings[label]) < 0.5 for label in labels)
        assert where["IMP (2 Iters)"] == 3
