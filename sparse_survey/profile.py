"""What a pruned network costs: FLOPs, parameters, storage, inference time and memory.

:func:`profile` gathers everything into one flat record. The conventions behind each number:

- **FLOPs.** One multiply-accumulate (MAC) is two FLOPs. Convolutions and matrix products are
  counted by ``torch.utils.flop_counter`` (VGG16: 313.2 M MACs = 626.4 MFLOPs per 32x32 image).
  Bias additions count 1 FLOP per output element and BatchNorm 2 (a scale and a shift, as folded
  for inference); ReLU and pooling (comparisons) are not counted. The *remaining* FLOPs of a masked
  model take each prunable layer's dense FLOPs times its density (what an ideal sparse kernel
  would execute, Synaptic-Flow's "FLOP sparsity") and count biases and BatchNorm dense.
- **Storage.** Dense: every parameter and floating-point buffer at its element size. Sparse: the
  prunable weights as CSR (values, 32-bit column indices, 32-bit row pointers over the weight's
  first dimension) or as a bitmask plus values; everything else dense.
- **Time.** Inference over the whole test set in eval mode, in the run's precision (bf16
  autocast with channels_last, or float32; recorded as ``inference_precision``, as in
  :func:`sparse_survey.train.evaluate`), batches normalised in advance so that only the model is
  timed, after warm-up, CUDA synchronised; the median of ``repeats`` passes with the min and max.
  Batch-1 latency is the median of single-image passes. Before timing, glibc's allocator is
  pinned (:func:`~sparse_survey.allocator.pin_allocator`): otherwise whether a pass
  page-faults, and so whether the same model takes 2 s or 3 s on this project's CPU, depends on
  what the process allocated before.
- **Whether a time can be trusted.** A wall time measures the method only if nothing else used
  the machine meanwhile. :func:`timed` therefore records beside each wall time the process's CPU
  time, the time its threads waited for a free CPU (Linux's scheduler statistics) and the
  machine's 1-minute load average at the start and the end; :func:`contended` reads them. Waiting
  is the direct sign: on this project's 2-core machine a VGG16 inference measured alone waits
  for 1-2 % of its wall time, beside one busy process for about 65 %, and takes 2.5 times as
  long.
- **GPU memory** (CUDA only): ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``
  over one inference pass fed by the on-device loader, after emptying the cache and resetting
  the peak statistics (the survey's "allocated" and "cached" tables).
- **CPU memory**: measured in a fresh Python process per model, so earlier runs cannot pollute
  it. The process loads the test batches, takes a baseline (resident and unique set sizes, via
  psutil), loads the model, then samples both every 2 ms while it runs inference on the CPU.
  Peak memory depends on the batch, not on how many batches run, so it runs ``memory_batches``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from . import masks, threads
from .allocator import pin_allocator
from .data import ImageSet, Loader
from .train import autocast, resolve_precision, uses_channels_last

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --------------------------------------------------------------------------------------- FLOPs

@torch.no_grad()
def flop_counts(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """One forward pass of one input: each prunable layer's dense MACs (from hooks), the matrix
    FLOPs that ``torch.utils.flop_counter`` counts, and the FLOPs of biases and BatchNorm."""
    layers = masks.prunable_layers(model)
    outputs: dict[nn.Module, int] = {}  # elements each module outputs for one input

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        outputs[module] = output[0].numel()

    watched = [m for m in model.modules()
               if isinstance(m, (*masks.PRUNABLE_LAYERS, *BATCHNORMS))]
    hooks = [m.register_forward_hook(count) for m in watched]
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters())
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    macs = {}
    for name, layer in layers.items():  # each weight entry is used once per output position
        out_features = layer.weight.shape[0]
        macs[name] = layer.weight.numel() * (outputs[layer] // out_features)
    other = sum(outputs[m] for m in layers.values() if m.bias is not None)
    other += sum(2 * outputs[m] for m in watched if m not in layers.values())
    return {"macs": macs, "matrix_flops": counter.get_total_flops(), "other_flops": other}


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense MACs of each prunable layer for one input of ``input_shape`` (no batch dimension)."""
    return flop_counts(model, input_shape)["macs"]


def flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Dense and remaining FLOPs per input, and the remaining fraction (see module docstring)."""
    counts = flop_counts(model, input_shape)
    density = masks.layer_densities(model)
    pruned = sum(2 * m * (1 - density[n]) for n, m in counts["macs"].items())
    dense = counts["matrix_flops"] + counts["other_flops"]
    return {"macs_dense": sum(counts["macs"].values()), "flops_dense": dense,
            "flops_remaining": dense - pruned, "flops_fraction": (dense - pruned) / dense}


def remaining_flops_fraction(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Fraction of the dense forward FLOPs that the masked model still needs."""
    return flops(model, input_shape)["flops_fraction"]


# ------------------------------------------------------------------------- parameters, storage

