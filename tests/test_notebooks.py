"""Every notebook runs under papermill at the smoke preset (digits) and glues its numbers; the
jupytext pairs are in sync; the committed .ipynb files carry no outputs."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import jupytext
import papermill
import pytest
import yaml
from awaiting import awaiting

from sparse_survey import pruners, report, sweeps
from sparse_survey.experiment import PRESETS
from sparse_survey.store import Store

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ORDER = ["anatomy", "random_pruning", "magnitude", "snip", "grasp", "synflow", "imp", "lth",
         "compare", "ablations", "sanity_checks", "from_scratch", "sparsity"]
PARAMETERS = {
    "anatomy": {"model_name": "mlp", "image_size": 8, "in_channels": 1},
    **{m: {"compressions": [0.5, 1]}
       for m in ("random_pruning", "magnitude", "snip", "grasp", "synflow")},
    "imp": {"compressions": [0.5, 1], "iters": 2},
    "lth": {"compressions": [1, 1.5], "iters": 2},
    "compare": {},
    "ablations": {"compressions": [0.5, 1], "seeds": 2, "seeded_compressions": [1]},
    "sanity_checks": {"methods": ["mag", "snip"], "compressions": [0.5, 1], "seeds": 2,
                      "seeded_compressions": [1]},
    "from_scratch": {"compressions": [0.5, 1], "seeds": 2, "seeded_compressions": [1],
                     "iters": [2]},
    "sparsity": {"model_name": "mlp", "batch_sizes": [1, 8], "repeats": 1},
}
GLUED = {
    "anatomy": ["anatomy_params", "anatomy_prunable", "anatomy_macs_millions"],
    "random_pruning": ["rand_density", "rand_flops_fraction", "rand_accuracy"],
    "magnitude": ["mag_density", "mag_flops_fraction", "mag_accuracy"],
    "snip": ["snip_density", "snip_flops_fraction", "snip_accuracy"],
    "grasp": ["grasp_density", "grasp_flops_fraction", "grasp_accuracy",
              "grasp_positive_share_max", "grasp_first_epoch_train_acc"],
    "synflow": ["synflow_density", "synflow_flops_fraction", "synflow_accuracy"],
    "imp": ["imp_iterations", "imp_accuracy", "imp_highest_compression"],
    "lth": ["lth_scale", "lth_density", "lth_seeds", "lth_ticket_accuracy", "lth_reinit_accuracy",
            "lth_shuffle_accuracy", "lth_drawn_accuracy", "lth_ticket_drift",
            "lth_reinit_verdict", "lth_shuffle_verdict"],
    "compare": ["compare_runs", "compare_best_method", "compare_best_accuracy",
                "compare_dense_accuracy", "compare_pairs_alike", "compare_imp_edge_high",
                "compare_collapsed_max", "compare_late_early_imp2iters", "compare_time_spread",
                "compare_grasp_weakest", "compare_grasp_train_compressions",
                "compare_dense_range", "compare_time_by_machine", "compare_memory_spread"],
    "ablations": ["ablations_seed_spread", "ablations_bn_grasp_mild_effect",
                  "ablations_bn_snip_verdict", "ablations_synflow_high_effect",
                  "ablations_scope_mag_high_effect", "ablations_data_grasp_high_effect",
                  "ablations_rewind_step", "ablations_synflow_flow", "ablations_chance_count",
                  "ablations_summary_table"],
    "sanity_checks": ["sanity_seed_spread", "sanity_runs", "sanity_run_hours", "sanity_mag_figure",
                      "sanity_snip_figure", "sanity_mag_layerwiseshuffle_c1_effect",
                      "sanity_snip_invertedscores_c1_effect", "sanity_shuffle_pairs",
                      "sanity_density_figure", "sanity_synflow_iou_high",
                      "sanity_mag_after_finetuned_c1_gap", "sanity_mag_after_rewoundearly_c1_gap",
                      "sanity_mag_after_rewoundtoinit_c1_gap", "sanity_rewind_step",
                      "sanity_snip_invertedscoresperlayer_c1_effect", "sanity_glance_table",
                      "sanity_snip_empty_units_c1_shuffled", "sanity_synflow_rounding_c1_effect",
                      "sanity_synflow_rounding_c0_5_iou"],
    "from_scratch": ["scratch_runs", "scratch_accuracy_figure", "scratch_new_fraction_max",
                     "scratch_moves_per_connection", "scratch_new_fraction_high",
                     "scratch_updates", "scratch_cost_figure", "scratch_riglerk_c1",
                     "scratch_seterk_c1", "scratch_imp2iters_c1", "scratch_best_one_shot_c1",
                     "scratch_best_one_shot_accuracy_c1"],
    "sparsity": ["sparsity_time_spread", "sparsity_csr_ratio", "sparsity_crossover_b1",
                 "sparsity_best_speedup_b8"],
}


def test_every_notebook_is_covered():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ORDER)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A store holding the smoke-preset runs the method notebooks make (so that the compare and
    sparsity notebooks, which read the store, run on their own too), with the CPU memory that
    the smoke preset does not measure (those notebooks show it)."""
    root = tmp_path_factory.mktemp("results")
    grid = {"methods": list(pruners.METHODS), "compressions": [0.5, 1], "imp_iterations": [2]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "smoke", replace(PRESETS["smoke"], cpu_memory=True))
        sweeps.sweep(sweeps.grid_configs(sweeps.load_grid(grid), "smoke"), Store(root),
                     cache_dir=root / "cache", progress=False)
    return root


