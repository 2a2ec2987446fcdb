"""The command line: ``python -m sparse_survey <command> ...`` (``--help`` on each command)."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import data as datasets
from . import masks, models, pruners
from .data import Loader
from .experiment import PRESETS
from .train import SCHEDULES, Recipe, default_device, fit


def add_data_options(p: argparse.ArgumentParser, dataset: str = "cifar10") -> None:
    p.add_argument("--dataset", default=dataset, choices=datasets.DATASETS,
                   help="data set (default: %(default)s)")
    p.add_argument("--data-root", default=None,
                   help="where CIFAR-10 is: a torchvision folder, an ImageFolder folder, or a .zip "
                        "or .tar.gz of one (default: $SPARSE_SURVEY_DATA, then a download)")
    p.add_argument("--limit-per-class", type=int, default=None, metavar="N",
                   help="use only N images per class in each split (default: all)")


def add_model_options(p: argparse.ArgumentParser, model: str = "vgg16") -> None:
    p.add_argument("--model", default=model, choices=models.MODELS,
                   help="model (default: %(default)s)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel width multiplier (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data order")
    p.add_argument("--device", default=None, type=device_arg,
                   help="torch device, e.g. cpu or cuda (default: cuda when available)")


def add_bench_model_options(p: argparse.ArgumentParser, width: float | None = 1.0,
                            width_help: str = "width multiplier (default: %(default)s)") -> None:
    p.add_argument("--model", default="vgg16", choices=models.MODELS,
                   help="model (default: %(default)s)")
    p.add_argument("--width", type=float, default=width, help=width_help)


def add_pruning_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--method", required=required, default=None, choices=pruners.METHODS,
                   help="pruning method" + ("" if required else " (default: none, dense)"))
    p.add_argument("--compression", type=float, required=required, default=0.0,
                   help="compression c: keep a fraction 10^-c of the prunable weights")
    p.add_argument("--scope", default="global", choices=pruners.SCOPES,
                   help="one threshold for all layers, or per layer (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=None,
                   help="pruning rounds (default: 100 for synflow, 1 otherwise)")
    p.add_argument("--invert", action="store_true", help="keep the lowest scores instead")
    p.add_argument("--batches", type=int, default=1,
                   help="training batches that snip and grasp score on (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="images per scoring batch (default: %(default)s)")


def add_recipe_options(p: argparse.ArgumentParser) -> None:
    defaults = Recipe()
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=defaults.lr,
                   help="peak learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=defaults.momentum,
                   help="SGD momentum, Nesterov (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="weight decay (default: %(default)s)")
    p.add_argument("--schedule", default="onecycle", choices=SCHEDULES,
                   help="learning-rate schedule; multistep drops x0.1 at 1/2 and 3/4 of the "
                        "epochs (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def recipe_from(args: argparse.Namespace) -> Recipe:
    return Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  momentum=args.momentum, weight_decay=args.weight_decay,
                  schedule=args.schedule, milestones=(args.epochs / 2, args.epochs * 3 / 4))


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


def rewind_point(text: str) -> str | int:
    if text == "init":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'init' or a training step, got {text!r}")


def build_for(args: argparse.Namespace, train) -> torch.nn.Module:
    """The model named by the options, shaped for the data set, initialised from --seed."""
    torch.manual_seed(args.seed)
    c, h, _ = train.shape
    return models.build(args.model, len(train.classes), c, args.width, image_size=h)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m sparse_survey", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a dense model and report its accuracy",
                                description="Train a dense model; print test accuracy and "
                                            "images/s per epoch.")
    add_model_options(train)
    add_data_options(train)
    add_recipe_options(train)
    train.add_argument("--compile", action="store_true", help="compile the model (torch.compile)")

    prune = commands.add_parser(
        "prune", help="prune a freshly initialised model and print its per-layer densities",
        description="Prune a freshly initialised model by one method; print each layer's kept "
                    "weights and density, the totals, and how long scoring took.")
    add_model_options(prune)
    add_data_options(prune)
    add_pruning_options(prune, required=True)

    profile = commands.add_parser(
        "profile", help="FLOPs, parameters, storage, inference time and memory of a pruned model",
        description="Prune a freshly initialised model (or leave it dense when no --method is "
                    "given) and print its profile record.")
    add_model_options(profile)
    add_data_options(profile)
    add_pruning_options(profile, required=False)
    profile.add_argument("--eval-batch-size", type=int, default=256,
                         help="inference batch size (default: %(default)s)")
    profile.add_argument("--repeats", type=int, default=5,
                         help="timed passes over the test set (default: %(default)s)")
    profile.add_argument("--no-memory", action="store_true",
                         help="skip the CPU-memory probe (a fresh subprocess)")

    imp = commands.add_parser(
        "imp", help="iterative magnitude pruning with rewinding (lottery tickets)",
        description="Train, then k times: prune by global magnitude to d^(r/k), rewind the "
                    "survivors, retrain. Prints one row per round; the dense training and each "
                    "round are cached, so a rerun resumes.")
    add_model_options(imp)
    add_data_options(imp)
    add_recipe_options(imp)
    imp.add_argument("--compression", type=float, required=True,
                     help="final compression c (density 10^-c)")
    imp.add_argument("--iters", type=int, default=4,
                     help="prune rounds, the survey's 'IMP (k Iters)' (default: %(default)s)")
    imp.add_argument("--rewind", type=rewind_point, default="init",
                     help="rewind to 'init' or to training step j (default: %(default)s)")
    imp.add_argument("--controls", action="store_true",
                     help="also train the random-reinit and layerwise-shuffle controls")
    imp.add_argument("--cache-dir", default=None,
                     help="dense runs and checkpoints (default: $SPARSE_SURVEY_CACHE or "
                          "~/.cache/sparse_survey)")

    sweep = commands.add_parser(
        "sweep", help="run a grid of configurations into the results store",
        description="Run every configuration of a grid at a preset that is not done yet "
                    "(finished and diverged runs are kept; failed runs and broken records are run "
                    "again), with a progress bar. Exits 1 when a run failed.")
    sweep.add_argument("--preset", required=True, choices=PRESETS, help="training budget")
    sweep.add_argument("--grid", default="survey",
                       help="'survey' (5 one-shot methods and IMP with 2, 3, 4 rounds at the six "
                            "compressions) or a YAML/JSON file with methods, compressions, "
                            "imp_iters, seeds (default: %(default)s)")
    sweep.add_argument("--seeds", type=int, default=None,
                       help="run seeds 0 .. N-1 (default: the grid's seeds)")
    sweep.add_argument("--backend", default="local", choices=("local", "ray"),
                       help="run here, or one Ray task per run (default: %(default)s)")
    sweep.add_argument("--address", default=None,
                       help="Ray cluster address (default: start a local Ray instance)")
    sweep.add_argument("--results", default="results", help="store root (default: %(default)s)")
    sweep.add_argument("--device", default=None, type=device_arg,
                       help="torch device (default: cuda if any)")
    sweep.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="train through torch.compile, compiled once per architecture "
                            "(default: on CUDA only)")
    sweep.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                       help="start no run that would end past this many seconds (estimated "
                            "from finished runs); rerun the command to continue (local backend)")
    sweep.add_argument("--data-root", default=None,
                       help="where CIFAR-10 is (default: $SPARSE_SURVEY_DATA, then a download)")
    sweep.add_argument("--cache-dir", default=None, help="IMP dense runs and checkpoints")
    sweep.add_argument("--retry-diverged", action="store_true",
                       help="run diverged runs again too (failed runs always are)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")

    report = commands.add_parser(
        "report", help="tables and figures of a preset's stored records",
        description="Write report.md (the survey's tables from stored records, beside the "
                    "survey's numbers) and PNG/SVG figures.")
    report.add_argument("--preset", required=True, help="which preset's records")
    report.add_argument("--results", default="results", help="store root (default: %(default)s)")
    report.add_argument("--out", default=None, help="output folder (default: reports/PRESET)")
    report.add_argument("--compression", type=float, default=1.0,
                        help="compression of the per-layer figures (default: %(default)s)")

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_commands = bench.add_subparsers(dest="bench", required=True)
    bench_train = bench_commands.add_parser(
        "train", help="training images/s: a common DataLoader baseline, this loop eager and "
                      "compiled",
        description="Training images/s on the same images: a plain DataLoader baseline (CPU "
                    "transforms, fp32, batch 128) and this project's loop, eager and compiled, "
                    "at each batch size, also as a fraction of the device's peak FLOP/s. Stores "
                    "the figures in OUT/train-MODEL-DEVICE.json.")
    add_bench_model_options(bench_train, None, "width multiplier (default: 1 on a GPU, 0.25 on "
                                               "a CPU)")
    bench_train.add_argument("--images", type=int, default=None,
                             help="training images per measurement (default: 50000 on a GPU, "
                                  "10000 on a CPU)")
    bench_train.add_argument("--batch-size", type=int, action="append", default=None,
                             help="batch size of this loop, repeatable (default: 128 and 512)")
    bench_train.add_argument("--no-compile", action="store_true",
                             help="measure this loop eager only (compiling takes minutes on a "
                                  "CPU)")
    bench_train.add_argument("--device", default=None, type=device_arg,
                             help="torch device (default: cuda if any)")
    bench_train.add_argument("--dataset", default="cifar10", choices=datasets.DATASETS,
                             help="data set (default: %(default)s)")
    bench_train.add_argument("--data-root", default=None, help="where CIFAR-10 is (see train)")
    bench_train.add_argument("--out", default="results/bench",
                             help="folder of the stored record (default: %(default)s)")
    bench_prune = bench_commands.add_parser(
        "prune", help="scoring and pruning time of every method",
        description="Time each method's scoring (one round) and full pruning (100 rounds for "
                    "SynFlow) at several compressions on a model, on the CPU and on a GPU when "
                    "one is available. Stores the figures in OUT/prune-MODEL-DEVICE.json.")
    add_bench_model_options(bench_prune)
    bench_prune.add_argument("--compression", type=float, action="append", default=None,
                             help="compression to prune to, repeatable (default: 0.05, 1 and 2)")
    bench_prune.add_argument("--device", action="append", default=None, type=device_arg,
                             help="device to time on, repeatable (default: cpu, and cuda if any)")
    bench_prune.add_argument("--out", default="results/bench",
                             help="folder of the stored record (default: %(default)s)")
    bench_sparse = bench_commands.add_parser(
        "sparse", help="dense masked vs CSR sparse forward time by density",
        description="Time a pruned model's forward pass dense (masked) and with CSR sparse "
                    "kernels at the survey's compressions and 3, at batch 1 and a larger batch.")
    add_bench_model_options(bench_sparse)
    bench_sparse.add_argument("--method", default="rand", choices=pruners.METHODS,
                              help="pruning method (default: %(default)s: equal density per "
                                   "layer)")
    bench_sparse.add_argument("--batch", type=int, action="append", default=None,
                              help="batch size, repeatable (default: 1 and 64)")
    bench_sparse.add_argument("--repeats", type=int, default=5,
                              help="timed passes per measurement (default: %(default)s)")
    bench_sparse.add_argument("--device", default="cpu", type=device_arg,
                              help="device (default: %(default)s)")
    return top


def run_train(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    train, test = datasets.load(args.dataset, args.data_root, args.limit_per_class)
    model = build_for(args, train)
    recipe = recipe_from(args)
    print(f"{args.model} (width {args.width}) on {train.name}: {len(train)} training, "
          f"{len(test)} test images, device {device}")
    start = time.perf_counter()
    history = fit(model, train, recipe, test, device=device, seed=args.seed,
                  compile=args.compile, progress=not args.no_progress)
    for e in history.epochs:
        print(f"epoch {e['epoch']:3d}  loss {e['train_loss']:.4f}  train acc {e['train_acc']:.4f}"
              f"  test acc {e['test_acc']:.4f}  {e['images_per_s']:8.0f} images/s")
    if history.diverged:
        print(f"diverged: {history.error}", file=sys.stderr)
        return 1
    print(f"final test accuracy {history.final['test_acc']:.4f} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def pruned_model(args: argparse.Namespace, device: torch.device, train=None):
    """A freshly initialised model pruned as the options say, and the seconds pruning took.
    SNIP and GraSP score on the first ``--batches`` shuffled, augmented training batches."""
    channels, height, _ = datasets.SHAPES[args.dataset]
    batches = None
    if args.method is not None and args.method not in pruners.DATA_FREE:
        if train is None:
            train, _ = datasets.load(args.dataset, args.data_root, args.limit_per_class)
        loader = Loader(train, args.batch_size, device, train=True, seed=args.seed)
        batches = [batch for batch, _ in zip(loader, range(args.batches))]
    torch.manual_seed(args.seed)
    model = models.build(args.model, datasets.NUM_CLASSES[args.dataset], channels, args.width,
                         image_size=height).to(device)
    start = time.perf_counter()
    if args.method is not None:
        pruners.prune(model, args.method, args.compression, batches, args.scope,
                      args.iterations, args.invert, seed=args.seed,
                      input_shape=datasets.SHAPES[args.dataset])
    return model, time.perf_counter() - start


def run_prune(args: argparse.Namespace) -> int:
    device = torch.device(args.device) if args.device else default_device()
    model, seconds = pruned_model(args, device)
    rounds = args.iterations or pruners.DEFAULT_ITERATIONS.get(args.method, 1)
    print(f"{args.method} on {args.model} (width {args.width}), compression {args.compression} "
          f"(density {10 ** -args.compression:.4g}), {args.scope} scope, {rounds} round(s)")
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


def run_imp(args: argparse.Namespace) -> int:
    from . import lottery

    device = torch.device(args.device) if args.device else default_device()
    data = datasets.load(args.dataset, args.data_root, args.limit_per_class)
    model = build_for(args, data[0])
    recipe = recipe_from(args)
    print(f"IMP on {args.model} (width {args.width}), {data[0].name} ({len(data[0])} training "
          f"images): compression {args.compression:g} in {args.iters} rounds, rewind to "
          f"{args.rewind}, {args.epochs} epochs a round, device {device}")
    result = lottery.imp(model, data, args.compression, args.iters, recipe, args.rewind,
                         args.seed, device, args.cache_dir, progress=not args.no_progress)
    if result.dense_cached:
        print("(dense training, and any finished rounds, reused from the cache)")
    print(f"{'round':>5} {'density':>9} {'params':>8} {'FLOPs':>8} {'test acc':>9} "
          f"{'best acc':>9} {'time':>8}")
    for r in result.rounds:
        print(f"{r['round']:5d} {r['density']:9.4f} {r['remaining_params']:8.4f} "
              f"{r['remaining_flops']:8.4f} {r['test_acc']:9.4f} {r['best_test_acc']:9.4f} "
              f"{r['seconds']:7.1f}s")
    if args.controls:
        for name, accuracy in lottery.controls(result, data, recipe, args.seed, device,
                                               progress=not args.no_progress).items():
            print(f"{name:>18}: test accuracy {accuracy:.4f}")
    return 0


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

    device = torch.device(args.device) if args.device else default_device()
    train, test = datasets.load(args.dataset, args.data_root, args.limit_per_class)
    model, _ = pruned_model(args, device, train)
    what = f"{args.method} at compression {args.compression:g}" if args.method else "dense"
    print(f"profile of {args.model} (width {args.width}), {what}, on {len(test)} test images "
          f"of {test.name}")
    record = profile(model, test, device, args.eval_batch_size, args.repeats,
                     memory=not args.no_memory)
    for key, value in record.items():
        print(f"  {key:28} {format_value(key, value)}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .experiment import Store, estimate_seconds, grid_configs, load_grid, past_runs, sweep
    from .report import first_line

    grid = load_grid(args.grid)
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    configs = grid_configs(grid, args.preset, seeds, device=args.device, compile=args.compile)
    store = Store(args.results)
    todo = sum(not store.done(c) for c in configs)
    budget = f", time budget {args.time_budget:g} s" if args.time_budget else ""
    print(f"{len(configs)} runs in the grid at preset {args.preset}, {todo} still to do{budget}; "
          f"records in {store.root / args.preset}")
    start = time.perf_counter()
    records = sweep(configs, store, args.backend, args.address, args.cache_dir,
                    progress=not args.no_progress, time_budget=args.time_budget,
                    data_root=args.data_root, retry_diverged=args.retry_diverged)
    bad = [r for r in records if r["status"] != "finished"]
    print(f"done: {len(records)} run now in {time.perf_counter() - start:.0f} s, {len(bad)} of "
          "them diverged or failed")
    for r in bad:
        print(f"  {r['label']} c={r['config']['compression']:g} seed {r['config']['seed']}: "
              f"{r['status']}: {first_line(r['error'])}")
    left = [c for c in configs if not store.done(c)]
    if left:
        past = past_runs(store, left)
        estimates = [estimate_seconds(c, records, past) for c in left]
        known = [e for e in estimates if e is not None]
        print(f"left for the next call: {len(left)} runs, about {sum(known) / 60:.1f} minutes "
              f"on this device{'' if len(known) == len(left) else ' (some not estimated)'}; "
              "run the same command again to continue")
    failed = sum(r["status"] == "failed" for r in records)
    if failed:
        print(f"{failed} run(s) failed: their records keep the traceback; fix the cause and run "
              "the same command again to retry them", file=sys.stderr)
    return 1 if failed else 0


def run_report(args: argparse.Namespace) -> int:
    from .experiment import Store
    from .report import write_report

    store = Store(args.results)
    records = store.records(args.preset)
    if not any(r["status"] == "finished" for r in records):
        stale = len(store.records(args.preset, stale=True)) - len(records)
        why = (f"{stale} record(s) there were made under an earlier definition of the preset "
               "(its model, data or recipe changed since); run the sweep again" if stale else
               f"{len(records)} record(s) there, none finished; run a sweep first")
        print(f"error: no finished runs of preset {args.preset} in {store.root / args.preset}: "
              f"{why}", file=sys.stderr)
        return 2
    out = args.out or f"reports/{args.preset}"
    path = write_report(records, out, f"Results at the {args.preset} preset",
                        args.compression)
    print(f"wrote {path} and its figures ({len(records)} records)")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import bench_prune, bench_sparse, bench_train, device_slug, save

    if args.bench == "sparse":
        bench_sparse(args.model, args.width, args.method,
                     batch_sizes=tuple(args.batch or (1, 64)), repeats=args.repeats,
                     device=args.device)
        return 0
    if args.bench == "prune":
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        commands = {"train": run_train, "prune": run_prune, "imp": run_imp,
                    "profile": run_profile, "sweep": run_sweep, "report": run_report,
                    "bench": run_bench}
        return commands[args.command](args)
    except (OSError, ValueError, FloatingPointError) as error:  # missing or damaged data too
        print(f"error: {error}", file=sys.stderr)
        return 2
