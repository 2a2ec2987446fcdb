"""Training and evaluation loops for (masked) models.

One loop for every budget: :class:`Recipe` holds a training protocol's numbers, :func:`fit` runs it
on whole-tensor :class:`~sparse_survey.data.Loader` batches and returns a per-epoch history. Masked
weights (see :mod:`sparse_survey.masks`) are re-zeroed after every optimizer step, so momentum and
weight decay cannot revive them.

Precision is part of a run (:data:`PRECISIONS`): ``"bf16"`` trains and evaluates under bf16
autocast with channels_last tensors, ``"fp32"`` in float32 with the usual NCHW layout (IEEE
float32 on CUDA too, where cuDNN would otherwise take TensorFloat-32: :func:`ieee_fp32`), and
``"auto"`` (the default) picks bf16 where the device does bf16 arithmetic in hardware
(:func:`bf16_supported`: CUDA GPUs, and CPUs with bf16 dot-product instructions such as
AVX512-BF16 or AMX, through oneDNN), else fp32. Autocast keeps the weights, the optimizer state and
the loss in float32; only matrix products and convolutions run in bf16. On request
it trains through ``torch.compile``; a process pays for compiling an architecture once, since
dynamo's cache serves every later model of the same architecture (the masks are applied outside
the forward pass, so they do not change the graph; ``tests/test_experiment.py`` counts the
compilations of a sweep). A NaN or infinite loss stops the run and marks it diverged instead of
training on garbage.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from . import masks, threads
from .allocator import pin_allocator
from .data import ImageSet, Loader

SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


def bf16_supported(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` does bf16 arithmetic in hardware: a CUDA GPU that supports it, or a CPU
    that oneDNN runs bf16 kernels on (torch's own check, the one its compiler uses; true with
    AVX512-BF16 or AMX)."""
    device = device_of(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch without oneDNN
            return False
    return False


def resolve_precision(precision: str, device: str | torch.device | None = None) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` bf16 where
    :func:`bf16_supported` and fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str):
    """The arithmetic of a resolved ``precision`` on ``device``: bf16 autocast for ``"bf16"``;
    float32 for ``"fp32"``, truly so on CUDA too (see :func:`ieee_fp32`)."""
    with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"), \
            ieee_fp32(device if precision == "fp32" else "cpu"):
        yield


@contextlib.contextmanager
def ieee_fp32(device: str | torch.device):
    """float32 products and convolutions in IEEE float32 on a CUDA ``device`` while the context
    lasts (elsewhere it does nothing). cuDNN's default lets float32 convolutions run in
    TensorFloat-32, whose products keep 10 of float32's 23 mantissa bits: a run recorded as fp32
    must not take that silently. The previous settings come back on leaving."""
    if torch.device(device).type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def uses_channels_last(device: torch.device, precision: str) -> bool:
    """The memory layout of a resolved ``precision`` on ``device``: channels_last on CUDA and in
    bf16 (where oneDNN's and cuDNN's fast kernels want it), NCHW for fp32 on a CPU."""
    return device.type == "cuda" or precision == "bf16"


@dataclass(frozen=True)
class Recipe:
    """A training protocol. ``milestones`` are epochs (fractional ones too) at which ``multistep``
    multiplies the learning rate by ``gamma``; ``onecycle`` warms up linearly for ``warmup`` of
    the run, then decays linearly to zero; ``cosine`` anneals from ``lr`` to zero.
    ``label_smoothing`` mixes the training targets with the uniform distribution (Szegedy et al.
    2016): a cheap regulariser for short runs; it changes only the training loss. The default
    is the survey's ("paper") protocol; each field's metadata says what it is (the command line's
    recipe options are made from them). Every number is checked (finite, in range), so a NaN or a
    schedule that cannot work is refused here, not found after training."""

    epochs: int = field(default=160, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "training batch size"})
    lr: float = field(default=0.1, metadata={"help": "(peak) learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=True, metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay"})
    schedule: str = field(default="multistep", metadata={
        "help": "learning-rate schedule", "choices": SCHEDULES})
    milestones: tuple[float, ...] = field(default=(60, 120), metadata={
        "help": "epochs at which multistep multiplies the rate by gamma"})
    gamma: float = field(default=0.1, metadata={"help": "multistep's factor"})
    warmup: float = field(default=0.2, metadata={"help": "onecycle's warm-up fraction"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "label smoothing of the training loss (0: none; the test loss never has it)"})

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not 0 < self.lr < math.inf:  # also refuses NaN
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("momentum", "weight_decay", "gamma", "warmup"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses NaN
                raise ValueError(f"{name} must be a finite number >= 0, got "
                                 f"{getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:  # also refuses NaN
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.schedule == "onecycle" and not 0 < self.warmup < 1:
            raise ValueError(f"onecycle needs a warm-up fraction between 0 and 1, got "
                             f"{self.warmup}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0 (or nesterov=False)")
        if self.schedule == "multistep" and not (
                list(self.milestones) == sorted(self.milestones)
                and all(0 < m < self.epochs for m in self.milestones)):
            raise ValueError(f"multistep milestones must rise and lie inside the training "
                             f"(between 0 and {self.epochs} epochs, fractions allowed), got "
                             f"{self.milestones}")

    def lr_factor(self, epoch: float) -> float:
        """The learning-rate multiplier at a (fractional) epoch."""
        t = epoch / self.epochs
        if self.schedule == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.schedule == "onecycle":
            return t / self.warmup if t < self.warmup else (1 - t) / (1 - self.warmup)
        return 1.0


@dataclass
class History:
    """What :func:`fit` returns: one dict per finished epoch, and whether the loss blew up."""

    epochs: list[dict] = field(default_factory=list)
    diverged: bool = False
    error: str | None = None

    @property
    def final(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def device_of(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; by default CUDA where torch sees a GPU, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(model: nn.Module, train: ImageSet, recipe: Recipe, test: ImageSet | None = None, *,
        device: str | torch.device | None = None, seed: int = 0, compile: bool = False,
        progress: bool = True, eval_every: int = 1, on_step=None, desc: str = "train",
        precision: str = "auto", channels_last: bool | None = None) -> History:
    """Train ``model`` in place by ``recipe`` on ``train``; evaluate on ``test`` every
    ``eval_every`` epochs and after the last. ``seed`` fixes the data order and augmentation
    (initialise the model's weights before calling). ``on_step(step, model, optimizer)``, if
    given, is called after every optimizer step (step 1 is the first) with the step's gradients
    still in ``.grad``: e.g. to keep the weights of a rewind point, or to move a sparse network's
    connections (:mod:`sparse_survey.dynamic`).
    ``compile=True`` trains through ``torch.compile`` (graphs specialised to the batch shape).
    ``precision`` is one of :data:`PRECISIONS` (see the module docstring); ``channels_last``
    (default: on CUDA and in bf16) sets the memory layout of the model and its batches.
    The progress bar, named ``desc``, shows the epoch, the running loss and images/s. On a CPU
    the process's allocator is pinned first (:func:`~sparse_survey.allocator.pin_allocator`):
    the same training, without millions of page faults; and the thread count makes way for other
    processes (:mod:`sparse_survey.threads`; not when compiled): each epoch's record counts its
    steps at each count.
    Returns the per-epoch :class:`History`.
    """
    device = device_of(device)
    cuda = device.type == "cuda"
    if device.type == "cpu":  # every step reuses the last one's memory: no page faults
        pin_allocator()
    precision = resolve_precision(precision, device)
    if channels_last is None:
        channels_last = uses_channels_last(device, precision)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = Loader(train, recipe.batch_size, device, train=True, seed=seed,
                    channels_last=channels_last)
    test_loader = (Loader(test, eval_batch_size(device), device, channels_last=channels_last)
                   if test is not None else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
                                **({"fused": True} if cuda else {}))
    steps = len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: recipe.lr_factor(s / steps))
    step_fn = torch.compile(model, dynamic=False) if compile else model
    history = History()
    bar = tqdm(total=recipe.epochs * steps, desc=desc, unit="batch", disable=not progress,
               leave=False)
    # fewer threads while other processes take CPUs; a compiled training keeps its count, since
    # torch.compile's CPU kernels are specialised to it and a new count would compile them again
    with threads.sharing_cpus(device) if not compile else contextlib.nullcontext():
        for epoch in range(recipe.epochs):
            model.train()
            start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen, thread_steps = 0, Counter()
            for i, (x, y) in enumerate(loader):
                thread_steps[threads.adapt()] += 1
                with autocast(device, precision):
                    logits = step_fn(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                masks.apply(model)
                if on_step is not None:
                    on_step(epoch * steps + i + 1, model, optimizer)
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                bar.update()
                if i % 50 == 0 or i == steps - 1:  # a sync: check for divergence now and then
                    running = (loss_sum / seen).item()
                    bar.set_postfix(epoch=f"{epoch + 1}/{recipe.epochs}", loss=f"{running:.3f}",
                                    images_s=f"{seen / (time.perf_counter() - start):.0f}")
                    if not math.isfinite(running):
                        history.diverged = True
                        history.error = (f"loss became {running} in epoch {epoch + 1}, "
                                         f"step {i + 1}")
                        bar.close()
                        return history
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                      "train_loss": (loss_sum / seen).item(), "train_acc": correct.item() / seen,
                      "seconds": seconds, "images_per_s": seen / seconds,
                      "threads": {str(n): k for n, k in sorted(thread_steps.items())}}
            last = epoch + 1 == recipe.epochs
            if test_loader is not None and ((epoch + 1) % eval_every == 0 or last):
                record["test_loss"], record["test_acc"] = evaluate(model, test_loader,
                                                                   precision=precision)
            history.epochs.append(record)
    bar.close()
    return history


def dead_channels(model: nn.Module) -> dict[str, int]:
    """Per BatchNorm layer, the channels whose running variance fell below the layer's ``eps``:
    channels that saw a constant during training (in a pruned network, those whose filter lost
    every weight). In eval mode BatchNorm multiplies whatever such a channel's input drifted from
    its running mean by up to ``1 / sqrt(eps)`` (316 at the default eps), which can wreck a
    network that trains well: its test accuracy can sit at chance while its training accuracy
    does not."""
    return {name: int((m.running_var < m.eps).sum()) for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None
            and bool((m.running_var < m.eps).any())}


def eval_batch_size(device: torch.device) -> int:
    """Evaluation batch: large on a GPU; 128 on a CPU, where bigger batches outgrow the caches
    (VGG16 at width 1/4 evaluates 10,000 images in 2.0 s at 128, 4.5 s at 1024 on 2 cores)."""
    return 1024 if device.type == "cuda" else 128


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet | Loader, device: str | torch.device | None = None,
             batch_size: int | None = None, precision: str = "auto") -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on a data set, in eval mode and in
    ``precision`` (see :data:`PRECISIONS`).

    ``data`` may be an :class:`ImageSet` (a loader of ``batch_size`` images, by default
    :func:`eval_batch_size`, is made on ``device``) or a ready ``Loader``. On a CPU the thread
    count makes way for other processes (:mod:`sparse_survey.threads`).
    The model's train/eval mode is restored afterwards.
    """
    if isinstance(data, ImageSet):
        device = torch.device(device) if device is not None else next(model.parameters()).device
        precision = resolve_precision(precision, device)
        data = Loader(data, batch_size or eval_batch_size(device), device,
                      channels_last=uses_channels_last(device, precision))
    precision = resolve_precision(precision, data.device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.device)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    with threads.sharing_cpus(data.device):
        for x, y in data:
            threads.adapt()
            with autocast(data.device, precision):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = len(data.labels)
    return loss_sum.item() / n, correct.item() / n
