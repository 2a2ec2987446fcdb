"""Benchmarks that print figures (nothing here asserts a speed) and store them.

``bench train`` measures training images/s on the same images, in one process: a plain baseline
written the common way (a torchvision ``DataLoader`` over PIL images with CPU transforms: random
crop with 4-pixel padding, horizontal flip, ``ToTensor``, ``Normalize``; fp32, batch 128), and this
project's loop (:func:`sparse_survey.train.fit`: the whole data set on the device, augmentation
there in batches) at batch 128 and 512 in each precision and layout (fp32 and, where the device
does bf16 arithmetic, bf16; NCHW and channels_last), eager, and compiled in the device's default
setup. Beside each loop stands its bare step (forward, backward and SGD step on one fixed batch
already on the device, same precision, layout and batch): the loop's share of it is what the data
path, the mask re-zeroing and the schedule cost. Each figure is also given as a fraction of the
device's peak: the achieved training FLOP/s (the model's forward multiply-accumulates per image x
2 FLOPs x 3, forward plus backward) over the peak of the row's own dtype, measured on the spot
(:func:`peak_flops`: the fastest of several matrix products at each of several sizes, with the
loop's threads), and over the datasheet's dense bf16 peak for the GPUs named in
:data:`DATASHEET_BF16_FLOPS`. The FLOPs are those of direct convolution; a library that convolves
with fewer multiplications (Winograd) can go faster than every matrix product, and then that row
is the peak (:func:`set_fractions_of_peak`): no fraction exceeds 100 %. On a CPU it also trains
alone and beside one busy process it starts itself, with the thread count adapting to the
machine and fixed (:func:`contention`): the slowdown is the figure.

``bench prune`` times each method's scoring (one round) and its full pruning (its default
rounds: 100 for SynFlow) at compressions 0.05, 1 and 2 side by side, on the CPU and on a GPU when
one is available, with one batch of 128 random CIFAR-shaped inputs for SNIP and GraSP.

``bench sparse`` times a pruned model's forward pass as a masked dense model (the normal kernels)
and with CSR sparse kernels (:mod:`sparse_survey.sparse`), at each compression, at batch 1
(latency) and at a larger batch (throughput), and names the density below which sparse pays.

``bench allocator`` times one model's inference (:func:`sparse_survey.profile.inference_time`) in
new processes whose allocation histories differ, with glibc's allocator pinned as the profiler pins
it and left as glibc set it: the pinned timings should not depend on the history, and no timed
pass should fault a page in.

``bench train``, ``bench prune`` and ``bench allocator`` store their figures as JSON under
``results/bench/``, named
after the benchmark, the model and the device, with each timing's CPU time, waiting and load (see
:func:`sparse_survey.profile.timed`) and whether other work shared the machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from . import data as datasets
from . import models, pruners, threads
from .experiment import environment
from .profile import contended, device_name, flops, timed, timings
from .sparse import sparsify
from .store import write_json
from .train import (
    Recipe,
    autocast,
    bf16_supported,
    device_of,
    fit,
    ieee_fp32,
    uses_channels_last,
)

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s, without sparsity), by a part of
# the name torch.cuda.get_device_name gives.
DATASHEET_BF16_FLOPS = {"H100 80GB HBM3": 989.4e12, "H100 PCIe": 756.5e12, "H200": 989.4e12,
                        "A100": 312e12}


def device_slug(device: torch.device) -> str:
    """The device's name as a file-name part, e.g. ``nvidia-h100-80gb-hbm3``; for a CPU with
    the vector instructions torch dispatches to, e.g. ``amd-epyc-avx2``, because machines that
    share a model name can differ in them, and with them in every timing."""
    name = device_name(device)
    if device.type == "cpu":
        name += f" {torch.backends.cpu.get_cpu_capability()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or device.type


def save(record: dict, out: str | os.PathLike, name: str) -> Path:
    """Write a benchmark's record to ``out/<name>.json`` (atomically) and return the path."""
    return write_json(Path(out) / f"{name}.json", record)


