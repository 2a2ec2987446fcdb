"""The command line: ``python -m sparse_survey <command> ...`` (``--help`` on each command).

Each command is a pair that stands together below: ``add_<command>`` makes its options and
``run_<command>`` runs it. Budgets come from the presets: ``--preset`` (default ``auto``: survey
on a GPU, laptop on a CPU) gives the model, the data and the training recipe, and each option
overrides one of them; the recipe's options are made from :class:`~sparse_survey.train.Recipe`'s
fields. Expected errors (bad input, missing or damaged data, an unwritable folder) print one
``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

from . import data as datasets
from . import masks, models, pruners
from .experiment import PRESETS, Preset, dataset, fresh_model, resolve_preset, scoring_batches
from .train import PRECISIONS, Recipe, device_of, fit, resolve_precision


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, FloatingPointError) as error:  # missing or damaged data too
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m sparse_survey",
                                  description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    for add in (add_train, add_prune, add_profile, add_imp, add_sweep, add_report, add_bench,
                add_worklist):
        add(commands)
    return top


# ------------------------------------------------------------------------- shared options

def command(commands, name: str, run, help: str, description: str,
            *options) -> argparse.ArgumentParser:
    """A command's parser: ``options`` are functions that add groups of options to it."""
    p = commands.add_parser(name, help=help, description=description)
    for add in options:
        add(p)
    p.set_defaults(run=run)
    return p


def device_arg(text: str) -> str:
    """A torch device this machine has (an argparse type: a bad one is a usage error)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (e.g. cpu, cuda, "
                                         "cuda:1)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA GPU(s) "
                                             "that torch can use")
    return text


def count_arg(text: str) -> int:
    """A whole number >= 1 (an argparse type)."""
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")


def seed_arg(text: str) -> int:
    """A seed: a whole number from 0 to 2**32 - 1 (what torch's generators take)."""
    if text.isdigit() and int(text) < 2**32:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {2**32 - 1}, got "
                                     f"{text!r}")


def compression_arg(text: str) -> float:
    """A compression c: a finite number >= 0 (density 10^-c)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def folder_arg(text: str) -> str:
    """A folder to write into: it, or the first of its parents that exists, must be a folder."""
    path = Path(text).expanduser()
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise argparse.ArgumentTypeError(f"{place} is a file, not a folder")
            break
    return text


def positive_seconds(text: str) -> float:
    """A time budget: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def limit_arg(text: str) -> int | str:
    """Images per class: a whole number >= 1, or ``all``."""
    if text == "all":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'all', got {text!r}")


def add_budget_options(p: argparse.ArgumentParser) -> None:
    """``--preset`` and the options that override its model and data, the seed and device."""
    group = p.add_argument_group("budget (default: the preset's)")
    group.add_argument("--preset", default="auto", choices=("auto", *PRESETS),
                       help="model, data and recipe (default: auto, survey on a GPU and laptop "
                            "on a CPU)")
    group.add_argument("--model", choices=models.MODELS, help="model")
    group.add_argument("--width", type=float, help="channel width multiplier")
    group.add_argument("--dataset", choices=datasets.DATASETS, help="data set")
    group.add_argument("--limit-per-class", type=limit_arg, metavar="N",
                       help="use N images per class of each split, or 'all'")
    group.add_argument("--data-root", default=None,
                       help="where CIFAR-10 is: a torchvision folder, an ImageFolder folder, or "
                            "a .zip or .tar.gz of one (default: $SPARSE_SURVEY_DATA, then a "
                            "download)")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="bf16 (autocast, channels_last), fp32, or auto: bf16 where the device "
                            "does bf16 arithmetic (default: %(default)s; the laptop preset's "
                            "stored runs are fp32)")
    group.add_argument("--seed", type=seed_arg, default=0,
                       help="seed of weights and data order (default: %(default)s)")
    group.add_argument("--device", default=None, type=device_arg,
                       help="torch device, e.g. cpu or cuda (default: cuda when available)")


