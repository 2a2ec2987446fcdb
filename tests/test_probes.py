"""Nothing silent: the users' own command runs as typed, and each probe that once gave a quiet
wrong result, a repeated run, a traceback or a hang is provoked here and must now be refused or
said out loud."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import papermill
import pytest
from PIL import Image

from sparse_survey import data, experiment, sweeps
from sparse_survey.experiment import RunConfig
from sparse_survey.store import NewerRecordError, Store, write_json

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "sparse_survey", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def one_line_error(out, code=2):
    """An expected error: exit status ``code``, no traceback; returns the last stderr line."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    return out.stderr.strip().splitlines()[-1]


def smoke(method="mag", compression=1, **overrides):
    return RunConfig.from_preset("smoke", method, compression, device="cpu", **overrides)


def notebook(name, tmp_path, **parameters):
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out),
                               kernel_name="python3", cwd=str(ROOT), parameters=parameters,
                               progress_bar=False)
    return json.loads(out.read_text())


# -------------------------------------------------------------- the users' command, as typed

def test_papermill_iters_runs_that_many_imp_rounds(tmp_path, monkeypatch):
    """``papermill notebooks/imp.ipynb OUT -p iters 3``: IMP with three rounds is stored."""
    monkeypatch.setenv("SPARSE_SURVEY_CACHE", str(tmp_path / "cache"))
    notebook("imp", tmp_path, iters=3, preset="smoke", results=str(tmp_path / "store"),
             compressions=[1])
    (record,) = Store(tmp_path / "store").records("smoke")
    assert record["config"]["iterations"] == 3 and record["label"] == "IMP (3 Iters)"
    assert len(record["imp_rounds"]) == 4  # the dense round and three prune rounds