class PILImages(torch.utils.data.Dataset):
    """An ImageSet served image by image as PIL images through torchvision transforms."""

    def __init__(self, data: datasets.ImageSet, transform):
        from PIL import Image

        pixels = data.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        if pixels.shape[-1] == 1:  # PIL takes grey images as (H, W)
            pixels = pixels[..., 0]
        self.images = [Image.fromarray(x) for x in pixels]
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline_images_per_s(model: nn.Module, data: datasets.ImageSet, device: torch.device,
                          batch_size: int = 128, workers: int = 2, warmup: int = 5,
                          epochs: int = 1) -> float:
    """Train ``epochs`` epochs the common way and return images/s over all but the first
    ``warmup`` batches."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(data.shape[1], padding=data.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    loader = torch.utils.data.DataLoader(PILImages(data, transform), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda")
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    seen, start, step = 0, None, 0
    for _ in range(epochs):
        for x, y in loader:
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seen, start = 0, time.perf_counter()
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
            step += 1
    if start is None:
        raise ValueError(f"{step} baseline batches are too few to measure after {warmup} warm-up "
                         "batches: give more images")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def bare_step_images_per_s(model: nn.Module, data: datasets.ImageSet, device: torch.device,
                           batch_size: int, precision: str, channels_last: bool,
                           steps: int = 30, warmup: int = 5) -> float:
    """Images/s of the bare training step: forward, backward and a Nesterov SGD step on one fixed
    batch, the loop's first (so in the loop's memory layout: a cropped batch comes out with
    channels_last strides even for an NCHW model), in ``precision``, after ``warmup`` steps;
    what the loop would reach if its data, masks and schedule cost nothing."""
    x, y = next(iter(datasets.Loader(data, batch_size, device, train=True,
                                     channels_last=channels_last)))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=layout).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    for step in range(warmup + steps):
        if step == warmup:
            _synchronized(device, lambda: None)
            start = time.perf_counter()
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _synchronized(device, lambda: None)
    return steps * batch_size / (time.perf_counter() - start)


# Square matrix products timed for the peak, by device type: large enough to leave the caches
# and the kernel launches behind, small enough to take seconds.
PEAK_SIZES = {"cpu": (512, 1024, 2048, 4096), "cuda": (4096, 8192, 16384)}


def peak_flops(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] | None = None,
               repeats: int = 5) -> dict:
    """The highest FLOP/s that ``n`` x ``n`` matrix products in ``dtype`` reach on ``device``:
    the fastest of ``repeats`` timed products (after one warm-up) at each of ``sizes``, with the
    threads torch has now, which are the training loop's. One size or a median is not a peak: a
    product too small for the caches' blocking, or a pass slowed by another process, would put
    the peak low and the fractions of it high. Returns ``{"flops": best, "size": its n,
    "per_size": {n: best}, "repeats", "threads", "dtype"}``; float32 in IEEE float32 (no
    TensorFloat-32 on CUDA), as the fp32 rows train."""
    sizes = sizes or PEAK_SIZES.get(device.type, PEAK_SIZES["cpu"])
    per_size = {}
    with ieee_fp32(device):
        for n in sizes:
            a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
            a @ b  # warm-up
            per_size[n] = 2 * n**3 / min(timings(lambda a=a, b=b: a @ b, device, repeats))
            del a, b
    best = max(per_size, key=per_size.get)
    return {"flops": per_size[best], "size": best, "per_size": per_size, "repeats": repeats,
            "threads": torch.get_num_threads(), "dtype": str(dtype).removeprefix("torch.")}


def set_fractions_of_peak(rows: list[dict], peaks: dict[str, dict]) -> None:
    """Give each row its ``fraction_of_peak``: its training FLOP/s (``train_flops_per_s``) over
    the peak of its precision. The peak is the best matrix product of :func:`peak_flops`, or the
    fastest row of that precision where a row went faster than every product (a convolution
    library that multiplies less than direct convolution counts, as Winograd does); each peak
    says which in ``source``, so no fraction exceeds 1."""
    for precision, peak in peaks.items():
        fastest = max((r for r in rows if r["precision"] == precision),
                      key=lambda r: r["train_flops_per_s"], default=None)
        if fastest is not None and fastest["train_flops_per_s"] > peak["matmul"]["flops"]:
            peak["flops"] = fastest["train_flops_per_s"]
            peak["source"] = (f"the {fastest['loop']} row at batch {fastest['batch_size']} "
                              f"({fastest['setup']}), faster than every matrix product")
        else:
            peak["flops"] = peak["matmul"]["flops"]
            peak["source"] = (f"a {peak['matmul']['size']} x {peak['matmul']['size']} matrix "
                              f"product, the fastest of {peak['matmul']['repeats']} at each of "
                              f"{len(peak['matmul']['per_size'])} sizes, "
                              f"{peak['matmul']['threads']} thread(s)")
    for row in rows:
        row["fraction_of_peak"] = row["train_flops_per_s"] / peaks[row["precision"]]["flops"]


@contextmanager
def busy_process():
    """One other process that keeps a core busy (``while True: pass``) while the block runs:
    the neighbour a laptop's browser or a second notebook is."""
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # started, and seen by the scheduler
        yield competitor
    finally:
        competitor.kill()
        competitor.wait()