def glued(notebook: dict) -> dict[str, str]:
    values = {}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                values[record["name"]] = next(iter(output["data"].values()))
    return values


@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_at_the_smoke_preset_and_glues_its_numbers(name, results, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("SPARSE_SURVEY_CACHE", str(results / "cache"))  # the kernel inherits it
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), kernel_name="python3", cwd=str(ROOT),
        parameters={**({} if name == "anatomy" else {"preset": "smoke", "results": str(results)}),
                    **PARAMETERS[name]},
        progress_bar=False)
    executed = json.loads(out.read_text())
    values = glued(executed)
    for key in GLUED[name]:
        assert key in values and values[key] not in ("nan", "None"), (key, values)


def test_a_bad_parameter_stops_a_notebook_in_the_cell_after_the_parameters(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS / "magnitude.ipynb"), str(tmp_path / "m.ipynb"),
                                   kernel_name="python3", parameters={"preset": "smoke",
                                                                      "seeds": 0},
                                   progress_bar=False)
    assert "seeds must be a count of at least 1" in failure.value.evalue
    assert "tutorial.parameters(" in failure.value.source  # the first cell after them


def test_compare_run_from_the_notebooks_folder_reads_the_repositorys_laptop_records(tmp_path):
    """Jupyter runs a notebook in its own folder: the relative results folder must still be the
    repository's, whose committed laptop records the book is built from."""
    out = tmp_path / "compare.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "compare.ipynb"), str(out), kernel_name="python3",
                               cwd=str(NOTEBOOKS), parameters={"preset": "laptop"},
                               progress_bar=False)
    values = glued(json.loads(out.read_text()))
    committed = report.survey_runs(Store(NOTEBOOKS.parent / "results").records("laptop"))
    grid = [r for r in committed if r["label"] not in (*report.TRAIN_MODE_BN, *report.DYNAMIC)
            and r["config"]["seed"] == 0]
    assert len(grid) == 48  # the survey's grid: 5 one-shot x 6 + IMP 3 x 6
    assert int(values["compare_runs"]) == len(committed)


def test_compare_says_why_a_cost_has_no_spread_instead_of_showing_nan(results, tmp_path):
    """A store whose runs were all timed while other work shared the machine, and which
    measured no CPU memory (the smoke preset's own runs): the compare notebook says why each
    spread is missing, shows no NaN, and glues neither spread."""
    store = tmp_path / "store"
    shutil.copytree(results / "smoke", store / "smoke")
    for path in (store / "smoke").glob("*.json"):
        record = json.loads(path.read_text())
        if record["status"] == "finished":
            metrics = record["metrics"]
            metrics["time_passes_wait_s"] = metrics["time_passes_s"]  # waited all along
            metrics.pop("cpu_rss_peak_bytes", None)
        path.write_text(json.dumps(record))
    out = tmp_path / "compare.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "compare.ipynb"), str(out), kernel_name="python3",
                               cwd=str(ROOT), parameters={"preset": "smoke",
                                                          "results": str(store)},
                               progress_bar=False)
    executed = json.loads(out.read_text())
    text = json.dumps([cell.get("outputs", []) for cell in executed["cells"]])
    assert "no spread of inference_time: no run was timed alone" in text
    assert "no spread of cpu_memory: the smoke preset, for tests, does not measure it" in text
    assert "Largest over smallest" not in text and "| nan" not in text.lower()
    values = glued(executed)
    assert "compare_time_spread" not in values and "compare_memory_spread" not in values
    compared = report.survey_runs(Store(store).records("smoke"))  # what the notebook reads
    assert int(values["compare_contended_runs"]) == sum(r["status"] == "finished"
                                                         for r in compared) > 0