def add_recipe_options(p: argparse.ArgumentParser) -> None:
    """One option per field of :class:`Recipe`, each overriding the preset's value."""
    group = p.add_argument_group("training recipe (default: the preset's)")
    for field in dataclasses.fields(Recipe):
        flag, help = "--" + field.name.replace("_", "-"), field.metadata["help"]
        if isinstance(field.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help)
        elif isinstance(field.default, tuple):
            group.add_argument(flag, type=float, nargs="+", metavar="EPOCH", help=help)
        else:
            group.add_argument(flag, type=type(field.default), help=help,
                               choices=field.metadata.get("choices"))


def budget(args: argparse.Namespace) -> Preset:
    """The preset named by ``--preset``, with the options given on the command line."""
    preset = PRESETS[resolve_preset(args.preset)]
    recipe = preset.recipe
    if hasattr(args, "epochs"):  # a command that trains
        changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)
                   if getattr(args, f.name) is not None}
        if "milestones" in changes:
            changes["milestones"] = tuple(changes["milestones"])
        recipe = dataclasses.replace(recipe, **changes)
    given = {name: getattr(args, name)
             for name in ("model", "width", "dataset", "limit_per_class", "precision")
             if getattr(args, name) is not None}
    if given.get("limit_per_class") == "all":
        given["limit_per_class"] = None
    return dataclasses.replace(preset, recipe=recipe, **given)


PRUNING_DEFAULTS = {"scope": "global", "iterations": None, "invert": False, "prune_batches": 1,
                    "prune_batch_size": 256, "bn_mode": "eval", "rounding": "nearest"}


def add_pruning_options(p: argparse.ArgumentParser, required: bool) -> None:
    """``--method`` and ``--compression``, and the method's choices (defaults in
    :data:`PRUNING_DEFAULTS`; :func:`pruning_choices` refuses one the method does not use)."""
    group = p.add_argument_group("pruning")
    group.add_argument("--method", required=required, default=None, choices=pruners.METHODS,
                       help="pruning method" + ("" if required else " (default: none, dense)"))
    group.add_argument("--compression", type=compression_arg, required=required, default=None,
                       help="compression c: keep a fraction 10^-c of the prunable weights")
    group.add_argument("--scope", choices=pruners.SCOPES,
                       help="one threshold for all layers, or per layer (default: global)")
    group.add_argument("--iterations", type=count_arg,
                       help="pruning rounds (default: the method's, 100 for synflow, else 1)")
    group.add_argument("--invert", action="store_true", default=None,
                       help="keep the lowest scores instead")
    group.add_argument("--prune-batches", type=count_arg,
                       help="training batches that snip and grasp score on (default: 1)")
    group.add_argument("--prune-batch-size", type=count_arg,
                       help="images per scoring batch of snip and grasp (default: 256)")
    group.add_argument("--bn-mode", choices=pruners.BN_MODES,
                       help="BatchNorm's mode while snip and grasp score (default: eval)")
    group.add_argument("--rounding", choices=pruners.ROUNDINGS,
                       help="each round's kept count d*N made whole: to the nearest, or up as "
                            "Synaptic-Flow's code does (default: nearest)")


def pruning_choices(args: argparse.Namespace) -> dict:
    """The pruning options, defaults filled in; a ValueError for one given without
    ``--method``, or one the method does not use (the scoring batches and BatchNorm mode of a
    method that scores without data), rather than ignore it."""
    given = [name for name in PRUNING_DEFAULTS if getattr(args, name) is not None]
    flags = ", ".join("--" + name.replace("_", "-") for name in given)
    if args.method is None and given:
        raise ValueError(f"{flags} choose(s) how to prune: give --method and --compression too "
                         "(without them the model stays dense)")
    if args.method is not None and not pruners.METHODS[args.method].needs_data:
        on_data = [n for n in ("prune_batches", "prune_batch_size", "bn_mode") if n in given]
        if on_data:
            raise ValueError(f"{args.method} scores without data, so "
                             f"{', '.join('--' + n.replace('_', '-') for n in on_data)} would "
                             "change nothing; they apply to snip and grasp")
    return {name: PRUNING_DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
            for name in PRUNING_DEFAULTS}


def load_data(args: argparse.Namespace, b: Preset):
    return dataset(b.dataset, args.data_root, b.limit_per_class,
                   progress=not getattr(args, "no_progress", False))