def contention(fresh, data: datasets.ImageSet, device: torch.device, setup: dict,
               batch_size: int = 128, repeats: int = 2, seed: int = 0) -> dict:
    """Seconds of one epoch of this loop on ``data``, alone and beside :func:`busy_process`,
    with the thread count adapting to the machine (:mod:`sparse_survey.threads`) and fixed
    (``SPARSE_SURVEY_ADAPT_THREADS=0``, what the loop did before); each the fastest of
    ``repeats``, the four alternating so that a slow spell hits all. The figures: each setting's
    slowdown beside the busy process, and the quiet case's cost of adapting, beside the spread
    of the quiet repeats."""
    recipe = Recipe(epochs=1, batch_size=batch_size, lr=0.05, weight_decay=5e-4,
                    schedule="constant")
    arms = [(adapt, busy) for busy in (False, True) for adapt in (True, False)]
    seconds: dict = {arm: [] for arm in arms}
    thread_steps: dict = {arm: {} for arm in arms}
    fit(fresh(), data.per_class(max(1, 3 * batch_size // len(data.classes))), recipe,
        device=device, progress=False, **setup)  # warm-up
    for _ in range(repeats):
        for adapt, busy in arms:
            saved = os.environ.get(threads.ENVIRONMENT_SWITCH)
            os.environ[threads.ENVIRONMENT_SWITCH] = "1" if adapt else "0"
            try:
                with busy_process() if busy else nullcontext():
                    start = time.perf_counter()
                    history = fit(fresh(), data, recipe, device=device, seed=seed,
                                  progress=False, **setup)
                    seconds[adapt, busy].append(time.perf_counter() - start)
            finally:
                if saved is None:
                    del os.environ[threads.ENVIRONMENT_SWITCH]
                else:
                    os.environ[threads.ENVIRONMENT_SWITCH] = saved
            for count, steps in history.epochs[-1]["threads"].items():
                thread_steps[adapt, busy][count] = thread_steps[adapt, busy].get(count, 0) + steps
    floor = {arm: min(times) for arm, times in seconds.items()}
    quiet = seconds[True, False] + seconds[False, False]
    return {"images": len(data), "batch_size": batch_size, "repeats": repeats, **setup,
            "competitor": "one process running `while True: pass`",
            "arms": [{"threads": "adapting" if adapt else "fixed", "beside_busy_process": busy,
                      "seconds": seconds[adapt, busy], "fastest_s": floor[adapt, busy],
                      "steps_at_thread_count": thread_steps[adapt, busy]}
                     for adapt, busy in arms],
            "slowdown_adapting": floor[True, True] / floor[True, False],
            "slowdown_fixed": floor[False, True] / floor[False, False],
            "quiet_adapting_over_fixed": floor[True, False] / floor[False, False],
            "quiet_spread": max(quiet) / min(quiet) - 1}


def bench_train(model_name: str = "vgg16", width: float | None = None, dataset: str = "cifar10",
                data_root=None, images: int | None = None,
                batch_sizes: tuple[int, ...] = (128, 512), device: str | None = None,
                compiled: tuple[bool, ...] = (False, True), seed: int = 0,
                contended_repeats: int = 2) -> dict:
    """Measure the baseline, and this loop beside its bare step in each precision and layout
    (eager; compiled in the device's default setup) at each batch size, on the same images; on
    a CPU also the loop alone and beside one busy process (:func:`contention`, ``repeats``
    ``contended_repeats``; 0 leaves it out). Print a table and return the record."""
    device = device_of(device)
    cuda = device.type == "cuda"
    width = width if width is not None else (1.0 if cuda else 0.25)
    images = images or (50_000 if cuda else 10_000)
    train, _ = datasets.load(dataset, data_root, limit_per_class=max(1, images // 10))
    if max(batch_sizes) > len(train):
        raise ValueError(f"batch size {max(batch_sizes)} exceeds the {len(train)} images")
    epochs = math.ceil(images / len(train))  # small sets: several epochs make one measurement

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        c, h, _ = train.shape
        return models.build(model_name, len(train.classes), c, width, image_size=h)

    macs = flops(fresh(), train.shape)["macs_dense"]
    train_flops = 3 * 2 * macs  # forward + backward (about twice the forward), 2 FLOPs a MAC
    precisions = ["fp32"] + (["bf16"] if bf16_supported(device) else [])
    peaks = {p: {"matmul": peak_flops(device, {"fp32": torch.float32,
                                               "bf16": torch.bfloat16}[p])}
             for p in precisions}
    name = device_name(device)
    datasheet = next((v for k, v in DATASHEET_BF16_FLOPS.items() if k in name), None)
    rows = []

    def add(loop: str, setup: dict, batch: int, images_per_s: float, clock: dict,
            bare: float | None = None) -> None:
        achieved = images_per_s * train_flops
        rows.append({"loop": loop, **setup, "batch_size": batch, "images_per_s": images_per_s,
                     "train_flops_per_s": achieved,
                     "fraction_of_datasheet_peak": achieved / datasheet if datasheet else None,
                     "bare_step_images_per_s": bare,
                     "loop_share_of_bare_step": images_per_s / bare if bare else None,
                     **clock,  # the baseline's own loader workers take CPU from it: no verdict
                     "contended": None if loop == "baseline" else contended(clock, "measure")})

    workers = min(2, os.cpu_count() or 1)
    clock: dict = {}
    with timed(clock, "measure"):
        baseline = baseline_images_per_s(fresh(), train, device, workers=workers,
                                         epochs=epochs)
    add("baseline", {"precision": "fp32", "channels_last": False,
                     "setup": f"DataLoader, {workers} workers, CPU transforms"}, 128, baseline,
        clock)
    default = {"precision": precisions[-1],
               "channels_last": uses_channels_last(device, precisions[-1])}
    setups = [{"precision": p, "channels_last": cl} for p in precisions for cl in (False, True)]
    runs = [(False, s) for s in setups] + ([(True, default)] if True in compiled else [])
    for compile, setup in runs:
        for batch in batch_sizes:
            recipe = Recipe(epochs=epochs, batch_size=batch, lr=0.05, weight_decay=5e-4,
                            schedule="constant")
            model = fresh()
            warm = train.per_class(max(1, 3 * batch // len(train.classes)))
            fit(model, warm, Recipe(epochs=1, batch_size=batch, lr=0.05, schedule="constant"),
                device=device, compile=compile, progress=False, **setup)  # warm-up, compiling
            clock = {}
            with timed(clock, "measure"):
                history = fit(model, train, recipe, device=device, seed=seed + 1,
                              compile=compile, progress=False, **setup)
            seen = sum(e["images_per_s"] * e["seconds"] for e in history.epochs)
            bare = bare_step_images_per_s(fresh(), train, device, batch, **setup)
            words = (f"data on device, {setup['precision']}, model "
                     f"{'channels_last' if setup['channels_last'] else 'NCHW'}"
                     + (", torch.compile" if compile else ""))
            add("compiled" if compile else "eager", {**setup, "setup": words}, batch,
                seen / sum(e["seconds"] for e in history.epochs), clock, bare)
    set_fractions_of_peak(rows, peaks)
    shared = (contention(fresh, train, device, default, repeats=contended_repeats, seed=seed)
              if device.type == "cpu" and contended_repeats > 0 else None)
    record = {"benchmark": "train", "model": model_name, "width": width, "data": train.name,
              "images": len(train), "epochs": epochs, "device": str(device), "device_name": name,
              "macs_per_image": macs, "train_flops_per_image": train_flops,
              "peak_flops": peaks, "peak_flops_datasheet_bf16": datasheet,
              "rows": rows, "contention": shared, "environment": environment(device)}
    print(f"training throughput: {model_name} width {width:g} on {train.name}, {len(train)} "
          f"images x {epochs} epoch(s), {name}")
    print(f"forward {macs / 1e6:.4g} M MACs per image, training about 3x: "
          f"{train_flops / 1e9:.4g} GFLOP per image")
    for precision, peak in peaks.items():
        print(f"peak in {precision}: {peak['flops'] / 1e12:.3g} TFLOP/s, {peak['source']}")
    if datasheet:
        print(f"datasheet bf16 peak: {datasheet / 1e12:.0f} TFLOP/s")
    print(f"{'loop':9} {'batch':>5} {'images/s':>10} {'x baseline':>10} {'% of peak':>9} "
          f"{'bare step':>10} {'loop/bare':>9}  setup")
    for row in rows:
        flag = "  (machine shared: timing contended)" if row["contended"] else ""
        bare, share = row["bare_step_images_per_s"], row["loop_share_of_bare_step"]
        bare = f"{bare:10.0f} {100 * share:8.1f}%" if bare else f"{'':10} {'':9}"
        print(f"{row['loop']:9} {row['batch_size']:5d} {row['images_per_s']:10.0f} "
              f"{row['images_per_s'] / baseline:10.2f} {100 * row['fraction_of_peak']:8.1f}% "
              f"{bare}  {row['setup']}{flag}")
    if shared:
        print(f"one epoch of {shared['images']} images at batch {shared['batch_size']} "
              f"({shared['precision']}), fastest of {shared['repeats']}, alone and beside one "
              "busy process:")
        for arm in shared["arms"]:
            where = "beside it" if arm["beside_busy_process"] else "alone"
            print(f"  threads {arm['threads']:9} {where:9} {arm['fastest_s']:7.2f} s  "
                  f"steps at each thread count {arm['steps_at_thread_count']}")
        print(f"slowdown beside one busy process: {shared['slowdown_adapting']:.2f}x adapting, "
              f"{shared['slowdown_fixed']:.2f}x fixed; quiet, adapting/fixed "
              f"{shared['quiet_adapting_over_fixed']:.3f} (quiet repeats spread "
              f"{100 * shared['quiet_spread']:.1f} %)")
    return record


def _synchronized(device: torch.device, fn, *args, **kwargs) -> None:
    """Call ``fn(*args, **kwargs)`` with the device synchronised on both ends, so that a timer
    around the call sees all of its work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_prune(model_name: str = "vgg16", width: float = 1.0,
                compressions: tuple[float, ...] = (0.05, 1, 2), devices: list[str] | None = None,
                batch_size: int = 128) -> dict:
    """Time scoring and pruning of every method at each compression on each device; print a
    table and return the record."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"pruning {model_name} (width {width}); SNIP and GraSP on one batch of {batch_size} "
          "random 3x32x32 inputs; seconds (* = the machine was shared: timing contended)")
    print(f"{'device':8} {'method':8} {'score (1 round)':>16} {'rounds':>7} "
          + " ".join(f"{'prune c=' + format(c, 'g'):>13}" for c in compressions))
    for name in devices:
        device = torch.device(name)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(batch_size, 3, 32, 32, generator=g).to(device),
                    torch.randint(0, 10, (batch_size,), generator=g).to(device))]
        for method in pruners.METHODS:
            torch.manual_seed(0)
            model = models.build(model_name, width=width).to(device)
            pruners.score(model, method, batches, seed=0)  # warm-up
            row = {"device": str(device), "device_name": device_name(device), "method": method,
                   "rounds": pruners.METHODS[method].iterations}
            with timed(row, "score"):
                _synchronized(device, pruners.score, model, method, batches, seed=0)
            for c in compressions:
                torch.manual_seed(0)
                model = models.build(model_name, width=width).to(device)
                with timed(row, f"prune_c{c:g}"):
                    _synchronized(device, pruners.prune, model, method, c, batches, seed=0)
            rows.append(row)
            cells = [f"{row[f'prune_c{c:g}_s']:12.2f}"
                     + ("*" if contended(row, f"prune_c{c:g}") else "s") for c in compressions]
            print(f"{str(device):8} {method:8} {row['score_s']:15.3f}"
                  + ("*" if contended(row, "score") else "s")
                  + f" {row['rounds']:7d} " + " ".join(cells), flush=True)
    return {"benchmark": "prune", "model": model_name, "width": width,
            "compressions": list(compressions), "batch_size": batch_size, "rows": rows,
            "environment": environment(torch.device(devices[-1]))}


@torch.inference_mode()
def bench_sparse(model_name: str = "vgg16", width: float = 1.0, method: str = "rand",
                 compressions: tuple[float, ...] = (*pruners.SURVEY_COMPRESSIONS, 3),
                 batch_sizes: tuple[int, ...] = (1, 64), repeats: int = 5,
                 device: str = "cpu") -> list[dict]:
    """Dense masked vs CSR forward time by density; prints a table and the crossover."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, 32, 32, generator=g).to(device) for b in batch_sizes}
    scoring = [(inputs[max(batch_sizes)], torch.randint(0, 10, (max(batch_sizes),),
                                                        generator=g).to(device))]
    print(f"{model_name} (width {width}) pruned by {method}, forward pass on {device}; "
          f"median of {repeats}")
    print(f"{'compression':>11} {'density':>8} {'batch':>6} {'dense ms':>9} {'sparse ms':>10} "
          f"{'speed-up':>9}")
    rows = []
    for compression in compressions:
        torch.manual_seed(0)
        model = models.build(model_name, width=width).to(device).eval()
        pruners.prune(model, method, compression, scoring, seed=0)
        sparse = sparsify(model)
        reference = model(inputs[batch_sizes[0]])
        if not torch.allclose(sparse(inputs[batch_sizes[0]]), reference, rtol=1e-3,
                              atol=1e-5 * float(reference.abs().max())):
            raise AssertionError(f"sparse outputs differ from dense at compression {compression}")
        for batch in batch_sizes:
            x = inputs[batch]
            model(x), sparse(x)  # warm-up
            dense_s = statistics.median(timings(lambda m=model, x=x: m(x), device, repeats))
            sparse_s = statistics.median(timings(lambda m=sparse, x=x: m(x), device, repeats))
            row = {"compression": compression, "density": 10 ** -compression, "batch": batch,
                   "dense_ms": 1000 * dense_s, "sparse_ms": 1000 * sparse_s,
                   "speedup": dense_s / sparse_s}
            rows.append(row)
            print(f"{compression:11g} {row['density']:8.4f} {batch:6d} {row['dense_ms']:9.2f} "
                  f"{row['sparse_ms']:10.2f} {row['speedup']:8.2f}x", flush=True)
    for batch in batch_sizes:
        paying = [r["density"] for r in rows if r["batch"] == batch and r["speedup"] > 1]
        verdict = (f"sparse is faster at density {max(paying):.4g} and below" if paying
                   else "sparse is never faster")
        print(f"batch {batch}: {verdict} (of the densities measured)")
    return rows


# -------------------------------------------------------------------------------- allocator

# What a process does before it times: "fresh" nothing, "churned" frees blocks of 1 to 96 MB
# first, which moves glibc's mmap threshold (and its trim threshold) up to 32 MiB.
ALLOCATION_HISTORIES = ("fresh", "churned")

_HISTORY_SCRIPT = """
import json, sys
import torch
from sparse_survey import data, models, profile

history, pinned, model_name, width, images, batch_size, repeats, threads = sys.argv[1:]
torch.set_num_threads(int(threads))
if pinned == "unpinned":
    profile.pin_allocator = lambda: False
if history == "churned":
    for megabytes in (1, 3, 7, 13, 24, 31, 48, 96):
        block = torch.ones(megabytes * 2**18)
        del block
g = torch.Generator().manual_seed(0)
n = int(images)
test = data.ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g), tuple("abcdefghij"),
                     (0.5,) * 3, (0.25,) * 3, "random")
torch.manual_seed(0)
model = models.build(model_name, 10, 3, float(width)).eval()
print(json.dumps(profile.inference_time(model, test, torch.device("cpu"), int(batch_size),
                                        repeats=int(repeats), latency_repeats=3,
                                        precision="fp32")))
"""


def inference_after_history(history: str, pinned: bool = True, model_name: str = "vgg16",
                            width: float = 0.25, images: int = 1024, batch_size: int = 256,
                            repeats: int = 5) -> dict:
    """Time a model's inference on the CPU in fp32 (:func:`sparse_survey.profile.inference_time`
    on ``images`` random images) in a new Python process that first did ``history`` (one of
    :data:`ALLOCATION_HISTORIES`), with glibc's allocator pinned as the profiler pins it, or, with
    ``pinned=False``, left as glibc set it. Returns the timing record, whose
    ``time_passes_minor_faults`` counts the pages the timed passes faulted in."""
    if history not in ALLOCATION_HISTORIES:
        raise ValueError(f"unknown allocation history {history!r}; "
                         f"choose from {', '.join(ALLOCATION_HISTORIES)}")
    args = [history, "pinned" if pinned else "unpinned", model_name, width, images, batch_size,
            repeats, torch.get_num_threads()]
    out = subprocess.run([sys.executable, "-c", _HISTORY_SCRIPT, *map(str, args)],
                         capture_output=True, text=True, timeout=900, check=False)
    if out.returncode:
        raise RuntimeError(f"the timing process failed:\n{out.stderr}")
    return json.loads(out.stdout)


def bench_allocator(model_name: str = "vgg16", width: float = 0.25, processes: int = 5,
                    images: int = 1024, batch_size: int = 256) -> dict:
    """Inference time of one model after each allocation history, pinned and unpinned:
    ``processes`` new processes per history and setting, the histories alternating so that a
    slow spell of the machine hits both. A history's floor (its fastest pass over all its
    processes) is the figure to compare: a shared machine only ever slows a process down. Prints
    a table and returns the record."""
    print(f"{model_name} (width {width}), fp32 inference on {images} random images, batch "
          f"{batch_size}, in {processes} new processes per row; seconds per pass "
          "(* = the machine was shared: timing contended)")
    print(f"{'allocator':10} {'history':8} {'fastest':>8} {'median':>8} {'faults per pass':>16}")
    rows = []
    for pinned in (True, False):
        found: dict[str, list[dict]] = {h: [] for h in ALLOCATION_HISTORIES}
        for _ in range(processes):
            for history in ALLOCATION_HISTORIES:
                found[history].append(inference_after_history(
                    history, pinned, model_name, width, images, batch_size))
        for history, runs in found.items():
            row = {"pinned": pinned, "history": history, "processes": processes,
                   "floor_s": min(t["time_s_min"] for t in runs),
                   "median_s": statistics.median(t["time_s"] for t in runs),
                   "minor_faults_per_pass": max(t["time_passes_minor_faults"] or 0
                                                for t in runs) / runs[0]["time_repeats"],
                   "contended": any(contended(t, "time_passes") for t in runs), "runs": runs}
            rows.append(row)
            print(f"{'pinned' if pinned else 'unpinned':10} {history:8} {row['floor_s']:8.3f} "
                  f"{row['median_s']:8.3f}{'*' if row['contended'] else 's'} "
                  f"{row['minor_faults_per_pass']:15,.0f}", flush=True)
        fresh, churned = (r["floor_s"] for r in rows[-2:])
        print(f"{'':10} fresh/churned fastest: {fresh / churned:.3f}", flush=True)
    return {"benchmark": "allocator", "model": model_name, "width": width, "images": images,
            "batch_size": batch_size, "precision": "fp32", "rows": rows,
            "environment": environment(torch.device("cpu"))}
