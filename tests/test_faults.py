"""Nothing lost, nothing stuck: failed runs, corrupt files and bad input, each provoked."""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparse_survey import data, experiment, lottery, models, pruners, report, sweeps, tutorial
from sparse_survey.experiment import RunConfig, config_dict
from sparse_survey.store import Store, read_record, write_json
from sparse_survey.train import Recipe, bf16_supported

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparse_survey", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def one_line_error(out, code=2):
    """An expected error: exit status ``code``, one ``error:`` line, no traceback."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr


def smoke(method="mag", compression=1, **overrides):
    return RunConfig.from_preset("smoke", method, compression, device="cpu", profile_repeats=1,
                                 **overrides)


# ------------------------------------------------ 1. a failed run no longer blocks the store

def test_a_failed_run_is_retried_and_a_diverged_one_only_on_request(tmp_path, monkeypatch):
    store, config = Store(tmp_path), smoke()
    real_run = experiment._run

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(experiment, "_run", disk_full)
    failed = sweeps.sweep([config], store, progress=False)[0]
    assert failed["status"] == "failed"
    assert failed["error"] == "OSError: No space left on device"  # the message, first
    assert "Traceback" in failed["traceback"]
    assert not store.done(config)
    monkeypatch.setattr(experiment, "_run", real_run)
    retried = sweeps.sweep([config], store, progress=False)
    assert [r["status"] for r in retried] == ["finished"]

    exploding = smoke(recipe=Recipe(epochs=2, batch_size=32, lr=1e12, momentum=0.0,
                                    nesterov=False, schedule="constant"))
    assert sweeps.sweep([exploding], store, progress=False)[0]["status"] == "diverged"
    assert sweeps.sweep([exploding], store, progress=False) == []  # a result: kept
    again = sweeps.sweep([exploding], store, progress=False, retry_diverged=True)
    assert [r["status"] for r in again] == ["diverged"]


def test_cli_sweep_exits_1_on_a_failed_run_names_its_error_and_retries_it(tmp_path):
    grid = tmp_path / "grid.yaml"  # a rewind step past the training: found by IMP, in the run
    grid.write_text("methods: []\ncompressions: [1]\nimp_iterations: [2]\nrewind: 100000\n")
    common = ("sweep", "--preset", "smoke", "--grid", str(grid), "--results",
              str(tmp_path / "results"), "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    first = cli(*common)
    assert first.returncode == 1, first.stderr
    assert "failed: ValueError: rewind step 100000 is beyond the" in first.stdout
    assert "1 run(s) failed" in first.stderr
    second = cli(*common)  # a failed run is not done: the next call runs it again
    assert second.returncode == 1, second.stderr
    assert "1 still to do" in second.stdout and "1 of them diverged or failed" in second.stdout


def test_an_unusable_imp_cache_stops_the_sweep_before_any_run(tmp_path):
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    out = cli("sweep", "--preset", "smoke", "--grid", "{methods: [mag], compressions: [1], "
              "imp_iterations: [2]}", "--results", str(tmp_path / "results"), "--no-progress",
              env={"SPARSE_SURVEY_CACHE": str(blocked / "cache")})
    assert out.returncode == 2 and "cannot write the IMP cache into" in out.stderr
    assert not list((tmp_path / "results").rglob("*.json"))  # not even the one-shot run


# ----------------------------------------------------------- 2. one run, one key, one seed

def test_int_and_float_numbers_name_the_same_run():
    assert smoke(compression=1).key == smoke(compression=1.0).key
    assert smoke(width=1).key == smoke(width=1.0).key
    assert smoke(compression=1).key != smoke(compression=1.5).key
    assert experiment.canonical({"a": [1.0, 2.5, True], "b": {"c": 3.0}}) == \
        {"a": [1, 2.5, True], "b": {"c": 3}}


def old_key(config: RunConfig) -> str:
    """A run's key as it was computed before keys were canonical."""
    identity = {k: v for k, v in config_dict(config).items() if k not in experiment.EXECUTION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def test_a_record_stored_under_an_old_key_is_migrated_not_rerun(tmp_path, monkeypatch):
    store, config = Store(tmp_path), smoke(compression=1.0)
    record = experiment.run(config)
    old = old_key(config)
    assert old != config.key  # {"compression": 1.0} was hashed as written
    write_json(tmp_path / "smoke" / f"{old}.json", {**record, "key": old})

    def no_work(*_args, **_kwargs):
        raise AssertionError("a stored run was run again")

    monkeypatch.setattr(sweeps, "run", no_work)
    assert sweeps.sweep([smoke(compression=1)], store, progress=False) == []
    assert [p.stem for p in (tmp_path / "smoke").glob("*.json")] == [config.key]
    assert store.records("smoke", stale=True)[0]["key"] == config.key


def test_a_record_of_schema_1_is_migrated_and_loads_under_its_new_key(tmp_path, monkeypatch):
    """Schema 1 named IMP's rounds ``iters`` and a one-shot method's ``rounds``, and had neither
    ``bn_mode``, ``rewind`` nor ``compile``: such a record must load and be rekeyed, not rerun."""
    store, imp = Store(tmp_path), smoke("imp", 1, iterations=2)
    record = experiment.run(imp)
    legacy = {k: v for k, v in record["config"].items()
              if k not in ("iterations", "bn_mode", "rewind", "compile")}
    legacy.update(iters=2, rounds=None)
    identity = {k: v for k, v in legacy.items() if k != "device"}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    write_json(tmp_path / "smoke" / f"{key}.json",
               {**record, "schema": 1, "key": key, "config": legacy})
    loaded = store.records("smoke", stale=True)[0]
    assert loaded["config"] == record["config"] and loaded["key"] == imp.key
    monkeypatch.setattr(sweeps, "run", lambda *a, **k: pytest.fail("a stored run was rerun"))
    assert sweeps.sweep([imp], store, progress=False) == []
    migrated = json.loads(store.path(imp).read_text())
    assert migrated["schema"] == experiment.SCHEMA and migrated["config"]["iterations"] == 2
    assert not (tmp_path / "smoke" / f"{key}.json").exists()


def test_a_record_of_schema_3_is_migrated_to_no_label_smoothing_not_rerun(tmp_path, monkeypatch):
    """Schema 3's recipe had no ``label_smoothing``: its runs trained without it (0), and such a
    record must load under the key of that config, be rekeyed once and never be rerun."""
    store, config = Store(tmp_path), smoke()
    record = experiment.run(config)
    legacy = {**record["config"], "recipe": {k: v for k, v in record["config"]["recipe"].items()
                                            if k != "label_smoothing"}}
    identity = {k: v for k, v in legacy.items() if k not in experiment.EXECUTION}
    key = hashlib.sha256(json.dumps(experiment.canonical(identity), sort_keys=True)
                         .encode()).hexdigest()[:16]
    assert key != config.key
    write_json(tmp_path / "smoke" / f"{key}.json",
               {**record, "schema": 3, "key": key, "config": legacy})
    (loaded,) = store.records("smoke", stale=True)
    assert loaded["key"] == config.key and loaded["config"]["recipe"]["label_smoothing"] == 0
    monkeypatch.setattr(sweeps, "run", lambda *a, **k: pytest.fail("a stored run was rerun"))
    assert sweeps.sweep([config], store, progress=False) == []
    assert [p.stem for p in (tmp_path / "smoke").glob("*.json")] == [config.key]
    assert json.loads(store.path(config).read_text())["schema"] == experiment.SCHEMA


def test_a_run_stored_twice_counts_as_one_seed_in_the_tables(tmp_path):
    record = experiment.run(smoke(compression=1))
    twice = [record, {**record, "config": {**record["config"], "compression": 1.0},
                      "key": "0" * 16}]
    mean, std, count = report.summary(twice, "accuracy")
    assert count.at[1.0, "Mag"] == 1 and std.isna().all().all()
    assert "±" not in report.table(twice, "accuracy").at[1.0, "Mag"]


def test_every_committed_record_loads_under_its_key():
    paths = [path for preset in experiment.PRESETS
             for path in (ROOT / "results" / preset).glob("*.json")]
    assert paths, "the repository holds run records"
    for path in paths:
        record = read_record(path)
        assert record is not None, path
        assert experiment.config_from_dict(record["config"]).key == record["key"] == path.stem


# ------------------------------------------------------------- 3. a broken record is named

def test_a_broken_record_is_named_skipped_by_readers_and_rerun_by_the_sweep(tmp_path):
    store, config = Store(tmp_path), smoke()
    sweeps.sweep([config], store, progress=False)
    good = store.path(config)
    empty = tmp_path / "smoke" / "0123456789abcdef.json"
    broken = {good: good.read_text()[:100], empty: "{}"}
    for path, text in broken.items():
        path.write_text(text)
    with pytest.warns(UserWarning) as caught:
        assert store.records("smoke") == []
    named = " ".join(str(w.message) for w in caught)
    assert str(good) in named and str(empty) in named and "lacks key, config" in named
    with pytest.warns(UserWarning, match="not a valid run record"):
        rerun = sweeps.sweep([config], store, progress=False)
    assert [r["status"] for r in rerun] == ["finished"]
    assert json.loads(good.read_text())["status"] == "finished"


# ------------------------------------------------------------------- 4. the decode cache

def tiny_images(root: Path, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def load(source, cache):
    return data.image_folder(source, cache)


def test_images_added_below_a_folder_are_seen(tmp_path):
    root = tiny_images(tmp_path / "images")
    assert len(load(root, tmp_path / "cache")[0]) == 4
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    assert len(load(root, tmp_path / "cache")[0]) == 5


def test_a_corrupt_cache_is_named_and_rebuilt(tmp_path):
    root = tiny_images(tmp_path / "images")
    expected = load(root, tmp_path / "cache")[0]
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:50])
    with pytest.warns(UserWarning, match=f"{cache.name} is damaged"):
        again = load(root, tmp_path / "cache")[0]
    assert torch.equal(again.images, expected.images)
    assert len(load(root, tmp_path / "cache")[0]) == 4  # rebuilt: read without a warning


