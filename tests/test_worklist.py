"""The work list and its archive, end to end on the CPU with the smoke preset: the prepared GPU
command runs the list within its budget and packs what it made; unpacking checks each record
before it enters a store."""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sparse_survey import worklist
from sparse_survey.experiment import RunConfig
from sparse_survey.store import Store

ROOT = Path(__file__).resolve().parents[1]

SMOKE_LIST = """
- name: two one-shot runs
  preset: smoke
  grid: {methods: [mag, snip], compressions: [1], imp_iterations: []}
- name: a GPU benchmark (skipped on a CPU)
  only_on: cuda
  bench: train
- name: one IMP run
  preset: smoke
  grid: {methods: [], compressions: [1], imp_iterations: [2]}
"""


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sparse_survey", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture
def smoke_list(tmp_path):
    path = tmp_path / "worklist.yaml"
    path.write_text(SMOKE_LIST)
    return path


def test_the_repositorys_work_list_is_valid():
    entries = worklist.load_worklist()
    assert {e.get("preset") for e in entries} >= {"laptop", "cpu-full"}
    assert all(e["name"] for e in entries)
    names = [e["name"] for e in entries]
    assert any("bench train" in n for n in names) and any("survey" in n for n in names)


def test_the_prepared_gpu_command_runs_the_list_and_packs_what_it_made(smoke_list, tmp_path):
    """tools/gpu-quarter-hour.sh, on the CPU: every entry for this device runs, the archive holds
    exactly the records made, and unpacking it into an empty store gives the same records."""
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    done = subprocess.run(["bash", str(ROOT / "tools" / "gpu-quarter-hour.sh")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OUT": str(out), "WORKLIST": str(smoke_list),
                               "RESULTS": str(results), "BUDGET": "300",
                               # the script's python3 is this interpreter, venv or not
                               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                               "SPARSE_SURVEY_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "made 3 run record(s)" in (out / "log.txt").read_text()
    with tarfile.open(out / "records.tar.gz") as tar:
        names = sorted(tar.getnames())
    stored = sorted(str(p.relative_to(results)) for p in results.rglob("*.json"))
    assert names == stored and len(names) == 3
    home = tmp_path / "home"
    unpacked = cli("worklist", "unpack", str(out / "records.tar.gz"), "--results", str(home))
    assert unpacked.returncode == 0, unpacked.stderr
    assert "installed: 3" in unpacked.stdout
    for name in names:
        assert json.loads((home / name).read_text()) == json.loads((results / name).read_text())
    again = cli("worklist", "unpack", str(out / "records.tar.gz"), "--results", str(home))
    assert "kept: 3" in again.stdout  # a finished record is never replaced
    status = cli("worklist", "status", "--worklist", str(smoke_list), "--results", str(home),
                 "--device", "cpu")
    assert "   2 of    2 done  two one-shot runs" in status.stdout
    assert ("   0 of    1 done  a GPU benchmark (skipped on a CPU)  (cuda only: not run here)"
            in status.stdout)  # the GPU's queue is read where its records land


def test_a_call_continues_where_the_last_one_stopped(smoke_list, tmp_path):
    store = Store(tmp_path / "results")
    entries = worklist.load_worklist(smoke_list)
    first = worklist.run_worklist(entries, store, time_budget=0.01, device="cpu", progress=False,
                                  cache_dir=tmp_path / "cache")
    assert len(first) == 1  # nothing known yet: one run starts, and it fills the budget
    rest = worklist.run_worklist(entries, store, time_budget=600, device="cpu", progress=False,
                                 cache_dir=tmp_path / "cache")
    assert len(rest) == 2 and all(r["status"] == "finished" for r in first + rest)
    assert [row["done"] for row in worklist.status(entries, store, "cpu")] == [2, 0, 1]


def test_status_counts_the_entries_kept_for_another_kind_of_device(tmp_path):
    """On a CPU, a GPU entry's runs count under their own keys (a run's key does not name its
    device), and its benchmark is done once any GPU has a record of it; a CPU's record of the
    same benchmark, or a damaged record, is not one."""
    entries = worklist.load_worklist(write(tmp_path / "list.yaml", """
- name: gpu runs
  only_on: cuda
  preset: smoke
  precision: fp32
  grid: {methods: [mag, snip], compressions: [1], imp_iterations: []}
- name: gpu bench
  only_on: cuda
  bench: train
"""))
    store = Store(tmp_path / "results")
    cpu_twin = dict(entries[0], only_on="cpu")
    worklist.run_worklist([cpu_twin], store, time_budget=600, device="cpu", progress=False,
                          cache_dir=tmp_path / "cache")
    bench = store.root / "bench"
    write(bench / "train-vgg16-amd-epyc-avx512.json", json.dumps({"device": "cpu"}))
    write(bench / "train-vgg16-nvidia-h200-broken.json", "{")

    def rows():
        return [(r["done"], r["runs"], r["only_on"])
                for r in worklist.status(entries, store, "cpu")]

    assert rows() == [(2, 2, "cuda"), (0, 1, "cuda")]
    write(bench / "train-vgg16-nvidia-h200.json", json.dumps({"device": "cuda"}))
    assert rows() == [(2, 2, "cuda"), (1, 1, "cuda")]
    assert [r["only_on"] for r in worklist.status([cpu_twin], store, "cpu")] == [None]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pack_takes_only_what_is_new_or_changed(tmp_path):
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "old.json").write_text("{}")
    before = worklist.snapshot(tmp_path)
    (tmp_path / "smoke" / "new.json").write_text("{}")
    assert worklist.pack(tmp_path, before, tmp_path / "a.tar.gz") == ["smoke/new.json"]


def archive_of(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "records.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def a_record(tmp_path_factory):
    from sparse_survey import sweeps

    root = tmp_path_factory.mktemp("one")
    config = RunConfig.from_preset("smoke", "mag", 1, device="cpu")
    sweeps.sweep([config], Store(root), progress=False)
    return config, Store(root).path(config).read_bytes()


def test_unpack_refuses_what_is_not_a_record_of_its_name(a_record, tmp_path):
    config, data = a_record
    record = json.loads(data)
    newer = json.dumps({**record, "schema": 99}).encode()
    broken = json.dumps({**record, "metrics": None}).encode()
    archive = archive_of(tmp_path, {
        f"smoke/{config.key}.json": data,  # the one good record
        f"smoke/{'0' * 16}.json": data,  # another run's name
        f"laptop/{config.key}.json": data,  # another preset's folder
        "smoke/notakey.json": data, "../escape.json": data, "smoke/x/deep.json": data,
        f"smoke/{'1' * 16}.json": broken, f"smoke/{'2' * 16}.json": newer,
        "bench/train-x.json": b"[1, 2]", "bench/train-y.json": b'{"rows": []}'})
    with pytest.warns(UserWarning, match="not installed from"):
        done = worklist.unpack(archive, tmp_path / "store")
    assert sorted(done["installed"]) == ["bench/train-y.json", f"smoke/{config.key}.json"]
    why = " ".join(done["refused"])
    for reason in ("under another name", "not named by a run key", "not a file at",
                   "not a valid run record", "newer sparse_survey", "not a JSON object"):
        assert reason in why, reason
    assert sorted(str(p.relative_to(tmp_path / "store"))
                  for p in (tmp_path / "store").rglob("*.json")) == sorted(done["installed"])
    out = cli("worklist", "unpack", str(archive), "--results", str(tmp_path / "cli"))
    assert out.returncode == 1 and "refused: 8" in out.stdout


def test_a_bad_work_list_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, message in (("- {name: x, preset: smoke}", "needs a preset and a grid"),
                          ("- {name: x, bench: sparse}", "unknown benchmark"),
                          ("- {preset: smoke, grid: survey}", "needs a name"),
                          ("- {name: x, preset: smoke, grid: '{methods: [nope]}'}",
                           "method names"),
                          ("- {name: x, preset: smoke, grid: survey, only_on: tpu}",
                           "only_on must be cpu or cuda"),
                          ("{name: x}", "must hold a list")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            worklist.load_worklist(bad)
    out = cli("worklist", "status", "--worklist", str(bad))
    assert out.returncode == 2 and out.stderr.startswith("error:")
