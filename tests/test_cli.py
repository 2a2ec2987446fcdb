import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from sparse_survey import train
from sparse_survey.experiment import preset_precision
from sparse_survey.train import Recipe


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparse_survey", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_cli_trains_on_digits():
    out = run("train", "--preset", "smoke", "--epochs", "2", "--lr", "0.05", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "final test accuracy" in out.stdout and "images/s" in out.stdout
    assert "Recipe(epochs=2, batch_size=32, lr=0.05" in out.stdout  # the rest is the preset's
    assert out.stdout.startswith("mlp (width 1) on digits")
    fast = "bf16" if train.bf16_supported("cpu") else "fp32"
    assert f"device cpu, {fast};" in out.stdout  # the fast path by default, on any preset
    forced = run("train", "--preset", "laptop", "--dataset", "digits", "--model", "mlp",
                 "--limit-per-class", "all", "--epochs", "1", "--precision", "fp32",
                 "--no-progress")
    assert forced.returncode == 0 and "device cpu, fp32;" in forced.stdout, forced.stderr


def test_help_documents_the_options():
    out = run("train", "--help")
    assert out.returncode == 0
    for option in ("--preset", "--model", "--dataset", "--data-root", "--limit-per-class",
                   "--seed", "--device", *(f"--{f.name.replace('_', '-')}"
                                           for f in dataclasses.fields(Recipe))):
        assert option in out.stdout


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path):
    (tmp_path / "none").mkdir()  # an empty folder: nothing there, and no internet
    out = run("train", "--data-root", str(tmp_path / "none"), "--epochs", "1",
              env={"SPARSE_SURVEY_DATA": "", "SPARSE_SURVEY_DATA_DIR": str(tmp_path / "d"),
                   "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert out.returncode == 2
    assert "CIFAR-10 was not found" in out.stderr and "Traceback" not in out.stderr


def test_cli_prunes_and_prints_per_layer_densities_and_the_time():
    out = run("prune", "--preset", "smoke", "--method", "synflow", "--compression", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("synflow on mlp") and "100 round(s)" in lines[0]
    layers = [line.split() for line in lines if line.startswith("net.")]
    assert [row[0] for row in layers] == ["net.1.weight", "net.3.weight", "net.5.weight"]
    total = next(line.split() for line in lines if line.startswith("prunable weights"))
    assert total[2:] == ["5020", "50200", "0.1000"]  # round(0.1 * 50,200) kept exactly
    assert sum(int(row[2]) for row in layers) == 5020
    assert "scoring and pruning took" in lines[-1]
    up = run("prune", "--preset", "smoke", "--method", "synflow", "--compression", "1.5",
             "--rounding", "up")  # 10**-1.5 * 50,200 = 1587.46: rounded up, 1588
    assert up.returncode == 0, up.stderr
    assert next(line.split() for line in up.stdout.splitlines()
                if line.startswith("prunable weights"))[2] == "1588"


def test_cli_prune_with_data_and_a_bad_compression():
    ok = run("prune", "--preset", "smoke", "--method", "grasp", "--compression", "0.5",
             "--prune-batch-size", "64", "--prune-batches", "2", "--bn-mode", "train")
    assert ok.returncode == 0, ok.stderr
    bad = run("prune", "--preset", "smoke", "--method", "mag", "--compression", "-1")
    assert bad.returncode == 2 and "compression: expected a finite number >= 0" in bad.stderr


def test_cli_imp_runs_end_to_end_and_prints_the_round_table(tmp_path):
    args = ("imp", "--preset", "smoke", "--compression", "1", "--iterations", "2",
            "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--controls", "--no-progress",
            "--cache-dir", str(tmp_path))
    out = run(*args)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line[:5].strip().isdigit()]
    assert [row[0] for row in rows] == ["0", "1", "2"]
    assert [row[1] for row in rows] == ["1.0000", "0.3162", "0.1000"]
    assert "random reinit: test accuracy" in out.stdout
    assert "(from the cache)" not in out.stdout
    again = run(*args)
    assert again.stdout.count("(from the cache)") == 3  # the dense run and both rounds


def test_cli_profile_prints_the_record():
    out = run("profile", "--preset", "smoke", "--method", "snip", "--compression", "1",
              "--prune-batch-size", "64", "--repeats", "2", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "snip at compression 1" in out.stdout.splitlines()[0]
    fields = dict(line.split(None, 1) for line in out.stdout.splitlines()[1:])
    assert fields["density"].strip() == "0.1" and fields["prunable_kept"].strip() == "5,020"
    for key in ("time_s", "images_per_s", "latency_ms", "flops_fraction", "cpu_rss_peak_bytes",
                "storage_csr_bytes"):
        assert key in fields


def test_cli_bench_sparse_prints_speeds_and_a_verdict():
    out = run("bench", "sparse", "--model", "mlp", "--repeats", "1", "--batch", "2")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["0.05", "0.1", "0.2", "0.5", "1", "2", "3"]
    assert out.stdout.splitlines()[-1].startswith("batch 2: sparse is")


def test_cli_sweep_then_report(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text('{"methods": ["rand"], "compressions": [1], "imp_iterations": [2], '
                    '"seeds": [0]}')
    common = ("--preset", "smoke", "--results", str(tmp_path / "results"))
    first = run("sweep", *common, "--grid", str(grid), "--cache-dir", str(tmp_path / "cache"))
    assert first.returncode == 0, first.stderr
    assert "2 still to do" in first.stdout and "done: 2 run(s) in this call" in first.stdout
    assert "s, 0 of them diverged or failed" in first.stdout
    again = run("sweep", *common, "--grid", str(grid))
    assert "0 still to do" in again.stdout
    out = run("report", *common, "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| method | c = 0.05 | c = 0.1 | c = 0.2 | c = 0.5 | c = 1 | c = 2 |" in text
    assert "| Rand | n/a | n/a | n/a | n/a |" in text and "| ↳ survey | 88.08 |" in text
    assert "| method | c = 1 |" in text  # a table the survey lacks: our compressions only
    assert "No run here measured this (the smoke preset, for tests, does not measure it)" in text
    if not torch.cuda.is_available():  # the sweep ran on the CPU
        assert text.count("No run here measured this (it needs a CUDA device)") == 2
    assert (tmp_path / "report" / "accuracy.png").exists()
    assert (tmp_path / "report" / "layer_density.svg").exists()
    here = preset_precision("smoke")  # the sweep's runs took this machine's precision
    assert text.startswith(f"# Results at the smoke preset, {here}\n")
    other = run("report", *common, "--precision", {"fp32": "bf16", "bf16": "fp32"}[here])
    assert other.returncode == 2 and f"--precision {here} reports them" in other.stderr
    empty = run("report", "--preset", "laptop", "--results", str(tmp_path / "none"))
    assert empty.returncode == 2 and "run a sweep first" in empty.stderr


def test_cli_sweep_in_time_boxed_slices(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [rand, mag, snip]\ncompressions: [1]\nimp_iterations: []\n")
    common = ("sweep", "--preset", "smoke", "--grid", str(grid), "--results",
              str(tmp_path / "results"), "--no-progress")
    first = run(*common, "--time-budget", "0.01")
    assert first.returncode == 0, first.stderr
    assert "done: 1 run(s) in this call" in first.stdout  # nothing to estimate from: one run starts
    assert "left for the next call: 2 runs, about" in first.stdout
    rest = run(*common, "--data-root", str(tmp_path / "unused, digits need none"))
    assert rest.returncode == 0, rest.stderr
    assert "2 still to do" in rest.stdout and "left for the next call" not in rest.stdout
    bad = run(*common, "--time-budget", "60", "--backend", "ray")
    assert bad.returncode == 2 and "local backend" in bad.stderr


def test_cli_bench_train_on_one_channel_digits_prints_and_stores_the_loops(tmp_path):
    out = run("bench", "train", "--dataset", "digits", "--model", "mlp", "--no-compile",
              "--images", "2000", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    loops = [line.split()[:2] for line in out.stdout.splitlines()
             if line.split()[:1] in (["baseline"], ["eager"])]
    setups = [(p, cl) for p in ("fp32", "bf16")[:1 + train.bf16_supported("cpu")]
              for cl in (False, True)]
    assert loops == [["baseline", "128"]] + [["eager", b] for _ in setups for b in ("128", "512")]
    [path] = tmp_path.glob("train-mlp-*.json")  # named for the CPU and its vector instructions
    stored = json.loads(path.read_text())
    capability = stored["environment"]["cpu_capability"]
    assert path.stem.endswith(f"-{capability.lower()}")  # e.g. amd-epyc-avx2
    rows = stored["rows"]
    assert [(r["precision"], r["channels_last"]) for r in rows[1::2]] == setups
    assert all(row["images_per_s"] > 0 and 0 < row["fraction_of_peak"] <= 1 for row in rows)
    assert all(r["loop_share_of_bare_step"] == pytest.approx(
        r["images_per_s"] / r["bare_step_images_per_s"]) for r in rows[1:])
    peaks = stored["peak_flops"]
    assert set(peaks) == {p for p, _ in setups}
    for peak in peaks.values():  # how it was measured is stored with it
        assert peak["flops"] >= peak["matmul"]["flops"] == max(peak["matmul"]["per_size"].values())
        assert peak["matmul"]["threads"] == stored["environment"]["threads"] and peak["source"]
    shared = stored["contention"]  # alone and beside one busy process, adapting and fixed
    assert [(a["threads"], a["beside_busy_process"]) for a in shared["arms"]] == [
        ("adapting", False), ("fixed", False), ("adapting", True), ("fixed", True)]
    assert shared["slowdown_adapting"] > 0 and shared["slowdown_fixed"] > 0
    assert "slowdown beside one busy process" in out.stdout
    assert stored["macs_per_image"] == 64 * 75 + 75 * 25 + 25 * 10  # the width-1/4 MLP


@pytest.mark.usefixtures("fixed_threads")  # the stored run is trained again here, exactly
def test_the_reproduce_chapters_commands_store_the_records_the_notebooks_would(tmp_path):
    """Each "rerun one cell" command of the book, at the smoke preset, stores exactly the run a
    notebook stores (the same key), with the numbers a direct run of that config gives."""
    import shlex
    from pathlib import Path

    from sparse_survey import experiment
    from sparse_survey.experiment import RunConfig
    from sparse_survey.store import Store

    page = (Path(__file__).resolve().parents[1] / "book" / "reproduce.md").read_text()
    section = page.split("## Rerun one cell")[1].split("```bash")[1].split("```")[0]
    commands = [shlex.split(line) for line in section.splitlines()
                if line.startswith("python -m sparse_survey sweep --preset laptop")]
    expected = [RunConfig.from_preset("smoke", "dense", 0),
                RunConfig.from_preset("smoke", "snip", 1),
                RunConfig.from_preset("smoke", "imp", 2, iterations=4),
                RunConfig.from_preset("smoke", "grasp", 1, bn_mode="train"),
                RunConfig.from_preset("smoke", "imp", 1, iterations=2, control="reinit")]
    assert len(commands) == len(expected)
    store = Store(tmp_path / "results")
    for command, config in zip(commands, expected):
        args = [("smoke" if a == "laptop" else a) for a in command[3:]]
        out = run(*args, "--results", str(store.root), "--cache-dir", str(tmp_path / "cache"),
                  "--no-progress")
        assert out.returncode == 0, out.stderr
        assert "1 runs in the grid" in out.stdout, out.stdout
        stored = store.get(config)
        assert stored is not None and stored["status"] == "finished", command
        again = experiment.run(config, cache_dir=tmp_path / "cache")
        assert again["metrics"]["test_acc"] == stored["metrics"]["test_acc"]
        assert again["layer_densities"] == stored["layer_densities"]
    assert len(store.records("smoke")) == len(expected)


def test_cli_bench_allocator_times_each_history_pinned_and_not_and_stores_it(tmp_path):
    out = run("bench", "allocator", "--model", "mlp", "--processes", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("fresh/churned fastest:") == 2
    [path] = tmp_path.glob("allocator-mlp-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [(r["pinned"], r["history"]) for r in rows] == [
        (True, "fresh"), (True, "churned"), (False, "fresh"), (False, "churned")]
    assert all(r["floor_s"] <= r["median_s"] and len(r["runs"]) == 1 for r in rows)
    assert all(run["allocator_pinned"] == r["pinned"] for r in rows for run in r["runs"])
    bad = run("bench", "allocator", "--processes", "0")
    assert bad.returncode == 2 and "expected a whole number >= 1" in bad.stderr