def test_an_unwritable_cache_folder_is_skipped_with_a_warning(tmp_path):
    root = tiny_images(tmp_path / "images")
    blocked = tmp_path / "a file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="cannot write the decoded-image cache"):
        train, _ = load(root, blocked / "cache")
    assert len(train) == 4


def test_temporary_files_of_killed_writers_are_removed(tmp_path):
    root = tiny_images(tmp_path / "images")
    load(root, tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npz")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = cache.with_name(f"{cache.name}.tmp{dead}")
    stale.write_bytes(b"half a file")
    load(root, tmp_path / "cache")
    assert not stale.exists()


# ----------------------------------------------------------- 5. an unwritable results folder

def test_an_unwritable_store_fails_before_any_training(tmp_path, monkeypatch):
    blocked = tmp_path / "a file"
    blocked.write_text("")

    def no_training(*_args, **_kwargs):
        raise AssertionError("trained although the record could not be stored")

    monkeypatch.setattr(sweeps, "run", no_training)
    with pytest.raises(ValueError, match="cannot write run records to"):
        sweeps.sweep([smoke()], Store(blocked / "results"), progress=False)


def test_a_record_the_store_cannot_take_is_kept_safe(tmp_path, monkeypatch):
    store = Store(tmp_path / "results")
    (tmp_path / "tmp").mkdir()  # the profile's memory probe makes its files there too
    monkeypatch.setattr(sweeps.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))

    def full_disk(_record):
        raise OSError("No space left on device")

    monkeypatch.setattr(store, "write", full_disk)
    with pytest.warns(UserWarning, match="kept in"), pytest.raises(OSError, match="No space"):
        sweeps.sweep([smoke()], store, progress=False)
    (kept,) = (tmp_path / "tmp" / "sparse_survey-unsaved" / "smoke").glob("*.json")
    assert json.loads(kept.read_text())["status"] == "finished"


