"""CPU threads that make way for other processes.

torch runs each CPU operation on all of its threads (OpenMP; one per core by default), split into
equal parts, and the operation ends when its last part does. When another process keeps one of the
cores busy, the thread that shares that core runs half the time at most, and every operation waits
for it; while they wait, GNU OpenMP's threads spin, taking CPU time from the very thread they wait
for. On this project's 2-core CPU a short training (VGG16 at width 1/4, 4,000 CIFAR-10 images, one
epoch, fp32) took 3.8 s alone and 10 s beside one busy process (``python3 -c 'while True: pass'``);
with one thread it took 6 s beside it, about what losing a core should cost. Waiting passively
(``OMP_WAIT_POLICY=PASSIVE``) helps less (7 s) and slows the quiet case by 10-20 %.

So the package's CPU loops (training, evaluation, scoring and the inference timing) run inside
:func:`sharing_cpus` and call :func:`adapt` once a step. At most every :data:`INTERVAL` seconds it
looks at how much CPU time other processes took, since its last look, on the CPUs this process may
run on (the system's busy time from psutil, less this process's own CPU time), and sets torch's
thread count to the CPUs they left free: between one and the count torch had when the outermost
:func:`sharing_cpus` began, which is restored when it ends. On a quiet machine nothing changes.

A thread count also decides the order of some floating-point sums, so a training whose count
changed is not bit-for-bit the one a quiet machine makes (the same kind of difference as between
machines); :func:`fit <sparse_survey.train.fit>` records how many steps ran at each count.
``SPARSE_SURVEY_ADAPT_THREADS=0`` keeps the count fixed.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch

INTERVAL = 0.5  # seconds between two looks at the machine
STALE = 2.0  # a longer window (no loop was looking) describes the past: start a new one
ENVIRONMENT_SWITCH = "SPARSE_SURVEY_ADAPT_THREADS"


@dataclass
class _Look:
    wall: float  # time.perf_counter()
    busy: float  # CPU seconds all processes spent on our CPUs
    own: float  # CPU seconds this process spent


class _Governor:
    depth = 0  # how many sharing_cpus blocks are open
    ceiling = 1  # torch's thread count when the outermost block began
    last: _Look | None = None


_governor = _Governor()


def enabled() -> bool:
    """Whether thread counts adapt (not when ``SPARSE_SURVEY_ADAPT_THREADS`` is ``0``)."""
    return os.environ.get(ENVIRONMENT_SWITCH, "1").strip().lower() not in ("0", "false", "no")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity where the system says, else all)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def busy_seconds(cpus: list[int]) -> float | None:
    """CPU seconds that all processes together have spent on ``cpus`` since boot (user, nice,
    system, interrupts, and time a hypervisor gave to other machines); None where unknown."""
    try:
        per_cpu = psutil.cpu_times(percpu=True)
    except (OSError, NotImplementedError, RuntimeError):
        return None
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return sum(getattr(per_cpu[i], f, 0.0) for i in cpus if i < len(per_cpu) for f in fields)


def threads_for(others: float, cpus: int, ceiling: int) -> int:
    """Threads to run when other processes keep ``others`` of our ``cpus`` CPUs busy: the CPUs
    they leave, rounded to the nearest whole one, between 1 and ``ceiling``."""
    free = cpus - max(0.0, others)
    return max(1, min(ceiling, int(free + 0.5)))


def _look(cpus: list[int]) -> _Look | None:
    busy = busy_seconds(cpus)
    return None if busy is None else _Look(time.perf_counter(), busy, time.process_time())


@contextmanager
def sharing_cpus(device: str | torch.device = "cpu"):
    """A block of CPU work in which :func:`adapt` may change torch's thread count; the count
    comes back when the outermost block ends. Does nothing for other devices, or when
    :func:`enabled` is false."""
    if torch.device(device).type != "cpu" or not enabled():
        yield
        return
    governor = _governor
    if governor.depth == 0:
        governor.ceiling = torch.get_num_threads()
    governor.depth += 1
    try:
        yield
    finally:
        governor.depth -= 1
        if governor.depth == 0 and torch.get_num_threads() != governor.ceiling:
            torch.set_num_threads(governor.ceiling)


def adapt() -> int:
    """Inside :func:`sharing_cpus`, set torch's thread count to the CPUs other processes left
    free since the last look (looking at most every :data:`INTERVAL` seconds); return the count
    the next step runs with. Outside a block, only return the count."""
    governor = _governor
    current = torch.get_num_threads()
    if governor.depth == 0:
        return current
    now = time.perf_counter()
    if governor.last is not None and now - governor.last.wall < INTERVAL:
        return current
    cpus = usable_cpus()
    look, before = _look(cpus), governor.last
    governor.last = look
    if look is None or before is None or look.wall - before.wall > STALE:
        return current
    others = ((look.busy - before.busy) - (look.own - before.own)) / (look.wall - before.wall)
    wanted = threads_for(others, len(cpus), governor.ceiling)
    if wanted != current:
        torch.set_num_threads(wanted)
    return wanted