@pytest.mark.parametrize("name", ORDER)
def test_jupytext_pair_is_in_sync_and_the_ipynb_has_no_outputs(name):
    text = jupytext.read(NOTEBOOKS / f"{name}.py")
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert [(c.cell_type, c.source) for c in text.cells] == \
        [(c.cell_type, c.source) for c in notebook.cells]
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and all("#" in line for line in tagged[0].source.splitlines())
    raw = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("name", ORDER)
def test_notebook_code_fits_the_books_column(name):
    """The book's content column holds 79 columns of code: no line of a code cell is longer
    (notebooks/ruff.toml lints the same; this says which notebook and line)."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    long = [(i, line) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > 79]
    assert long == [], f"{name}: code lines over 79 columns (cell, line): {long}"


def reproduce_commands() -> list[tuple[str, str, dict[str, str]]]:
    """The papermill commands of the reproduce page's notebook block, loops unrolled: (notebook,
    output, {parameter: value given with -p or -y})."""
    import shlex

    page = (NOTEBOOKS.parent / "book" / "reproduce.md").read_text()
    block = page.split("## The notebooks")[1].split("```bash")[1].split("```")[0]
    lines = block.replace("\\\n", " ").splitlines()
    commands, loop = [], None
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:1] == ["for"]:
            loop = [w.rstrip(";") for w in words[3:words.index("do")]]
        elif words[:1] == ["done"]:
            loop = None
        elif words[:1] == ["papermill"]:
            for nb in loop or [None]:
                w = [x.replace("$nb", nb) if nb else x for x in words]
                given, i = {}, 3
                while i < len(w):
                    if w[i] == "-p":
                        given[w[i + 1]] = w[i + 2]
                        i += 3
                    elif w[i] == "-y":
                        given.update({k.strip(): v.strip() for k, v in
                                      [w[i + 1].split(":", 1)]})
                        i += 2
                    else:
                        raise AssertionError(f"unexpected word {w[i]!r} in {line!r}")
                commands.append((w[1], w[2], given))
    return commands


def test_the_reproduce_page_executes_every_book_notebook_at_a_named_preset():
    """The reproduce page's commands make every executed copy the book renders, each from its
    notebook, naming the preset (and precision) wherever the notebook has them, with parameters
    the notebook has: the book's scale is never left to `auto`."""
    commands = reproduce_commands()
    made = {Path(out).name for _, out, _ in commands}
    assert made == {p.name for p in (NOTEBOOKS.parent / "book" / "executed").glob("*.ipynb")}
    waiting = awaiting(NOTEBOOKS.parent / "results")
    for notebook, out, given in commands:
        executed = json.loads((NOTEBOOKS.parent / out).read_text())
        ran = executed["metadata"].get("papermill", {}).get("parameters", {})
        expected = {k: yaml.safe_load(v) for k, v in given.items()}
        if Path(out).stem in waiting:  # executed before its runs were stored (tests/awaiting.py)
            assert ran != expected, f"{out} is executed: take it out of tests/awaiting.py"
            continue
        known = papermill.inspect_notebook(str(NOTEBOOKS.parent / notebook))
        assert set(given) <= set(known), (notebook, set(given) - set(known))
        if "preset" in known:
            assert given.get("preset") in ("cpu-full", "laptop"), (out, given)
        if given.get("preset") == "cpu-full":
            assert given.get("precision") == "fp32", (out, given)
        assert ran == expected, (out, ran, given)


def test_one_cell_is_one_number_on_every_page_that_shows_it():
    """The book's glued numbers for one cell (preset, method, compression, every stored seed)
    agree wherever a page quotes them: each method page's accuracy at compression 2, the results
    chapter's and the sparse-from-scratch chapter's, all from the cpu-full fp32 records."""
    def values(name):
        path = NOTEBOOKS.parent / "book" / "executed" / f"{name}.ipynb"
        return {k: yaml.safe_load(v.strip("'\"")) if isinstance(v, str) else v
                for k, v in glued(json.loads(path.read_text())).items()}

    compare, scratch = values("compare"), values("from_scratch")
    assert compare["compare_preset"] == "cpu-full"
    for notebook, prefix, label in [("random_pruning", "rand", "rand"), ("magnitude", "mag", "mag"),
                                    ("snip", "snip", "snip"), ("grasp", "grasp", "grasp"),
                                    ("synflow", "synflow", "synflow"),
                                    ("imp", "imp", "imp4iters")]:
        page = values(notebook)
        assert page[f"{prefix}_scale"] == "cpu-full preset, fp32", notebook
        assert page[f"{prefix}_highest_compression"] == 2, notebook
        assert page[f"{prefix}_accuracy"] == pytest.approx(compare[f"compare_acc_high_{label}"],
                                                           abs=1e-9), notebook
        assert scratch[f"scratch_{label}_c2"] == pytest.approx(
            compare[f"compare_acc_high_{label}"], abs=1e-9), label