# ------------------------------------------------------- 6. messages instead of tracebacks

@pytest.mark.parametrize("device", ["foo", "cuda:99"])
def test_a_bad_device_is_one_line(device):
    out = cli("train", "--preset", "smoke", "--device", device)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --device" in out.stderr.splitlines()[-1]


@pytest.mark.parametrize(("text", "message"), [
    (None, "neither 'survey', an existing file nor an inline mapping"),
    ("methods: [mag\ncompressions: 1", "not valid YAML or JSON"),
    ("", "is empty"),
    ("methods: mag", "'methods' must be a list"),
    ("compressions: [1, -2]", "'compressions' must be a list of numbers >= 0"),
    ("[1, 2]", "a grid maps"),
])
def test_a_bad_grid_file_is_one_line(tmp_path, text, message):
    grid = tmp_path / "grid.yaml"
    if text is not None:
        grid.write_text(text)
    out = cli("sweep", "--preset", "smoke", "--grid", str(grid), "--results", str(tmp_path))
    assert message in one_line_error(out)


def test_a_truncated_archive_and_a_bad_checksum_name_the_file(tmp_path):
    root = tiny_images(tmp_path / "images", per_class=20)
    tarred = tmp_path / "images.tar.gz"
    with tarfile.open(tarred, "w:gz") as tar:
        tar.add(root, "images")
    tarred.write_bytes(tarred.read_bytes()[: tarred.stat().st_size // 2])
    zipped = tmp_path / "images.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, str(path.relative_to(root)))
    blob = bytearray(zipped.read_bytes())
    blob[200] ^= 0xFF  # a flipped byte inside the first member's data
    zipped.write_bytes(bytes(blob))
    for archive in (tarred, zipped):
        with pytest.raises(data.DataError, match=f"{archive.name} is damaged"):
            load(archive, tmp_path / "cache")
        out = cli("train", "--data-root", str(archive), "--epochs", "1",
                  env={"SPARSE_SURVEY_CACHE": str(tmp_path / "cache")})
        assert "is damaged or truncated" in one_line_error(out)


@pytest.mark.parametrize("damaged", ["dense", "checkpoint"])
def test_a_damaged_imp_cache_file_is_named_and_rebuilt(digits, tmp_path, damaged):
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05, schedule="constant")

    def imp():
        torch.manual_seed(0)
        model = models.build("mlp", in_channels=1, image_size=8)
        return lottery.imp(model, digits, 1, 2, recipe, device="cpu", cache_dir=tmp_path,
                           progress=False)

    first = imp()
    rounds = sorted((tmp_path / "imp").glob("*-r[0-9]*-c*.pt"))  # round 1's, then round 2's
    assert [p.name.split("-")[1] for p in rounds] == ["r1", "r2"]
    path = next((tmp_path / "imp").glob("*-dense.pt")) if damaged == "dense" else rounds[1]
    path.write_bytes(b"not a checkpoint")
    if damaged == "dense":  # else the finished rounds are read, not the dense run
        for checkpoint in rounds:
            checkpoint.unlink()
    with pytest.warns(UserWarning, match=f"{path.name} is damaged"):
        again = imp()
    assert [r["test_acc"] for r in again.rounds] == [r["test_acc"] for r in first.rounds]


# ----------------------------------------------------------- 7. no wrong result without a word

def test_a_multistep_schedule_must_drop_inside_the_training():
    with pytest.raises(ValueError, match="milestones must rise and lie inside the training"):
        Recipe(epochs=3, schedule="multistep")  # (60, 120): never dropping, silently
    from sparse_survey import cli as command_line

    common = ["train", "--preset", "smoke", "--epochs", "1", "--schedule", "multistep"]
    out = cli(*common)  # the CLI once dropped at epoch 0 twice here: the run at lr x 0.01
    assert "milestones must rise and lie inside the training" in one_line_error(out)
    one_epoch = command_line.budget(command_line.parser().parse_args(
        [*common, "--milestones", "0.5", "0.75"])).recipe
    assert [one_epoch.lr_factor(e) for e in (0, 0.6, 0.9)] == pytest.approx([1, 0.1, 0.01])


@pytest.mark.parametrize("option", ["--width", "--lr"])
def test_nan_options_are_refused(option):
    out = cli("train", "--preset", "smoke", option, "nan")
    assert "finite" in one_line_error(out)


def test_a_pruning_that_empties_layers_warns_and_the_record_keeps_it():
    torch.manual_seed(0)
    model = models.build("mlp", in_channels=1, image_size=8)
    batches = [(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))]
    with pytest.warns(UserWarning, match="layer collapse"):
        pruners.prune(model, "snip", 4.2, batches)
    record = experiment.run(smoke("snip", 4.2))
    assert record["status"] == "finished"
    assert any("layer collapse" in w for w in record["warnings"])