def parameter_counts(model: nn.Module) -> dict[str, float]:
    """All parameters and the non-zero ones; prunable weights and the kept ones."""
    kept, prunable = map(sum, zip(*masks.counts(model).values()))
    return {"params_total": sum(p.numel() for p in model.parameters()),
            "params_nonzero": sum(int(torch.count_nonzero(p)) for p in model.parameters()),
            "prunable_total": prunable, "prunable_kept": kept, "density": kept / prunable,
            "remaining_fraction": masks.remaining_fraction(model)}


def storage_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes to store the model dense, with CSR prunable weights, and with bitmask-plus-values."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    dense = sum(t.numel() * t.element_size() for t in tensors)
    csr = bitmask = dense
    weights, mask = masks.prunable(model), masks.get(model)
    for name, w in weights.items():
        size, nnz = w.element_size(), int(mask[name].sum())
        csr += nnz * (size + 4) + (w.shape[0] + 1) * 4 - w.numel() * size
        bitmask += math.ceil(w.numel() / 8) + nnz * size - w.numel() * size
    return {"storage_dense_bytes": dense, "storage_csr_bytes": csr,
            "storage_bitmask_bytes": bitmask}


# ------------------------------------------------------------------------------------- time

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn, device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()``, the device synchronised around each."""
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _waited_s() -> float | None:
    """Seconds this process's threads have spent waiting for a CPU, summed (the second field of
    Linux's ``/proc/<pid>/task/<tid>/schedstat``); None where the system does not say."""
    total, found = 0, False
    for path in Path("/proc/self/task").glob("*/schedstat"):
        try:
            total += int(path.read_text().split()[1])
            found = True
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9 if found else None


def _minor_faults() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return None


@contextmanager
def timed(into: dict, name: str):
    """Measure the block and store into ``into``: ``{name}_s`` (wall seconds), ``{name}_cpu_s``
    (CPU seconds of this process, all threads), ``{name}_wait_s`` (seconds its threads waited for
    a CPU, summed; None where unknown), ``{name}_load`` (the machine's 1-minute load average at
    the start and the end; None where unknown) and ``{name}_minor_faults`` (the process's minor
    page faults: memory it touched for the first time; None where unknown). Nothing is stored if
    the block raises."""
    load, waited, cpu, wall = _load(), _waited_s(), time.process_time(), time.perf_counter()
    faults = _minor_faults()
    yield
    into[f"{name}_s"] = time.perf_counter() - wall
    into[f"{name}_cpu_s"] = time.process_time() - cpu
    now_faults = _minor_faults()
    into[f"{name}_minor_faults"] = None if faults is None else now_faults - faults
    now = _waited_s()
    into[f"{name}_wait_s"] = now - waited if now is not None and waited is not None else None
    into[f"{name}_load"] = None if load is None else [load, _load()]


def contended(clock: dict, name: str, cpus: int | None = None) -> bool | None:
    """Whether other work shared the machine during the phase ``name`` of a :func:`timed`
    record: its threads waited for a CPU for more than a tenth of its wall time in all, or, where
    waiting is unknown, the load average exceeded the ``cpus`` cores at its start or end. None when
    the record holds neither measurement (records made before they were taken)."""
    wall, wait, load = (clock.get(f"{name}{suffix}") for suffix in ("_s", "_wait_s", "_load"))
    if wall is None or (wait is None and load is None):
        return None
    if wait is not None:
        return wait > 0.1 * wall
    return max(load) > (cpus or os.cpu_count() or 1) + 0.5


@torch.inference_mode()
def inference_time(model: nn.Module, test_set: ImageSet, device: torch.device,
                   batch_size: int = 256, repeats: int = 5, latency_repeats: int = 50,
                   progress: bool = False, precision: str = "fp32") -> dict:
    """Median time of a pass over ``test_set`` (model only) in ``precision`` (``"fp32"`` or
    ``"bf16"``, see :mod:`sparse_survey.train`), images/s and batch-1 latency; the timed passes'
    CPU time, waiting and load as ``time_passes_*`` (see :func:`timed`). The allocator is pinned
    first (:func:`pin_allocator`). On a CPU the thread count makes way for other processes
    (:mod:`sparse_survey.threads`); ``time_passes_threads`` counts the timed batches run at each
    count, ``threads`` is the count the process has."""
    precision = resolve_precision(precision, device)
    pinned = pin_allocator()
    channels_last = uses_channels_last(device, precision)
    batches = [x for x, _ in Loader(test_set, batch_size, device, channels_last=channels_last)]
    bar = tqdm(total=repeats * len(batches), desc="inference time", unit="batch",
               disable=not progress, leave=False)

    used = Counter()  # batches timed at each CPU thread count

    def run(inputs, counted: bool = False) -> None:
        with autocast(device, precision):
            for x in inputs:
                count = threads.adapt()
                model(x)
                if counted:
                    used[count] += 1
                    bar.update()

    with threads.sharing_cpus(device):
        run(batches[:3])  # warm-up: kernels chosen, memory allocated
        clock: dict = {}
        with timed(clock, "time_passes"):
            passes = timings(lambda: run(batches, counted=True), device, repeats)
        bar.close()
        single = batches[0][:1]
        run([single] * 3)
        latency = timings(lambda: run([single]), device, latency_repeats)
    median = statistics.median(passes)
    return {"time_s": median, "time_s_min": min(passes), "time_s_max": max(passes),
            "time_repeats": repeats, "images": len(test_set), "batch_size": batch_size,
            "images_per_s": len(test_set) / median, "latency_ms": 1000 * statistics.median(latency),
            **clock, "threads": torch.get_num_threads(),
            "time_passes_threads": {str(n): k for n, k in sorted(used.items())},
            "inference_precision": precision,
            "allocator_pinned": pinned}