def pruned_model(args: argparse.Namespace, b: Preset, device: torch.device, train=None):
    """A freshly initialised model pruned as the options say, and the seconds pruning took.
    SNIP and GraSP score on the first ``--prune-batches`` shuffled, augmented training batches;
    the other methods need no data."""
    chosen, batches = pruning_choices(args), None
    if args.method is not None and pruners.METHODS[args.method].needs_data:
        train = train or load_data(args, b)[0]
        batches = scoring_batches(train, chosen.pop("prune_batches"),
                                  chosen.pop("prune_batch_size"), args.seed, device)
    chosen.pop("prune_batches", None), chosen.pop("prune_batch_size", None)
    shape = train.shape if train is not None else datasets.SHAPES[b.dataset]
    model = fresh_model(b.model, b.width, shape, datasets.NUM_CLASSES[b.dataset], args.seed,
                        device)
    start = time.perf_counter()
    if args.method is not None:
        pruners.prune(model, args.method, args.compression, batches, seed=args.seed,
                      input_shape=shape, **chosen)
    return model, time.perf_counter() - start


# ------------------------------------------------------------------------------------ train

def add_train(commands) -> None:
    p = command(commands, "train", run_train, "train a dense model and report its accuracy",
                "Train a dense model of a preset's budget; print each epoch's loss and images/s, "
                "and the test accuracy as often as the preset evaluates it (and after the last "
                "epoch): the preset's dense training, as its runs do it.", add_budget_options,
                add_recipe_options)
    p.add_argument("--compile", action="store_true", help="compile the model (torch.compile)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_train(args: argparse.Namespace) -> int:
    b, device = budget(args), device_of(args.device)
    train, test = load_data(args, b)
    model = fresh_model(b.model, b.width, train.shape, len(train.classes), args.seed, device)
    precision = resolve_precision(b.precision, device)
    print(f"{b.model} (width {b.width:g}) on {train.name}: {len(train)} training, "
          f"{len(test)} test images, device {device}, {precision}; {b.recipe}")
    start = time.perf_counter()
    history = fit(model, train, b.recipe, test, device=device, seed=args.seed,
                  compile=args.compile, progress=not args.no_progress, precision=precision,
                  eval_every=b.eval_every)
    for e in history.epochs:
        tested = f"{e['test_acc']:.4f}" if "test_acc" in e else "  -   "
        print(f"epoch {e['epoch']:3d}  loss {e['train_loss']:.4f}  train acc {e['train_acc']:.4f}"
              f"  test acc {tested}  {e['images_per_s']:8.0f} images/s")
    if history.diverged:
        print(f"diverged: {history.error}", file=sys.stderr)
        return 1
    print(f"final test accuracy {history.final['test_acc']:.4f} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


# ------------------------------------------------------------------------------------ prune

def add_prune(commands) -> None:
    command(commands, "prune", run_prune,
            "prune a freshly initialised model and print its per-layer densities",
            "Prune a freshly initialised model by one method; print each layer's kept weights and "
            "density, the totals, and how long scoring took.",
            add_budget_options, lambda p: add_pruning_options(p, required=True))


def run_prune(args: argparse.Namespace) -> int:
    b, device = budget(args), device_of(args.device)
    model, seconds = pruned_model(args, b, device)
    chosen = pruning_choices(args)
    rounds = chosen["iterations"] or pruners.METHODS[args.method].iterations
    print(f"{args.method} on {b.model} (width {b.width:g}), compression {args.compression} "
          f"(density {10 ** -args.compression:.4g}), {chosen['scope']} scope, {rounds} "
          "round(s)")
    print(f"{'layer':28} {'shape':>16} {'kept':>10} {'total':>10} {'density':>9}")
    weights = masks.prunable(model)
    for name, (kept, total) in masks.counts(model).items():
        shape = "x".join(map(str, weights[name].shape))
        print(f"{name:28} {shape:>16} {kept:10d} {total:10d} {kept / total:9.4f}")
    kept, total = map(sum, zip(*masks.counts(model).values()))
    print(f"{'prunable weights':28} {'':>16} {kept:10d} {total:10d} {kept / total:9.4f}")
    print(f"{'all parameters remaining':28} {'':>16} {'':>10} {'':>10} "
          f"{masks.remaining_fraction(model):9.4f}")
    print(f"scoring and pruning took {seconds:.2f} s on {device}")
    return 0


# ---------------------------------------------------------------------------------- profile

def add_profile(commands) -> None:
    p = command(commands, "profile", run_profile,
                "FLOPs, parameters, storage, inference time and memory of a pruned model",
                "Prune a freshly initialised model (or leave it dense when no --method is given) "
                "and print its profile record.",
                add_budget_options, lambda p: add_pruning_options(p, required=False))
    p.add_argument("--eval-batch-size", type=count_arg, default=256,
                   help="inference batch size (default: %(default)s)")
    p.add_argument("--repeats", type=count_arg, default=None,
                   help="timed passes over the test set (default: the preset's)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the CPU-memory probe (a fresh subprocess)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def format_value(key: str, value) -> str:
    if key.endswith("_bytes"):
        return f"{value / 2**20:,.2f} MiB"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def run_profile(args: argparse.Namespace) -> int:
    from .profile import profile

    if (args.method is None) != (args.compression is None):
        raise ValueError("--method and --compression go together (give neither to profile the "
                         "dense model)")
    pruning_choices(args)  # an option without --method is refused before the data loads
    b, device = budget(args), device_of(args.device)
    train, test = load_data(args, b)
    model, _ = pruned_model(args, b, device, train)
    what = f"{args.method} at compression {args.compression:g}" if args.method else "dense"
    print(f"profile of {b.model} (width {b.width:g}), {what}, on {len(test)} test images "
          f"of {test.name}")
    repeats = b.profile_repeats if args.repeats is None else args.repeats
    record = profile(model, test, device, args.eval_batch_size, repeats,
                     memory=not args.no_memory, precision=b.precision,
                     progress=not args.no_progress)
    for key, value in record.items():
        print(f"  {key:28} {format_value(key, value)}")
    return 0


# -------------------------------------------------------------------------------------- imp

def rewind_point(text: str) -> str | int:
    if text in ("init", "none"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'init', 'none' or a training step, got {text!r}")


def add_imp(commands) -> None:
    p = command(commands, "imp", run_imp,
                "iterative magnitude pruning with rewinding (lottery tickets)",
                "Train, then k times: prune by global magnitude to d^(r/k), rewind the survivors, "
                "retrain. Prints one row per round; the dense training and each round are cached, "
                "so a rerun resumes.", add_budget_options, add_recipe_options)
    p.add_argument("--compression", type=compression_arg, required=True,
                   help="final compression c (density 10^-c)")
    p.add_argument("--iterations", type=count_arg, default=4,
                   help="prune rounds, the survey's 'IMP (k Iters)' (default: %(default)s)")
    p.add_argument("--rewind", type=rewind_point, default="init",
                   help="rewind to 'init', to training step j, or 'none' (fine-tune the "
                        "trained survivors) (default: %(default)s)")
    p.add_argument("--controls", action="store_true",
                   help="also train the random-reinit and layerwise-shuffle controls")
    p.add_argument("--cache-dir", default=None, type=folder_arg,
                   help="dense runs and checkpoints (default: $SPARSE_SURVEY_CACHE or "
                        "~/.cache/sparse_survey)")
    p.add_argument("--compile", action="store_true", help="compile the model (torch.compile)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_imp(args: argparse.Namespace) -> int:
    from . import lottery

    b, device = budget(args), device_of(args.device)
    data = load_data(args, b)
    model = fresh_model(b.model, b.width, data[0].shape, len(data[0].classes), args.seed, device)
    print(f"IMP on {b.model} (width {b.width:g}), {data[0].name} ({len(data[0])} training "
          f"images): compression {args.compression:g} in {args.iterations} rounds, rewind to "
          f"{args.rewind}, {b.recipe.epochs} epochs a round, device {device}")
    options = {"seed": args.seed, "device": device, "progress": not args.no_progress,
               "compile": args.compile, "precision": b.precision}
    result = lottery.imp(model, data, args.compression, args.iterations, b.recipe,
                         rewind=args.rewind, cache_dir=args.cache_dir, **options)
    print(f"{'round':>5} {'density':>9} {'params':>8} {'FLOPs':>8} {'test acc':>9} "
          f"{'best acc':>9} {'time':>8}")
    for r in result.rounds:
        print(f"{r['round']:5d} {r['density']:9.4f} {r['remaining_params']:8.4f} "
              f"{r['remaining_flops']:8.4f} {r['test_acc']:9.4f} {r['best_test_acc']:9.4f} "
              f"{r['seconds']:7.1f}s" + ("  (from the cache)" if r["cached"] else ""))
    if args.controls:
        for name, accuracy in lottery.controls(result, data, b.recipe, **options).items():
            print(f"{name:>18}: test accuracy {accuracy:.4f}")
    return 0


# ------------------------------------------------------------------------------------ sweep

def add_sweep(commands) -> None:
    p = command(commands, "sweep", run_sweep, "run a grid of configurations into the results store",
                "Run every configuration of a grid at a preset that is not done yet (finished and "
                "diverged runs are kept; failed runs and broken records are run again), with a "
                "progress bar. Exits 1 when a run failed.")
    p.add_argument("--preset", required=True, choices=("auto", *PRESETS),
                   help="training budget (auto: survey on a GPU, laptop on a CPU)")
    p.add_argument("--grid", default="survey",
                   help="'survey' (5 one-shot methods and IMP with 2, 3, 4 rounds at the six "
                        "compressions), or a YAML/JSON file or inline mapping ('{methods: [snip],"
                        " compressions: [1], imp_iterations: []}') with the lists methods "
                        "(dense, set, rigl and static too), compressions, imp_iterations, seeds "
                        "(missing: the survey's) and any of the run fields scope, iterations "
                        "(scoring rounds), prune_batches, prune_batch_size, bn_mode, rounding "
                        "(one-shot runs), "
                        "rewind (IMP runs), control (reinit, shuffle; invert, invert_layer for "
                        "one-shot runs), "
                        "precision (default: %(default)s)")
    p.add_argument("--seeds", type=count_arg, default=None,
                   help="run seeds 0 .. N-1 (default: the grid's seeds)")
    p.add_argument("--backend", default="local", choices=("local", "ray"),
                   help="run here, or one Ray task per run (default: %(default)s)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--results", default="results", type=folder_arg,
                   help="store root (default: %(default)s)")
    p.add_argument("--device", default=None, type=device_arg,
                   help="torch device (default: cuda if any)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train through torch.compile, compiled once per architecture "
                        "(default: on CUDA only)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="bf16, fp32, or auto: bf16 where the device does bf16 arithmetic "
                        "(default: the preset's); part of each run's key")
    p.add_argument("--time-budget", type=positive_seconds, default=None, metavar="SECONDS",
                   help="start no run that would end past this many seconds (estimated from "
                        "finished runs); rerun the command to continue (local backend)")
    add_data_and_cache_options(p)
    p.add_argument("--retry-diverged", action="store_true",
                   help="run diverged runs again too (failed runs always are)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_data_and_cache_options(p: argparse.ArgumentParser) -> None:
    """Where a command that runs stored runs finds CIFAR-10 and keeps IMP's cache."""
    p.add_argument("--data-root", default=None,
                   help="where CIFAR-10 is (default: $SPARSE_SURVEY_DATA, then a download)")
    p.add_argument("--cache-dir", default=None, type=folder_arg,
                   help="IMP dense runs and checkpoints")


def run_sweep(args: argparse.Namespace) -> int:
    from .experiment import trainings_left
    from .report import first_line
    from .store import Store
    from .sweeps import estimate_seconds, grid_configs, load_grid, past_runs, sweep

    preset = resolve_preset(args.preset)
    grid = load_grid(args.grid)
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    chosen = {"precision": args.precision} if args.precision else {}
    configs = grid_configs(grid, preset, seeds, device=args.device, compile=args.compile,
                           **chosen)
    if not configs:
        raise ValueError(f"the grid {args.grid} has no runs (no method, compression or seed)")
    store = Store(args.results)
    todo = sum(not store.done(c, args.retry_diverged) for c in configs)
    budget_text = f", time budget {args.time_budget:g} s" if args.time_budget else ""
    print(f"{len(configs)} runs in the grid at preset {preset}, {todo} still to do"
          f"{budget_text}; records in {store.root / preset}")
    start = time.perf_counter()
    try:
        records = sweep(configs, store, args.backend, args.address, args.cache_dir,
                        progress=not args.no_progress, time_budget=args.time_budget,
                        data_root=args.data_root, retry_diverged=args.retry_diverged,
                        other_precision=bool(args.precision) or "precision" in grid)
    except KeyboardInterrupt:
        done = todo - sum(not store.done(c, args.retry_diverged) for c in configs)
        print(f"\ninterrupted after {time.perf_counter() - start:.0f} s: {done} run(s) finished "
              "and stored in this call, the run in flight dropped; run the same command again "
              "to resume", file=sys.stderr)
        return 130
    bad = [r for r in records if r["status"] != "finished"]
    print(f"done: {len(records)} run(s) in this call, {time.perf_counter() - start:.0f} s, "
          f"{len(bad)} of them diverged or failed")
    for r in bad:
        print(f"  {r['label']} c={r['config']['compression']:g} seed {r['config']['seed']}: "
              f"{r['status']}: {first_line(r['error'])}")
    left = [c for c in configs if not store.done(c, args.retry_diverged)]
    elsewhere = sum(store.claimed(c) for c in left)
    if elsewhere:
        print(f"{elsewhere} run(s) were running in another sweep on this store and were left "
              "to it")
    if left:
        past = past_runs(store, left)
        estimates = [estimate_seconds(c, records, past,
                                      left=trainings_left(c, args.cache_dir, args.data_root))
                     for c in left]
        known = [e for e in estimates if e is not None]
        how_long = ("no time estimate yet (no finished run of their kind on this device)"
                    if not known else f"about {sum(known) / 60:.1f} minutes on this device"
                    + ("" if len(known) == len(left) else
                       f" for the {len(known)} that can be estimated"))
        print(f"left for the next call: {len(left)} runs, {how_long}; run the same command "
              "again to continue")
    failed = sum(r["status"] == "failed" for r in records)
    if failed:
        print(f"{failed} run(s) failed: their records keep the traceback; fix the cause and run "
              "the same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------- report

def add_report(commands) -> None:
    p = command(commands, "report", run_report, "tables and figures of a preset's stored records",
                "Write report.md (the survey's tables from stored records, beside the survey's "
                "numbers) and PNG/SVG figures.")
    p.add_argument("--preset", required=True, help="which preset's records")
    p.add_argument("--results", default="results", help="store root (default: %(default)s)")
    p.add_argument("--out", default=None, type=folder_arg,
                   help="output folder (default: reports/PRESET)")
    p.add_argument("--compression", type=compression_arg, default=1.0,
                   help="compression of the per-layer figures (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="whose runs: fp32, bf16, or auto: the precision the preset's runs take "
                        "on this machine (default: %(default)s)")


def run_report(args: argparse.Namespace) -> int:
    from .report import at_precision, nearest_compression, survey_runs, write_report
    from .store import Store

    store = Store(args.results)
    every = store.records(args.preset)
    precision, records, others = at_precision(every, args.preset, args.precision)
    if not any(r["status"] == "finished" for r in records):
        stale = len(store.records(args.preset, stale=True)) - len(every)
        why = (f"it holds finished runs in {' and '.join(others)}: --precision {others[0]} "
               "reports them" if others else
               f"{stale} record(s) there were made under an earlier definition of the preset "
               "(its model, data or recipe changed since); run the sweep again" if stale else
               f"{len(records)} record(s) there, none finished; run a sweep first")
        print(f"error: no finished {precision} runs of preset {args.preset} in "
              f"{store.root / args.preset}: {why}", file=sys.stderr)
        return 2
    out = args.out or f"reports/{args.preset}"
    drawn = nearest_compression(survey_runs(records), args.compression)
    if not math.isclose(drawn, args.compression):
        print(f"no finished run at compression {args.compression:g}: the per-layer figures "
              f"show the nearest stored one, {drawn:g}")
    path = write_report(records, out, f"Results at the {args.preset} preset, {precision}", drawn)
    print(f"wrote {path} and its figures ({len(records)} records)")
    return 0


# ------------------------------------------------------------------------------------ bench

def add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    benches = bench.add_subparsers(dest="bench", required=True)

    def model_options(p, width: float | None, width_help: str) -> None:
        p.add_argument("--model", default="vgg16", choices=models.MODELS,
                       help="model (default: %(default)s)")
        p.add_argument("--width", type=float, default=width, help=width_help)

    train = benches.add_parser(
        "train", help="training images/s: a common DataLoader baseline, this loop in each "
                      "precision and layout beside its bare step, and compiled",
        description="Training images/s on the same images: a plain DataLoader baseline (CPU "
                    "transforms, fp32, batch 128) and this project's loop at each batch size in "
                    "fp32 and (where the device has it) bf16, NCHW and channels_last, each beside "
                    "its bare training step, and compiled in the device's default setup; also as "
                    "a fraction of a measured matrix-product peak of the row's dtype. Stores the "
                    "figures in OUT/train-MODEL-DEVICE.json.")
    model_options(train, None, "width multiplier (default: 1 on a GPU, 0.25 on a CPU)")
    train.add_argument("--images", type=count_arg, default=None,
                       help="training images per measurement (default: 50000 on a GPU, 10000 "
                            "on a CPU)")
    train.add_argument("--batch-size", type=count_arg, action="append", default=None,
                       help="batch size of this loop, repeatable (default: 128 and 512)")
    train.add_argument("--no-compile", action="store_true",
                       help="measure this loop eager only (compiling takes minutes on a CPU)")
    train.add_argument("--device", default=None, type=device_arg,
                       help="torch device (default: cuda if any)")
    train.add_argument("--dataset", default="cifar10", choices=datasets.DATASETS,
                       help="data set (default: %(default)s)")
    train.add_argument("--data-root", default=None, help="where CIFAR-10 is (see train)")
    train.add_argument("--out", default="results/bench", type=folder_arg,
                       help="folder of the stored record (default: %(default)s)")
    prune = benches.add_parser(
        "prune", help="scoring and pruning time of every method",
        description="Time each method's scoring (one round) and full pruning (100 rounds for "
                    "SynFlow) at several compressions on a model, on the CPU and on a GPU when "
                    "one is available. Stores the figures in OUT/prune-MODEL-DEVICE.json.")
    model_options(prune, 1.0, "width multiplier (default: %(default)s)")
    prune.add_argument("--compression", type=compression_arg, action="append", default=None,
                       help="compression to prune to, repeatable (default: 0.05, 1 and 2)")
    prune.add_argument("--device", action="append", default=None, type=device_arg,
                       help="device to time on, repeatable (default: cpu, and cuda if any)")
    prune.add_argument("--out", default="results/bench", type=folder_arg,
                       help="folder of the stored record (default: %(default)s)")
    sparse = benches.add_parser(
        "sparse", help="dense masked vs CSR sparse forward time by density",
        description="Time a pruned model's forward pass dense (masked) and with CSR sparse "
                    "kernels at the survey's compressions and 3, at batch 1 and a larger batch.")
    model_options(sparse, 1.0, "width multiplier (default: %(default)s)")
    sparse.add_argument("--method", default="rand", choices=pruners.METHODS,
                        help="pruning method (default: %(default)s: equal density per layer)")
    sparse.add_argument("--batch", type=count_arg, action="append", default=None,
                        help="batch size, repeatable (default: 1 and 64)")
    sparse.add_argument("--repeats", type=count_arg, default=5,
                        help="timed passes per measurement (default: %(default)s)")
    sparse.add_argument("--device", default="cpu", type=device_arg,
                        help="device (default: %(default)s)")
    allocator = benches.add_parser(
        "allocator", help="inference time after different allocation histories, pinned or not",
        description="Time a model's fp32 inference on the CPU in new processes that first "
                    "allocated differently (fresh, churned), with glibc's allocator pinned as "
                    "the profiler pins it and unpinned; prints each one's fastest and median "
                    "pass and its page faults. Stores the figures in "
                    "OUT/allocator-MODEL-DEVICE.json.")
    model_options(allocator, 0.25, "width multiplier (default: %(default)s)")
    allocator.add_argument("--processes", type=count_arg, default=5,
                           help="new processes per history and setting (default: %(default)s)")
    allocator.add_argument("--out", default="results/bench", type=folder_arg,
                           help="folder of the stored record (default: %(default)s)")
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from .bench import bench_allocator, bench_prune, bench_sparse, bench_train, device_slug, save

    if args.bench == "sparse":
        bench_sparse(args.model, args.width, args.method,
                     batch_sizes=tuple(args.batch or (1, 64)), repeats=args.repeats,
                     device=args.device)
        return 0
    if args.bench == "allocator":
        record = bench_allocator(args.model, args.width, args.processes)
    elif args.bench == "prune":
        record = bench_prune(args.model, args.width, tuple(args.compression or (0.05, 1, 2)),
                             args.device)
    else:
        record = bench_train(args.model, args.width, args.dataset, args.data_root, args.images,
                             tuple(args.batch_size or (128, 512)), args.device,
                             compiled=(False,) if args.no_compile else (False, True))
    device = torch.device(record["environment"]["device"])
    path = save(record, args.out, f"{args.bench}-{args.model}-{device_slug(device)}")
    print(f"stored in {path}")
    return 0


# --------------------------------------------------------------------------------- worklist

def add_worklist(commands) -> None:
    worklist = commands.add_parser(
        "worklist", help="work through the work list within a time budget; carry its records",
        description="The work list (worklist.yaml) orders what scarce compute runs: sweeps and "
                    "benchmarks. 'run' works through it within a time budget and can pack what "
                    "it made into one archive; 'unpack' checks such an archive's records and "
                    "installs them; 'status' says what is done.")
    verbs = worklist.add_subparsers(dest="verb", required=True)
    for verb, help in (("run", "run the work list's next work within a time budget"),
                       ("status", "how much of each entry is done"),
                       ("unpack", "check an archive's records and install them")):
        p = verbs.add_parser(verb, help=help, description=help)
        if verb == "unpack":
            p.add_argument("archive", help="a tar.gz made by 'worklist run --pack'")
        else:
            p.add_argument("--worklist", default=None,
                           help="the work list file (default: worklist.yaml in the checkout)")
            p.add_argument("--device", default=None, type=device_arg,
                           help="torch device (default: cuda if any)")
        p.add_argument("--results", default="results", type=folder_arg,
                       help="store root (default: %(default)s)")
        if verb == "run":
            p.add_argument("--time-budget", type=positive_seconds, required=True,
                           metavar="SECONDS", help="start no work that would end past this")
            p.add_argument("--pack", default=None, metavar="ARCHIVE",
                           help="write the records this call made into this tar.gz, after "
                                "every entry that made some")
            add_data_and_cache_options(p)
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
    worklist.set_defaults(run=run_worklist_command)


def print_status(rows: list[dict]) -> None:
    """One line per work-list entry: done of runs, name, and the kind of device it waits for
    when it is not this one."""
    for row in rows:
        elsewhere = f"  ({row['only_on']} only: not run here)" if row["only_on"] else ""
        print(f"{row['done']:4d} of {row['runs']:4d} done  {row['name']}{elsewhere}")


def run_worklist_command(args: argparse.Namespace) -> int:
    from .store import Store
    from .worklist import WORKLIST, load_worklist, pack, run_worklist, snapshot, status, unpack

    store = Store(args.results)
    if args.verb == "unpack":
        done = unpack(args.archive, store.root)
        for kind in ("installed", "kept", "refused"):
            print(f"{kind}: {len(done[kind])}" + "".join(f"\n  {p}" for p in done[kind]))
        return 1 if done["refused"] else 0
    entries = load_worklist(args.worklist or WORKLIST)
    if args.verb == "status":
        print_status(status(entries, store, args.device))
        return 0
    before = snapshot(store.root)

    def packed() -> None:
        if args.pack:
            names = pack(store.root, before, args.pack)
            print(f"packed {len(names)} record(s) into {args.pack}", flush=True)

    start = time.perf_counter()
    made = run_worklist(entries, store, args.time_budget, args.device, args.cache_dir,
                        args.data_root, progress=not args.no_progress, after_each=packed)
    packed()
    print(f"made {len(made)} run record(s) in {time.perf_counter() - start:.0f} s")
    print_status(status(entries, store, args.device))
    return 0