NOTEBOOK_NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_every_notebook_refuses_a_parameter_it_does_not_have(name, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        notebook(name, tmp_path, presett="smoke")
    assert failure.value.ename == "ParameterError"
    assert "no parameter 'presett'" in failure.value.evalue
    assert "its parameters are" in failure.value.evalue
    assert failure.value.exec_count == 3  # the parameters, papermill's cell, then the check


def test_the_suggestion_names_the_parameter_meant(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        notebook("imp", tmp_path, iterations=3, preset="smoke")
    assert "no parameter 'iterations' (did you mean 'iters'?)" in failure.value.evalue


@pytest.mark.parametrize(("parameters", "message"), [
    ({"results": "/proc/nope"}, "cannot write run records to /proc/nope/smoke"),
    ({"compressions": [20]}, "compression 20 is too high for mlp"),
    ({"iters": "two"}, "iters must be a whole number >= 1, got 'two'"),
])
def test_a_notebook_checks_its_values_in_the_cell_after_its_parameters(parameters, message,
                                                                       tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        notebook("imp", tmp_path, **{"preset": "smoke", "results": str(tmp_path / "r"),
                                     **parameters})
    assert failure.value.ename == "ParameterError" and message in failure.value.evalue
    assert "--results" not in failure.value.evalue  # a notebook user passes -p results
    assert failure.value.exec_count == 3
    assert "During handling of the above exception" not in "".join(failure.value.traceback)


# ------------------------------------------------------------------- wrong results, silently

def test_a_stray_copy_of_a_record_never_counts_and_is_left_alone(tmp_path):
    store, config = Store(tmp_path), smoke()
    sweeps.sweep([config], store, progress=False)
    real = store.get(config)
    stray = tmp_path / "smoke" / f"old-{config.key}.json"
    write_json(stray, {**real, "metrics": {**real["metrics"], "test_acc": 0.5}})
    with pytest.warns(UserWarning, match=f"ignoring {stray}: not named by a run key"):
        records = store.records("smoke")
    assert len(records) == 1 and records[0]["metrics"] == real["metrics"]
    with pytest.warns(UserWarning, match="ignoring"):
        assert sweeps.sweep([config], store, progress=False) == []
    assert stray.exists() and json.loads(stray.read_text())["metrics"]["test_acc"] == 0.5


def cifar_like(root: Path, classes: int = 10, size: int = 32, mode: str = "RGB",
               test_classes: int | None = None) -> Path:
    """A CIFAR-10-shaped image folder (one image per class and split), or a damaged one."""
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(classes)]
    for split, kept in (("train", names), ("test", names[:test_classes or classes])):
        for name in kept:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / split / name / "0.png")
    return root


@pytest.mark.parametrize(("damage", "message"), [
    ({"classes": 9}, "holds 9 classes"),
    ({"test_classes": 9}, "hold different classes: only in train/: class9"),
    ({"size": 64}, "holds 64x64 images with 3 channel(s); CIFAR-10's are 32x32 RGB"),
    ({"mode": "L"}, "is a L-mode image, not RGB"),
])
def test_a_damaged_data_set_is_refused_not_trained_as_cifar10(damage, message, tmp_path):
    root = cifar_like(tmp_path / "images", **damage)
    with pytest.raises(data.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.load("cifar10", root, cache_dir=tmp_path / "cache", download=False)


def test_a_cifar10_shaped_folder_loads(tmp_path):
    train, test = data.load("cifar10", cifar_like(tmp_path / "images"),
                            cache_dir=tmp_path / "cache", download=False)
    assert train.shape == (3, 32, 32) and len(train.classes) == 10 and len(test) == 10


def test_a_record_of_a_newer_schema_is_neither_read_nor_rewritten(tmp_path):
    store, config = Store(tmp_path), smoke()
    sweeps.sweep([config], store, progress=False)
    path = store.path(config)
    future = {**json.loads(path.read_text()), "schema": 99, "new_field": [1, 2]}
    path.write_text(json.dumps(future))
    with pytest.raises(NewerRecordError, match="schema 99, written by a newer sparse_survey"):
        store.records("smoke")
    with pytest.raises(NewerRecordError):
        sweeps.sweep([config], store, progress=False)
    assert json.loads(path.read_text()) == future
    out = cli("sweep", "--preset", "smoke", "--results", str(tmp_path), "--no-progress")
    assert "newer sparse_survey" in one_line_error(out)
    assert json.loads(path.read_text()) == future


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_sweep_refuses_no_seeds(seeds, tmp_path):
    out = cli("sweep", "--preset", "smoke", "--seeds", seeds, "--results", str(tmp_path))
    assert "argument --seeds: expected a whole number >= 1" in one_line_error(out)


def test_an_empty_grid_is_refused(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("seeds: []\n")
    out = cli("sweep", "--preset", "smoke", "--grid", str(grid), "--results", str(tmp_path))
    assert "has no runs" in one_line_error(out)


@pytest.mark.parametrize(("args", "message"), [
    (("--compression", "1"), "--method and --compression go together"),
    (("--repeats", "0"), "argument --repeats: expected a whole number >= 1, got '0'"),
    (("--repeats", "-3"), "argument --repeats: expected a whole number >= 1, got '-3'"),
])
def test_profile_refuses_options_it_would_ignore(args, message):
    out = cli("profile", "--preset", "smoke", "--no-memory", *args)
    assert message in one_line_error(out)


def test_a_time_budget_that_fits_no_run_says_so(tmp_path):
    store = Store(tmp_path)
    sweeps.sweep([smoke(compression=0.5)], store, progress=False)
    path = store.path(smoke(compression=0.5))
    record = json.loads(path.read_text())
    record["timings"]["total_s"] = 100.0  # a run of this kind took 100 s here
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="no run fits the time budget of 5 s: the shortest left "
                                         "is estimated at 100 s; give --time-budget 120"):
        sweeps.sweep([smoke(compression=1)], store, progress=False, time_budget=5)
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [mag]\ncompressions: [0.5, 1]\nimp_iterations: []\n")
    out = cli("sweep", "--preset", "smoke", "--grid", str(grid), "--results", str(tmp_path),
              "--time-budget", "5", "--no-progress", "--device", "cpu")
    assert "no run fits the time budget" in one_line_error(out)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    sweeps.sweep([smoke("mag", c) for c in (0.5, 1)], Store(root), progress=False)
    return root


def test_report_refuses_nan_and_says_what_it_substituted(small_store, tmp_path):
    common = ("report", "--preset", "smoke", "--results", str(small_store), "--out",
              str(tmp_path / "report"))
    assert "argument --compression" in one_line_error(cli(*common, "--compression", "nan"))
    out = cli(*common, "--compression", "7")
    assert out.returncode == 0, out.stderr
    assert "no finished run at compression 7: the per-layer figures show the nearest stored " \
           "one, 1" in out.stdout


# ---------------------------------------------------------------------------- work done twice

def test_a_grid_that_names_a_run_twice_runs_it_once(tmp_path, monkeypatch):
    grid = sweeps.load_grid({"methods": ["mag"], "compressions": [1, 1.0], "imp_iterations": [],
                             "seeds": [0, 0]})
    configs = sweeps.grid_configs(grid, "smoke")
    assert len(configs) == 1
    ran = []
    real_run = sweeps.run

    def counting(config, *args, **kwargs):
        ran.append(config.key)
        return real_run(config, *args, **kwargs)

    monkeypatch.setattr(sweeps, "run", counting)
    sweeps.sweep([smoke(compression=1), smoke(compression=1.0)], Store(tmp_path), progress=False)
    assert ran == [smoke().key]


def test_a_run_claimed_by_another_sweep_is_left_to_it(tmp_path):
    store = Store(tmp_path)
    claimed, free = smoke(compression=0.5), smoke(compression=1)
    with store.claim(claimed) as mine:
        assert mine
        records = sweeps.sweep([claimed, free], store, progress=False)
        assert [r["key"] for r in records] == [free.key]
        assert not store.done(claimed)
    assert not store.claimed(claimed)  # released with the block
    assert [r["key"] for r in sweeps.sweep([claimed, free], store, progress=False)] == \
        [claimed.key]


def test_two_sweeps_on_one_store_share_the_work(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [rand, mag, snip, grasp]\ncompressions: [0.5, 1]\n"
                    "imp_iterations: []\n")
    command = [sys.executable, "-m", "sparse_survey", "sweep", "--preset", "smoke", "--grid",
               str(grid), "--results", str(tmp_path / "results"), "--no-progress", "--device",
               "cpu"]
    sweeps_running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in sweeps_running]
    assert [p.returncode for p in sweeps_running] == [0, 0], outputs
    counts = [int(out.split("done: ")[1].split()[0]) for out, _ in outputs]
    assert sum(counts) == 8, outputs  # each of the 8 runs trained once, by one of the two
    assert len(list((tmp_path / "results" / "smoke").glob("*.json"))) == 8


# ------------------------------------------------------------------------ tracebacks and hangs

def test_ctrl_c_stops_a_sweep_cleanly_and_says_how_to_resume(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [rand, mag, snip, grasp, synflow]\ncompressions: [0.5, 1, 1.5]\n"
                    "imp_iterations: []\n")
    results = tmp_path / "results"
    # SIGINT as a terminal's Ctrl-C finds it: a shell starts a background job (``.ci/run &``)
    # with SIGINT ignored, its children inherit that, and Python then installs no handler
    sweep = subprocess.Popen([sys.executable, "-m", "sparse_survey", "sweep", "--preset", "smoke",
                              "--grid", str(grid), "--results", str(results), "--no-progress",
                              "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(results.glob("smoke/*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    stored = bool(list(results.glob("smoke/*.json")))
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=60)
    assert stored, "no run finished within 120 s"
    assert sweep.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "finished and stored in this call" in stderr and "run the same command again" in stderr
    assert not list(results.glob("smoke/*.lock"))  # no claim outlives the sweep


def test_an_unreachable_ray_address_fails_within_seconds(tmp_path):
    start = time.monotonic()
    out = cli("sweep", "--preset", "smoke", "--backend", "ray", "--address", "127.0.0.1:1",
              "--results", str(tmp_path), timeout=60)
    assert "no Ray cluster answers at 127.0.0.1:1" in one_line_error(out)
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------------------- smaller

def test_no_progress_hides_the_data_loading_bars_too(tmp_path):
    images = cifar_like(tmp_path / "images")
    command = ("train", "--preset", "smoke", "--dataset", "cifar10", "--limit-per-class", "all",
               "--data-root", str(images), "--epochs", "1", "--batch-size", "4")
    quiet = cli(*command, "--no-progress", env={"SPARSE_SURVEY_CACHE": str(tmp_path / "c1")})
    assert quiet.returncode == 0, quiet.stderr
    assert "decoding" not in quiet.stderr and "reading" not in quiet.stderr, quiet.stderr
    shown = cli(*command, env={"SPARSE_SURVEY_CACHE": str(tmp_path / "c2")})
    assert shown.returncode == 0 and "decoding images" in shown.stderr  # the test can fail


@pytest.mark.parametrize(("args", "message"), [
    (("train", "--epochs", "0"), "epochs must be a whole number >= 1, got 0"),
    (("prune", "--method", "snip", "--compression", "1", "--prune-batches", "0"),
     "argument --prune-batches: expected a whole number >= 1, got '0'"),
])
def test_a_bad_option_is_named_in_one_short_line(args, message):
    line = one_line_error(cli(*args[:1], "--preset", "smoke", *args[1:]))
    assert message in line and "Recipe(" not in line


def test_a_folder_option_that_names_a_file_says_so(tmp_path):
    afile = tmp_path / "a file"
    afile.write_text("")
    for args in (("imp", "--preset", "smoke", "--compression", "1", "--cache-dir", str(afile)),
                 ("report", "--preset", "smoke", "--out", str(afile / "x")),
                 ("sweep", "--preset", "smoke", "--results", str(afile))):
        assert f"{afile} is a file, not a folder" in one_line_error(cli(*args))


def test_run_configs_refuse_what_would_fail_late():
    with pytest.raises(ValueError, match="iterations must be a whole number >= 1, got 'two'"):
        smoke("imp", iterations="two")
    with pytest.raises(ValueError, match="compression 20 is too high for mlp"):
        smoke("mag", 20)
    assert experiment.prunable_sizes("mlp", 1.0, "digits") == \
        {"net.1.weight": 64 * 300, "net.3.weight": 300 * 100, "net.5.weight": 100 * 10}


# ------------------------------------------------------- the probes of a new user, second round

def waited_on(path: Path) -> bool:
    """Whether a process waits for a ``flock`` on ``path`` now (Linux's /proc/locks lists a
    blocked request with ``->`` before its kind)."""
    inode = str(os.stat(path).st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[1] == "->" and fields[6].split(":")[-1] == inode:
            return True
    return False


def test_a_notebook_beside_a_sweep_on_one_store_waits_for_the_run_it_is_training(tmp_path,
                                                                                monkeypatch):
    """The README invites a sweep in one terminal and a notebook in another: a run that the
    other process is training when the notebook asks for it is waited for and read, not
    trained twice (or read as None). Here this test is the other process: it holds the run's
    claim until the notebook waits for it, then trains and stores it."""
    import threading

    monkeypatch.setenv("SPARSE_SURVEY_CACHE", str(tmp_path / "cache"))
    store, config = Store(tmp_path / "results"), RunConfig.from_preset("smoke", "imp", 1,
                                                                       iterations=3)
    executed: dict = {}

    def in_the_other_terminal():
        try:
            executed["notebook"] = notebook("imp", tmp_path, preset="smoke", iters=3,
                                            compressions=[1], results=str(store.root))
        except Exception as error:  # raised again below, in the test's own thread
            executed["error"] = error

    with store.claim(config) as mine:
        assert mine
        user = threading.Thread(target=in_the_other_terminal)
        user.start()
        deadline = time.monotonic() + 240
        lock = store.path(config).with_suffix(".lock")
        while not waited_on(lock) and user.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert waited_on(lock), executed.get("error", "the notebook never waited for the run")
        store.write(experiment.run(config, tmp_path / "cache"))
    user.join(timeout=300)
    if "error" in executed:
        raise executed["error"]
    printed = "".join("".join(o.get("text", "")) for c in executed["notebook"]["cells"]
                      for o in c.get("outputs", []))
    assert "waiting for 1 run(s) that another process is training" in printed
    (record,) = store.records("smoke")
    assert record["key"] == config.key and record["status"] == "finished"
    assert not list((tmp_path / "cache" / "imp").glob("*-dense.pt.tmp*"))


@pytest.fixture(scope="module")
def partial_stores(tmp_path_factory):
    """Stores that hold part of the survey's grid: two one-shot methods; one IMP column."""
    one_shot, imp = tmp_path_factory.mktemp("one-shot"), tmp_path_factory.mktemp("imp")
    sweeps.sweep([smoke("mag"), smoke("snip")], Store(one_shot), progress=False)
    sweeps.sweep([smoke("imp", iterations=2)], Store(imp), progress=False,
                 cache_dir=tmp_path_factory.mktemp("cache"))
    return {"one-shot": one_shot, "imp": imp}


@pytest.mark.parametrize("holds", ["one-shot", "imp"])
def test_the_compare_notebook_reads_a_partial_store(holds, partial_stores, tmp_path):
    executed = notebook("compare", tmp_path, preset="smoke", results=str(partial_stores[holds]))
    errors = [o for c in executed["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.fixture(scope="module")
def finished_record(tmp_path_factory) -> tuple[RunConfig, str]:
    """One finished smoke run and its record file's text, trained once for all the
    damaged-record cases."""
    store, config = Store(tmp_path_factory.mktemp("finished")), smoke()
    sweeps.sweep([config], store, progress=False)
    return config, store.path(config).read_text()


def damaged_record(tmp_path, finished_record, **damage) -> tuple[Store, RunConfig, Path]:
    """A store under ``tmp_path`` holding ``finished_record`` with ``damage`` done to it."""
    config, text = finished_record
    store, record = Store(tmp_path), json.loads(text)
    for where, value in damage.items():  # "metrics__time_s" sets record["metrics"]["time_s"]
        *parents, last = where.split("__")
        part = record
        for name in parents:
            part = part[name]
        if value is KeyError:
            del part[last]
        else:
            part[last] = value
    return store, config, write_json(store.path(config), record)


@pytest.mark.parametrize("damage", [
    {"metrics": None}, {"metrics": {"test_acc": "high"}}, {"history": "none"},
    {"status": "done"}, {"weight_histograms": KeyError}, {"weight_histograms": None},
    {"metrics__time_s": "1.5"}, {"metrics__remaining_fraction": "x"},
    {"layer_densities": {"a": "b"}}, {"config__seed": "0"},
    {"schema": "99"}, {"schema": None}, {"schema": -1}, {"schema": 2.5}])
def test_a_malformed_finished_record_is_skipped_reported_without_traceback_and_healed(
        damage, tmp_path, finished_record):
    store, config, path = damaged_record(tmp_path, finished_record, **damage)
    with pytest.warns(UserWarning, match=f"skipping {path}: not a valid run record"):
        assert store.records("smoke") == [] and not store.done(config)
    out = cli("report", "--preset", "smoke", "--results", str(tmp_path), "--out",
              str(tmp_path / "report"))
    assert "none finished; run a sweep first" in one_line_error(out)
    with pytest.warns(UserWarning):
        (healed,) = sweeps.sweep([config], store, progress=False)
    assert healed["status"] == "finished" and json.loads(path.read_text())["schema"] == \
        experiment.SCHEMA


def test_a_schema_written_as_a_float_above_ours_is_a_newer_record(tmp_path, finished_record):
    store, config, path = damaged_record(tmp_path, finished_record, schema=99.0)
    with pytest.raises(NewerRecordError):
        store.records("smoke")
    assert json.loads(path.read_text())["schema"] == 99.0


@pytest.mark.parametrize("args", [
    ("profile", "--no-memory", "--scope", "local"), ("profile", "--no-memory", "--invert"),
    ("profile", "--no-memory", "--rounding", "up"), ("profile", "--no-memory", "--iterations", "3"),
    ("profile", "--no-memory", "--prune-batches", "3"), ("profile", "--no-memory", "--bn-mode",
                                                         "train")])
def test_a_pruning_option_without_a_method_is_refused(args):
    assert "give --method and --compression too" in one_line_error(
        cli(*args[:1], "--preset", "smoke", *args[1:]))


@pytest.mark.parametrize("option", [("--prune-batches", "3"), ("--prune-batch-size", "64"),
                                    ("--bn-mode", "train")])
def test_an_option_the_method_does_not_use_is_refused(option):
    out = cli("prune", "--preset", "smoke", "--method", "mag", "--compression", "1", *option)
    assert "mag scores without data" in one_line_error(out)


def test_a_data_root_that_does_not_exist_is_an_error_not_a_fallback(tmp_path):
    images = cifar_like(tmp_path / "images")
    out = cli("train", "--preset", "smoke", "--dataset", "cifar10", "--epochs", "1",
              "--data-root", str(tmp_path / "typo"), env={"SPARSE_SURVEY_DATA": str(images)})
    assert f"{tmp_path / 'typo'}, does not exist" in one_line_error(out)


@pytest.mark.parametrize(("args", "message"), [
    (("train", "--preset", "smoke", "--model", "vgg16", "--epochs", "1"),
     "vgg16 halves its images 4 times, so it needs images of at least 16x16 pixels, not 8x8"),
    (("prune", "--preset", "smoke", "--model", "vgg11", "--method", "mag", "--compression", "1"),
     "vgg11 halves its images 4 times"),
    (("train", "--preset", "smoke", "--width", "1e9"), "is too large to build"),
    (("train", "--preset", "smoke", "--width", "1e4"), "more than this machine's"),
    (("train", "--preset", "smoke", "--seed", "99999999999999999999"),
     "argument --seed: expected a whole number from 0 to 4294967295"),
    (("bench", "sparse", "--batch", "0"), "argument --batch: expected a whole number >= 1"),
    (("bench", "sparse", "--repeats", "0"), "argument --repeats: expected a whole number >= 1"),
    (("bench", "train", "--images", "-5"), "argument --images: expected a whole number >= 1"),
])
def test_what_once_gave_a_traceback_is_one_error_line(args, message):
    assert message in one_line_error(cli(*args))


def test_a_json_grid_reads_exponents_as_json_does():
    grid = sweeps.load_grid('{"methods": ["mag"], "compressions": [5e-2, 1], '
                            '"imp_iterations": []}')
    assert grid["compressions"] == [0.05, 1]
    assert sweeps.load_yaml("[1e3, -2E+2, .5e1, abc]") == [1000.0, -200.0, 5.0, "abc"]


def test_a_field_a_method_does_not_use_never_changes_its_key():
    plain = smoke("mag")
    assert smoke("mag", prune_batches=5).key == smoke("mag", prune_batch_size=64).key == plain.key
    grid = sweeps.load_grid({"methods": ["mag", "snip"], "compressions": [1],
                             "imp_iterations": [], "prune_batches": 5})
    mag, snip = sweeps.grid_configs(grid, "smoke")
    assert mag.key == plain.key and snip.prune_batches == 5 and snip.key != smoke("snip").key
    assert smoke("imp", rewind=0).key == smoke("imp").key  # step 0 is initialization
    for bad in ({"prune_batches": 0}, {"prune_batch_size": 0}, {"prune_batches": "2"}):
        with pytest.raises(ValueError, match="must be a whole number >= 1"):
            smoke("snip", **bad)
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        smoke("mag", prune_batches=0)  # checked before it is dropped
    with pytest.raises(ValueError, match="scope 'local': imp prunes by global magnitude"):
        smoke("imp", scope="local")
    with pytest.raises(ValueError, match="seed must be a whole number"):
        smoke(seed="0")


def test_a_grid_value_that_would_fail_after_the_data_loads_fails_before(tmp_path):
    out = cli("sweep", "--preset", "smoke", "--grid", "{methods: [snip], compressions: [1], "
              "imp_iterations: [], prune_batches: 0}", "--results", str(tmp_path))
    assert "prune_batches must be a whole number >= 1, got 0" in one_line_error(out)


@pytest.mark.parametrize(("name", "parameters", "message"), [
    ("snip", {"prune_batches": 0}, "prune_batches must be a whole number >= 1, got 0"),
    ("snip", {"prune_batches": "abc"}, "prune_batches must be a whole number, got 'abc'"),
    ("snip", {"bn_mode": "xyz"}, "unknown bn_mode 'xyz'; known: eval, train"),
    ("grasp", {"bn_mode": "xyz"}, "unknown bn_mode 'xyz'; known: eval, train"),
    ("sparsity", {"method": "nope"}, "method must be one of rand, mag"),
    ("sparsity", {"repeats": 0}, "repeats must be a whole number >= 1, got 0"),
    ("sparsity", {"device": "cuda:99"}, "device 'cuda:99': this machine has"),
    ("sparsity", {"width": "abc"}, "width must be a number, got 'abc'"),
    ("sparsity", {"batch_sizes": "[0]"}, "batch_sizes must be a whole number >= 1, got 0"),
    ("compare", {"figure_compression": "abc"}, "figure_compression must be a number"),
    ("compare", {"figure_compression": -1}, "figure_compression must be a number >= 0"),
    ("compare", {"figure_compression": float("nan")}, "figure_compression must be a number"),
    ("compare", {"figure_compression": True}, "figure_compression must be a number, got True"),
    ("anatomy", {"in_channels": "abc"}, "in_channels must be a whole number, got 'abc'"),
    ("anatomy", {"width": "abc"}, "width must be a number, got 'abc'"),
    ("anatomy", {"image_size": 0}, "image_size must be a whole number >= 1, got 0"),
    ("anatomy", {"image_size": 8}, "vgg16 halves its images 4 times"),
    ("imp", {"results": None}, "results must be text, got None"),
    ("imp", {"results": ""}, "the results folder must be a folder name, got ''"),
    ("from_scratch", {"iters": "[2, 0]"}, "iters must be a whole number >= 1, got 0"),
    ("from_scratch", {"iters": "two"}, "iters must be a list, got 'two' (-y \"iters: [2, 3]\""),
    ("sanity_checks", {"methods": "[mag, nope]"}, "each of methods must be one of rand, mag"),
])
def test_a_notebook_checks_every_parameter_in_the_cell_after_them(name, parameters, message,
                                                                   tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        notebook(name, tmp_path, **{"preset": "smoke", **parameters}
                 if name != "anatomy" else parameters)
    assert failure.value.ename == "ParameterError", failure.value.evalue
    assert message in failure.value.evalue
    assert failure.value.exec_count == 3  # the parameters, papermill's cell, then the check


def test_an_unusable_imp_cache_is_found_before_the_dense_training(tmp_path, monkeypatch):
    afile = tmp_path / "a file"
    afile.write_text("")
    record = experiment.run(smoke("imp", iterations=2), cache_dir=afile)
    assert record["status"] == "failed" and "cannot write the IMP cache" in record["error"]
    assert "train_s" not in record["timings"] or record["timings"]["train_s"] < 1
    from sparse_survey import files

    full = files.shutil.disk_usage(tmp_path)._replace(free=1024)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: full)
    record = experiment.run(smoke("imp", iterations=2), cache_dir=tmp_path / "cache")
    assert record["status"] == "failed" and "MiB free" in record["error"]
    assert not list((tmp_path / "cache").rglob("*.pt"))  # nothing was trained


def test_a_folder_in_a_records_place_stops_the_sweep_before_training(tmp_path, monkeypatch):
    store, config = Store(tmp_path), smoke()
    store.path(config).mkdir(parents=True)
    monkeypatch.setattr(sweeps, "run", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="is not a file; move it out of the store"):
        sweeps.sweep([config], store, progress=False)


def test_a_figure_that_cannot_be_written_leaves_no_empty_file(small_store, tmp_path,
                                                             monkeypatch):
    import matplotlib.figure

    from sparse_survey import report

    def full_disk(self, path, **kwargs):
        Path(path).write_bytes(b"")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    records = Store(small_store).records("smoke")
    with pytest.raises(OSError, match="No space left"):
        report.write_report(records, tmp_path / "report", "smoke")
    assert not [p for p in (tmp_path / "report").iterdir() if p.suffix in (".png", ".svg")]


@pytest.mark.parametrize("text", ["{not json", '{"name": "x"}', "[1, 2]"])
def test_a_damaged_stored_benchmark_is_measured_again(text, tmp_path):
    from sparse_survey import tutorial

    path = tmp_path / "smoke" / "bench" / "demo.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.warns(UserWarning, match="is damaged"):
        stored = tutorial.stored_benchmark("demo", lambda: {"x": 1}, "smoke", str(tmp_path))
    assert stored["result"] == {"x": 1} and json.loads(path.read_text())["result"] == {"x": 1}


def test_a_file_holding_another_runs_record_is_counted_as_still_to_do(tmp_path):
    store = Store(tmp_path)
    sweeps.sweep([smoke(compression=0.5)], store, progress=False)
    other = smoke(compression=1)
    store.path(smoke(compression=0.5)).rename(store.path(other))  # a record under a wrong name
    assert store.get(other) is None
    out = cli("sweep", "--preset", "smoke", "--grid", "{methods: [mag], compressions: [1], "
              "imp_iterations: []}", "--results", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "1 still to do" in out.stdout and "done: 1 run(s)" in out.stdout


def test_a_negative_compression_is_not_called_too_high():
    with pytest.raises(ValueError, match="compression must be >= 0") as refused:
        experiment.check_compression(-1, "mlp", 1.0, "digits")
    assert "too high" not in str(refused.value)