# ----------------------------------------------------------------------------------- memory

@torch.inference_mode()
def gpu_memory(model: nn.Module, test_set: ImageSet, device: torch.device,
               batch_size: int = 256, precision: str = "bf16") -> dict[str, int]:
    """Peak GPU memory allocated and reserved during one inference pass in ``precision`` (CUDA
    only)."""
    loader = Loader(test_set, batch_size, device, channels_last=True)
    _synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    with autocast(device, resolve_precision(precision, device)):
        for x, _ in loader:
            model(x)
    _synchronize(device)
    return {"gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "gpu_peak_reserved_bytes": torch.cuda.max_memory_reserved(device)}


def cpu_memory(model: nn.Module, test_set: ImageSet, batch_size: int = 256,
               memory_batches: int = 4) -> dict[str, int]:
    """CPU memory of inference, measured in a fresh Python process (see module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_path, data_path = Path(tmp) / "model.pt", Path(tmp) / "data.pt"
        torch.save(copy.deepcopy(model).cpu(), model_path)
        torch.save({f.name: getattr(test_set, f.name) for f in fields(ImageSet)}, data_path)
        code = ("import json, sys; from sparse_survey.profile import memory_probe; "
                "print(json.dumps(memory_probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), "
                "int(sys.argv[4]))))")
        done = subprocess.run([sys.executable, "-c", code, str(model_path), str(data_path),
                               str(batch_size), str(memory_batches)],
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(model_path: str, data_path: str, batch_size: int, memory_batches: int) -> dict:
    """Run in the fresh process: baseline after the data, then the model, then inference."""
    import gc

    import psutil

    process = psutil.Process()
    test_set = ImageSet(**torch.load(data_path))
    batches = [x for x, _ in itertools.islice(Loader(test_set, batch_size), memory_batches)]
    gc.collect()
    baseline = process.memory_full_info()
    model = torch.load(model_path, weights_only=False).eval()
    loaded = process.memory_full_info()
    peak = {"rss": loaded.rss, "uss": loaded.uss}
    stop = threading.Event()

    def sample() -> None:
        while True:
            info = process.memory_full_info()
            peak["rss"], peak["uss"] = max(peak["rss"], info.rss), max(peak["uss"], info.uss)
            if stop.wait(0.002):
                return

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.inference_mode():
        for x in batches:
            model(x)
    stop.set()
    sampler.join()
    return {"cpu_rss_baseline_bytes": baseline.rss, "cpu_uss_baseline_bytes": baseline.uss,
            "cpu_rss_model_loaded_bytes": loaded.rss,
            "cpu_rss_peak_bytes": peak["rss"], "cpu_uss_peak_bytes": peak["uss"],
            "cpu_rss_increase_bytes": peak["rss"] - baseline.rss,
            "cpu_uss_increase_bytes": peak["uss"] - baseline.uss,
            "cpu_memory_batches": len(batches)}


# ---------------------------------------------------------------------------------- profile

def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name where Linux tells it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def profile(model: nn.Module, test_set: ImageSet, device: str | torch.device | None = None,
            batch_size: int = 256, repeats: int = 5, latency_repeats: int = 50,
            memory: bool = True, memory_batches: int = 4, progress: bool = False,
            precision: str = "fp32") -> dict:
    """Everything this module measures, as one flat record; the model is left as it was (it is
    copied to ``device`` if it lives elsewhere). Inference is timed in ``precision`` (the run's).
    ``progress`` shows a bar over the timed passes (minutes on a CPU for a full test set)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    on_device = next(model.parameters()).device == device or (
        device.type == "cuda" and device.index is None and next(model.parameters()).is_cuda)
    net = model if on_device else copy.deepcopy(model).to(device)
    was_training = model.training
    net.eval()
    try:
        record = {"device": str(device), "device_name": device_name(device)}
        record.update(flops(net, test_set.shape))
        record.update(parameter_counts(net))
        record.update(storage_bytes(net))
        record.update(inference_time(net, test_set, device, batch_size, repeats,
                                     latency_repeats, progress, precision))
        if device.type == "cuda":
            record.update(gpu_memory(net, test_set, device, batch_size, precision))
        if memory:
            record.update(cpu_memory(net, test_set, batch_size, memory_batches))
    finally:
        model.train(was_training)
    return record
