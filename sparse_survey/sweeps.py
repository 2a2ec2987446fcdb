"""Grids of runs: the survey's grid, sweeps over a grid (local, time-boxed, or on Ray) and the
time estimates that box them.

:func:`sweep` runs every config that the store does not hold yet, one after another or as one
Ray task per run (one GPU each where GPUs exist), storing each record as it arrives. A local
sweep can be time-boxed: it starts no run that its estimate says would end past the budget, so
a long grid proceeds in slices that the store resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import dynamic, pruners
from .data import default_cache_dir
from .experiment import PRESETS, RunConfig, config_dict, dataset, run, trainings_left
from .files import check_room
from .profile import device_name
from .store import Store, write_json

SURVEY_GRID = {"methods": list(pruners.METHODS),
               "compressions": list(pruners.SURVEY_COMPRESSIONS),
               "imp_iterations": list(pruners.SURVEY_IMP_ITERATIONS),
               "seeds": [0]}
# A grid's run fields, one value each, and the RunConfig field each sets: on the one-shot runs,
# on the IMP runs, or on every run of the grid.
ONE_SHOT_FIELDS = {"scope": "scope", "iterations": "iterations",
                   "prune_batches": "prune_batches", "prune_batch_size": "prune_batch_size",
                   "bn_mode": "bn_mode", "control": "control", "rounding": "rounding"}
IMP_FIELDS = {"rewind": "rewind", "control": "control"}
EVERY_RUN_FIELDS = {"precision": "precision"}
RUN_FIELDS = {**ONE_SHOT_FIELDS, **IMP_FIELDS, **EVERY_RUN_FIELDS}
OTHER_PRECISION = {"fp32": "bf16", "bf16": "fp32"}


def load_grid(spec: str | os.PathLike | dict) -> dict:
    """``"survey"`` (the survey's grid), a dict, a YAML or JSON file, or such a mapping written
    inline (``'{methods: [snip], compressions: [1]}'``). Its keys: methods (the one-shot
    methods, ``set``, ``rigl`` and ``static``; ``dense`` among them adds the unpruned network,
    one run per seed), compressions, imp_iterations (IMP round counts; empty for none) and
    seeds, each a list (missing: the survey's), and any run field of :data:`RUN_FIELDS`, one
    value each, that every run of its kind takes: ``scope``, ``iterations`` (a one-shot
    method's scoring rounds, the name the run config, the command line and the notebooks give
    them), ``prune_batches``, ``prune_batch_size``, ``bn_mode`` and ``rounding`` for the
    one-shot methods, ``rewind`` for IMP, ``control`` for both (IMP: ``reinit`` or
    ``shuffle``; one-shot: also ``invert`` and ``invert_layer``), ``precision`` for all; so any
    run a notebook stores is one grid. A missing, empty or malformed file, or a value of the
    wrong kind, is a clear ValueError."""
    if isinstance(spec, dict):
        grid = spec
    elif spec == "survey":
        grid = SURVEY_GRID
    else:
        import yaml

        inline = isinstance(spec, str) and spec.lstrip().startswith("{")
        path = Path(spec)
        if not inline and not path.is_file():
            raise ValueError(f"grid {str(spec)!r} is neither 'survey', an existing file nor an "
                             "inline mapping ({...})")
        where = "inline grid" if inline else f"grid file {path}"
        try:  # YAML is a superset of JSON
            grid = load_yaml(spec if inline else path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{where} is not valid YAML or JSON: "
                             f"{' '.join(str(error).split())}") from error
        if grid is None:
            raise ValueError(f"{where} is empty")
    if not isinstance(grid, dict):
        raise ValueError(f"a grid maps {', '.join(SURVEY_GRID)} to lists; got {grid!r}")
    unknown = set(grid) - set(SURVEY_GRID) - set(RUN_FIELDS)
    if unknown:
        raise ValueError(f"unknown grid keys {sorted(unknown)}; known: "
                         f"{sorted(SURVEY_GRID)} and the run fields {sorted(RUN_FIELDS)}")
    lists = [key for key in RUN_FIELDS if isinstance(grid.get(key), (list, dict))]
    if lists:
        raise ValueError(f"grid run fields take one value each (one grid per variant); got "
                         f"{', '.join(f'{k}: {grid[k]!r}' for k in lists)}")
    grid = {**SURVEY_GRID, **grid}
    checks = {"methods": (lambda v: v in (*pruners.METHODS, *dynamic.METHODS, "dense"),
                          f"method names ({', '.join([*pruners.METHODS, *dynamic.METHODS])}, "
                          "or dense)"),
              "compressions": (lambda v: _number(v) and v >= 0, "numbers >= 0"),
              "imp_iterations": (lambda v: _whole(v) and v >= 1, "whole numbers >= 1"),
              "seeds": (lambda v: _whole(v) and v >= 0, "whole numbers >= 0")}
    for key, (valid, kind) in checks.items():
        values = grid[key]
        if not isinstance(values, list) or not all(valid(v) for v in values):
            raise ValueError(f"grid key {key!r} must be a list of {kind}; got {values!r}")
    return grid


def load_yaml(text: str):
    """YAML (JSON included) with numbers read as YAML 1.2 and JSON read them: PyYAML follows
    YAML 1.1, where ``5e-2`` or ``1e3`` (no decimal point) is a string, so a JSON grid's
    ``[5e-2, 1]`` would come back as ``['5e-2', 1]``."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def grid_configs(grid: dict, preset: str, seeds: list[int] | None = None,
                 **overrides) -> list[RunConfig]:
    """Every run of a grid at a preset: one-shot methods x compressions, IMP with each round
    count x compressions, for each seed, each with the grid's run fields of its kind (see
    :func:`load_grid`); each run once (see :func:`unique`)."""
    def fields(kind: dict) -> dict:
        return {field: grid[key] for key, field in {**kind, **EVERY_RUN_FIELDS}.items()
                if key in grid}

    one_shot, imp, dense = fields(ONE_SHOT_FIELDS), fields(IMP_FIELDS), fields({})
    configs = []
    for seed in seeds if seeds is not None else grid["seeds"]:
        for c in grid["compressions"]:
            for method in grid["methods"]:
                if method == "dense":  # unpruned: one run per seed, whatever the compressions
                    configs.append(RunConfig.from_preset(preset, "dense", 0, seed=seed,
                                                         **{**dense, **overrides}))
                    continue
                configs.append(RunConfig.from_preset(preset, method, c, seed=seed,
                                                     **{**one_shot, **overrides}))
            for k in grid["imp_iterations"]:
                configs.append(RunConfig.from_preset(preset, "imp", c, iterations=k, seed=seed,
                                                     **{**imp, **overrides}))
    return unique(configs)


def unique(configs: list[RunConfig]) -> list[RunConfig]:
    """The configs without repeats of a run (the same key: ``1`` and ``1.0``, a seed listed twice),
    in their first order."""
    return list({c.key: c for c in configs}.values())


def stored_at_other_precision(configs: list[RunConfig], store: Store) -> list[RunConfig]:
    """The configs of presets whose precision is ``auto`` (the machine's) that the store does not
    hold but holds finished at the other precision (fp32 for a bf16 config, bf16 for an fp32
    one): on a machine whose ``auto`` differs from the one that made a grid (no bf16 hardware
    here, say), each would train its cell again under a new key rather than continue the grid."""
    return [c for c in configs
            if c.preset in PRESETS and PRESETS[c.preset].precision == "auto" and not store.done(c)
            and store.done(replace(c, precision=OTHER_PRECISION[c.precision]))]


def sweep(configs: list[RunConfig], store: Store, backend: str = "local",
          address: str | None = None, cache_dir=None, progress: bool = True,
          time_budget: float | None = None, data_root=None,
          retry_diverged: bool = False, run_progress: bool = True,
          other_precision: bool = False) -> list[dict]:
    """Run every config that is not done in the store (:meth:`Store.done`: failed runs and broken
    records are run again, diverged ones too with ``retry_diverged``) and store each record as it
    arrives; return the new records. With ``progress``, a bar counts the runs, and under it (with
    ``run_progress``) the run in flight shows its epoch, loss and images/s.

    A config listed twice (or as ``1`` and ``1.0``) runs once. Sweeps on one store share its
    work: each run is claimed (:meth:`Store.claim`) while it runs, and a run another process has
    claimed is left to it (it stays pending here).

    Before any training, the store must be writable and, on the local backend, the data must
    load: both fail with a clear error at once rather than in every run. Records stored under
    keys of an earlier definition are migrated first (:meth:`Store.rekey`). A finished record
    that cannot be written is kept in a temporary folder (see :func:`keep_safe`) before the
    error ends the sweep.

    ``time_budget`` (seconds; local backend): start no run that would end past the budget, by
    :func:`estimate_seconds` from the runs finished in this call and the stored runs of the same
    presets on this device, for the trainings each run has left (an IMP run whose rounds the
    cache holds costs only the rest). The run in flight always finishes and is stored; the runs
    left wait for the next call; when not one run fits, that is a ValueError saying what would.
    ``data_root`` says where CIFAR-10 is (see :func:`run`).

    A config whose cell the store holds at the other precision (see
    :func:`stored_at_other_precision`) is a ValueError before any training, unless
    ``other_precision`` (the precision was chosen): say which to run, rather than repeat a
    stored grid."""
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; known: local, ray")
    if time_budget is not None and (backend != "local" or not time_budget > 0):
        raise ValueError("a time budget needs the local backend and a positive number of "
                         f"seconds, got {time_budget!r} with backend {backend!r}")
    if backend == "ray":
        check_reachable(address)
    configs = unique(configs)
    for preset in sorted({c.preset for c in configs}):
        store.check_writable(preset)
        store.rekey(preset)
    twins = [] if other_precision else stored_at_other_precision(configs, store)
    if twins:
        ran = OTHER_PRECISION[twins[0].precision]
        raise ValueError(
            f"{len(twins)} of these runs are stored at preset {twins[0].preset} in {ran}, and "
            f"here they would run in {twins[0].precision} (this machine's precision; bf16 "
            f"hardware: {'yes' if twins[0].precision == 'bf16' else 'no'}), as new runs beside "
            f"them. Say which: --precision {ran} continues the stored grid"
            f"{' (bf16 without bf16 hardware is slow)' * (ran == 'bf16')}, --precision "
            f"{twins[0].precision} adds "
            f"{twins[0].precision} runs beside it")
    pending = [c for c in configs if not store.done(c, retry_diverged)]
    for config in pending:  # a folder in a record's place is found now, not after training
        store.check_target(config)
    if backend == "local" and any(c.method == "imp" for c in pending):
        check_room(Path(cache_dir or default_cache_dir()) / "imp", 0, "the IMP cache")
    if backend == "local":  # load the data now: a missing or damaged data set stops here
        for name, limit in sorted({(c.dataset, c.limit_per_class) for c in pending}, key=str):
            dataset(name, data_root, limit, progress=progress)
    records: list[dict] = []
    with contextlib.ExitStack() as held:  # the bar, and the claims of the Ray backend
        bar = held.enter_context(tqdm(total=len(configs), initial=len(configs) - len(pending),
                                      desc="sweep", unit="run", disable=not progress))

        def keep(record: dict) -> None:
            try:
                store.write(record)
            except OSError as error:
                keep_safe(record, error)
                raise
            records.append(record)
            bar.set_postfix(last=f"{record['label']} c={record['config']['compression']:g} "
                                 f"{record['status']}")
            bar.update()

        if backend == "ray":  # the driver holds the claim of every run it hands to the cluster
            mine = [c for c in pending if held.enter_context(store.claim(c))]
            for record in _ray_runs(mine, address, cache_dir, data_root):
                keep(record)
            return records
        past = past_runs(store, pending) if time_budget is not None else []
        start, too_long = time.monotonic(), []
        for config in pending:
            if time_budget is not None:
                estimate = estimate_seconds(config, records, past,
                                            left=trainings_left(config, cache_dir, data_root))
                if estimate is not None and time.monotonic() - start + estimate > time_budget:
                    too_long.append(estimate)
                    continue  # would end past the budget: left for the next call
            with store.claim(config) as mine:
                if mine and not store.done(config, retry_diverged):  # not done meanwhile
                    keep(run(config, cache_dir, progress and run_progress, data_root))
    if too_long and not records:
        raise ValueError(f"no run fits the time budget of {time_budget:g} s: the shortest left "
                         f"is estimated at {min(too_long):.0f} s; give --time-budget "
                         f"{math.ceil(min(too_long) * 1.2)} or more")
    return records


def keep_safe(record: dict, error: OSError) -> Path | None:
    """Save a record that the store could not take into the system's temporary folder
    (``sparse_survey-unsaved/<preset>/``), or print it to stderr where even that fails; warn
    where it went. Returns the path, if any."""
    path = (Path(tempfile.gettempdir()) / "sparse_survey-unsaved" / record["config"]["preset"]
            / f"{record['key']}.json")
    try:
        write_json(path, record)
    except OSError:
        print(json.dumps(record), file=sys.stderr)
        warnings.warn(f"could not store the record of {record['label']} ({error}); it is "
                      "printed above", stacklevel=2)
        return None
    warnings.warn(f"could not store the record of {record['label']} ({error}); it is kept in "
                  f"{path}: move it into the store", stacklevel=2)
    return path


def trainings(config: dict) -> int:
    """How many trainings a run (a stored record's ``config``) does from an empty cache: one;
    for IMP one per round and the dense one, and a control's."""
    if config["method"] != "imp":
        return 1
    return config["iterations"] + 1 + (config.get("control") is not None)


def trained(record: dict) -> int:
    """How many trainings a stored run did: :func:`trainings`, less the IMP rounds (the dense
    one included) it took from the cache."""
    rounds = record.get("imp_rounds")
    if rounds is None:  # not IMP, or a record that does not say
        return trainings(record["config"])
    return (sum(not r.get("cached", False) for r in rounds)
            + (record["config"].get("control") is not None))


def estimate_seconds(config: RunConfig, *pools: list[dict], left: int | None = None
                     ) -> float | None:
    """How long ``config`` should run: the trainings it has ``left`` (default: all of them,
    :func:`trainings`; :func:`experiment.trainings_left` counts those the IMP cache spares)
    times a median time per training of finished records: of those of the same kind (method,
    IMP rounds, control) in the first pool that has any, else of all in the first pool with
    one. A record's time counts per training it did (:func:`trained`), scaled to this
    config's epochs (a preset's sizing runs differ in their epochs; within a grid they do not,
    and the scaling changes nothing); one that trained nothing says nothing of a training's
    time. None when no pool holds such a record."""
    mine = config_dict(config)
    left = trainings(mine) if left is None else left

    def kind(c: dict) -> tuple:
        return c["method"], c["iterations"], c.get("control")

    def per_training(records: list[dict]) -> float:
        return statistics.median(r["timings"]["total_s"] / trained(r) * mine["recipe"]["epochs"]
                                 / r["config"]["recipe"]["epochs"] for r in records)

    finished = [[r for r in pool if r["status"] == "finished" and trained(r)] for pool in pools]
    for pool in finished:
        same = [r for r in pool if kind(r["config"]) == kind(mine)]
        if same:
            return left * per_training(same)
    for pool in finished:
        if pool:
            return left * per_training(pool)
    return None


def past_runs(store: Store, configs: list[RunConfig]) -> list[dict]:
    """The stored records of the configs' presets that ran as these configs will: on the same
    device (by its name and, for a CPU whose record says, by the vector instructions torch
    dispatches) at the same precision. What a time estimate may draw on: CPUs of one model name
    differ in their instructions, and a bf16 run on one with bf16 dot products says little of
    an fp32 run's time (cpu-full trained in about 410 s on one, 600 s in fp32 on the other)."""
    alike = {(device_name(c.torch_device), c.precision) for c in configs}
    capability = torch.backends.cpu.get_cpu_capability()

    def ran_alike(record: dict) -> bool:
        ran = record["environment"]
        on_cpu = torch.device(ran.get("device", "cpu")).type == "cpu"
        return ((ran.get("device_name"), record["config"]["precision"]) in alike
                and not (on_cpu and ran.get("cpu_capability", capability) != capability))

    return [r for preset in sorted({c.preset for c in configs}) for r in store.records(preset)
            if ran_alike(r)]


def _run_with_threads(config: RunConfig, cache_dir, threads: int, data_root) -> dict:
    """A Ray task: :func:`run` with the driver's number of CPU threads (Ray would set one), since
    CPU float reductions, and so a run's exact numbers, depend on the thread count."""
    torch.set_num_threads(threads)
    return run(config, cache_dir, data_root=data_root)


def check_reachable(address: str | None, seconds: float = 5.0) -> None:
    """Fail within ``seconds`` when a Ray address of the form ``host:port`` (or
    ``ray://host:port``) does not accept connections: Ray itself retries for minutes. ``auto`` and
    None are left to Ray (a running local cluster, or a new one)."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not host:port (or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise ValueError(f"no Ray cluster answers at {address} ({error.strerror or error}); "
                         "start one (ray start --head) or check the address") from None


def _ray_runs(configs: list[RunConfig], address: str | None, cache_dir, data_root):
    """Yield records as Ray tasks finish: one task per run, one GPU each when the cluster has
    GPUs, else as many CPUs as this process uses threads. Without ``address`` a local Ray
    instance is started."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        threads = torch.get_num_threads()
        task = ray.remote(num_cpus=1 if gpus else threads, num_gpus=gpus)(_run_with_threads)
        waiting = [task.remote(replace(c, device="cuda") if gpus else c, cache_dir, threads,
                               data_root)
                   for c in configs]
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            yield ray.get(finished[0])
    finally:
        if started:
            ray.shutdown()
