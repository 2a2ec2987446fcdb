"""Benchmarks that print figures (nothing here asserts a speed).

``bench prune`` times each method's scoring (one round) and its full pruning to compression 1
(with the method's default number of rounds: 100 for SynFlow) on VGG16, on the CPU and on a GPU
when one is available, with one batch of 128 random CIFAR-shaped inputs for SNIP and GraSP.

``bench sparse`` times a pruned model's forward pass as a masked dense model (the normal kernels)
and with CSR sparse kernels (:mod:`sparse_survey.sparse`), at each compression, at batch 1
(latency) and at a larger batch (throughput), and names the density below which sparse pays.

``bench train`` measures training images/s of this project's loop (:func:`sparse_survey.train.fit`:
the whole data set on the device, augmentation there in batches) against a plain baseline written
the common way: a torchvision ``DataLoader`` over PIL images with CPU transforms (random crop with
4-pixel padding, horizontal flip, ``ToTensor``, ``Normalize``), fp32, batch 128. Both train the
same freshly initialised model on the same images in the same process.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from . import data as datasets
from . import models, pruners
from .profile import timings
from .sparse import sparsify
from .train import Recipe, default_device, fit


class PILImages(torch.utils.data.Dataset):
    """An ImageSet served image by image as PIL images through torchvision transforms."""

    def __init__(self, data: datasets.ImageSet, transform):
        from PIL import Image

        self.images = [Image.fromarray(x) for x in data.images.permute(0, 2, 3, 1).numpy()]
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline_images_per_s(model: nn.Module, data: datasets.ImageSet, device: torch.device,
                          batch_size: int = 128, workers: int = 2, warmup: int = 5) -> float:
    """Train one epoch the common way and return images/s over all but the warm-up batches."""
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
    seen, start = 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            seen, start = 0, time.perf_counter()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def bench_train(model_name: str = "vgg16", width: float | None = None, dataset: str = "cifar10",
                data_root=None, images: int | None = None, batch_size: int | None = None,
                device: str | None = None, compile: bool = False, seed: int = 0) -> dict:
    """Measure both loops and print a small table; returns the figures."""
    device = torch.device(device) if device else default_device()
    cuda = device.type == "cuda"
    width = width if width is not None else (1.0 if cuda else 0.25)
    batch_size = batch_size or (512 if cuda else 128)
    images = images or (50_000 if cuda else 10_000)
    train, _ = datasets.load(dataset, data_root, limit_per_class=max(1, images // 10))

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        c, h, _ = train.shape
        return models.build(model_name, len(train.classes), c, width, image_size=h)

    workers = min(2, os.cpu_count() or 1)
    baseline = baseline_images_per_s(fresh(), train, device, workers=workers)
    recipe = Recipe(epochs=1, batch_size=batch_size, lr=0.05, weight_decay=5e-4,
                    schedule="constant")
    model = fresh()
    fit(model, train.per_class(max(1, 8 * batch_size // 10)), recipe, device=device,
        compile=compile, progress=False)  # warm-up (and compilation)
    ours = fit(model, train, recipe, device=device, seed=seed + 1, compile=compile,
               progress=False).final["images_per_s"]
    figures = {"model": model_name, "width": width, "device": str(device),
               "images": len(train), "baseline_images_per_s": baseline,
               "baseline_setup": f"DataLoader, {workers} workers, CPU transforms, fp32, batch 128",
               "ours_images_per_s": ours,
               "ours_setup": f"data on device, batch {batch_size}"
                             + (", bf16, channels_last" if cuda else ", fp32")
                             + (", torch.compile" if compile else ""),
               "ratio": ours / baseline}
    print(f"training throughput, {model_name} width {width} on {device}, {len(train)} images")
    print(f"  baseline  {baseline:10.0f} images/s   ({figures['baseline_setup']})")
    print(f"  this loop {ours:10.0f} images/s   ({figures['ours_setup']})")
    print(f"  ratio     {figures['ratio']:10.2f}x")
    return figures


def _timed(device: torch.device, fn, *args, **kwargs) -> float:
    """Seconds that ``fn(*args, **kwargs)`` takes, the device synchronised on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_prune(model_name: str = "vgg16", width: float = 1.0, compression: float = 1.0,
                devices: list[str] | None = None, batch_size: int = 128) -> list[dict]:
    """Time scoring and pruning of every method on each device; print a table."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"pruning {model_name} (width {width}) to compression {compression}; "
          f"SNIP and GraSP on one batch of {batch_size} random 3x32x32 inputs")
    print(f"{'device':8} {'method':8} {'score (1 round)':>16} {'rounds':>7} {'prune':>10}")
    for name in devices:
        device = torch.device(name)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(batch_size, 3, 32, 32, generator=g).to(device),
                    torch.randint(0, 10, (batch_size,), generator=g).to(device))]
        for method in pruners.METHODS:
            torch.manual_seed(0)
            model = models.build(model_name, width=width).to(device)
            pruners.score(model, method, batches, seed=0)  # warm-up
            scoring = _timed(device, pruners.score, model, method, batches, seed=0)
            rounds = pruners.DEFAULT_ITERATIONS.get(method, 1)
            pruning = _timed(device, pruners.prune, model, method, compression, batches, seed=0)
            rows.append({"device": str(device), "method": method, "score_s": scoring,
                         "rounds": rounds, "prune_s": pruning})
            print(f"{str(device):8} {method:8} {scoring:15.3f}s {rounds:7d} {pruning:9.2f}s",
                  flush=True)
    return rows


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