def test_a_rewind_step_beyond_the_training_is_refused_before_training(digits, monkeypatch):
    def no_training(*_args, **_kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(lottery, "fit", no_training)
    recipe = Recipe(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    with pytest.raises(ValueError, match="beyond the 21 training steps"):
        lottery.imp(models.build("mlp", in_channels=1, image_size=8), digits, 1, 1, recipe,
                    rewind=22, device="cpu", progress=False)


def test_a_report_of_nothing_finished_or_of_an_outdated_preset_says_so(tmp_path, monkeypatch):
    store = Store(tmp_path)
    real_run = experiment._run

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    current = RunConfig.from_preset("smoke", "mag", 1)  # the preset's own budget, all of it
    monkeypatch.setattr(experiment, "_run", broken)
    store.write(experiment.run(current))
    monkeypatch.setattr(experiment, "_run", real_run)
    out = cli("report", "--preset", "smoke", "--results", str(tmp_path))
    assert "1 record(s) there, none finished" in one_line_error(out)
    record = experiment.run(current)
    record["config"]["recipe"]["epochs"] += 1  # as if made when the preset trained longer
    store.write(record)
    out = cli("report", "--preset", "smoke", "--results", str(tmp_path))
    assert "made under an earlier definition of the preset" in one_line_error(out)


# ------------------------------------------------------------------------------ 8. notebooks

def test_notebook_parameters_are_checked_at_once():
    checked = tutorial.parameters("smoke", "[0.5, 1]", 2, "results")
    assert checked.compressions == [0.5, 1] and checked.seeds == [0, 1]
    assert checked.results == ROOT / "results"  # not the working directory's
    for bad, message in [({"seeds": 0}, "seeds must be a count"),
                         ({"compressions": "[1, -1]"}, "compression must be >= 0"),
                         ({"compressions": []}, "non-empty list"),
                         ({"preset": "huge"}, "unknown preset"),
                         ({"device": "foo"}, "not a torch device"),
                         ({"precision": "fp16"}, "unknown precision 'fp16'")]:
        with pytest.raises(ValueError, match=message):
            tutorial.parameters(**{"preset": "smoke", **bad})


def test_a_notebooks_precision_is_the_presets_own_unless_told():
    """``auto`` is the precision the preset's runs take on this machine: laptop's pinned fp32
    everywhere, smoke's the machine's; a precision named is the runs' own, and is named in their
    label where the preset's own is another."""
    assert tutorial.parameters("laptop").precision == "fp32"
    machine = "bf16" if bf16_supported("cpu") else "fp32"
    smoke = tutorial.parameters("smoke", method="mag")
    assert smoke.precision == machine and smoke.label() == "Mag"
    assert {c.precision for c in smoke.configs()} == {machine}
    laptop_bf16 = tutorial.parameters("laptop", method="snip", precision="bf16", bn_mode="train")
    assert {c.precision for c in laptop_bf16.configs()} == {"bf16"}
    assert laptop_bf16.label() == RunConfig.from_preset("laptop", "snip", 1, bn_mode="train",
                                                        precision="bf16").label
    assert laptop_bf16.label() != tutorial.parameters("laptop", method="snip",
                                                      bn_mode="train").label()


def test_runs_of_a_notebook_that_all_failed_say_why(tmp_path):
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="none of the 2 runs"):
        warnings.simplefilter("ignore")
        tutorial.runs([RunConfig.from_preset("smoke", "imp", c, rewind=100000, device="cpu")
                       for c in (0.5, 1)], tmp_path, progress=False)  # beyond the training
