"""The thread governor: torch's CPU thread count makes way for other processes, and comes back."""

import os
import subprocess
import sys
import time

import pytest
import torch

from sparse_survey import models, threads, train
from sparse_survey.threads import _Look


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def scripted(monkeypatch):
    """The governor looks at a scripted machine of two CPUs: each look returns the next
    ``(wall, busy, own)`` of the list the test fills; the clock is the looks' own."""
    looks: list[_Look] = []
    clock = {"now": 0.0}
    monkeypatch.setattr(threads, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(threads, "_look", lambda cpus: looks.pop(0))
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(threads._governor, "last", None)
    monkeypatch.delenv(threads.ENVIRONMENT_SWITCH, raising=False)

    def at(wall: float, busy: float, own: float) -> None:
        clock["now"] = wall
        looks.append(_Look(wall, busy, own))

    return at


def test_threads_for_leaves_the_cpus_others_use_and_stays_between_one_and_the_ceiling():
    assert threads.threads_for(0.0, cpus=2, ceiling=2) == 2
    assert threads.threads_for(0.4, cpus=2, ceiling=2) == 2
    assert threads.threads_for(1.0, cpus=2, ceiling=2) == 1
    assert threads.threads_for(3.0, cpus=2, ceiling=2) == 1  # never below one
    assert threads.threads_for(1.0, cpus=8, ceiling=4) == 4  # never above the ceiling
    assert threads.threads_for(5.0, cpus=8, ceiling=4) == 3
    assert threads.threads_for(-0.2, cpus=2, ceiling=2) == 2  # clock noise is not a free CPU


def test_one_busy_process_takes_a_thread_and_its_end_gives_it_back(scripted, two_threads):
    with threads.sharing_cpus("cpu"):
        scripted(10.0, 100.0, 50.0)
        assert threads.adapt() == 2  # the first look only starts a window
        # 1 s later: all CPUs busy 2 s, this process 1 s of it, so others took one CPU
        scripted(11.0, 102.0, 51.0)
        assert threads.adapt() == 1 and torch.get_num_threads() == 1
        scripted(11.2, 0.0, 0.0)  # within INTERVAL of the last look: no look at all
        assert threads.adapt() == 1
        # the other process ended: busy time is all this process's own
        scripted(12.0, 103.0, 52.0)
        assert threads.adapt() == 2 and torch.get_num_threads() == 2
        scripted(13.0, 105.0, 53.0)
        assert threads.adapt() == 1
    assert torch.get_num_threads() == 2  # the block's end restores the count it began with


def test_a_window_older_than_stale_starts_afresh_and_no_block_means_no_change(scripted,
                                                                              two_threads):
    with threads.sharing_cpus("cpu"):
        scripted(0.0, 0.0, 0.0)
        threads.adapt()
        scripted(threads.STALE + 1, 2 * (threads.STALE + 1), 0.0)  # busy all along, long ago
        assert threads.adapt() == 2  # not trusted: a new window begins
    assert threads.adapt() == 2  # outside a block nothing looks
    with threads.sharing_cpus("cuda"):  # only CPU work is governed
        assert threads._governor.depth == 0


def test_the_environment_switch_keeps_the_count_fixed(scripted, two_threads, monkeypatch):
    monkeypatch.setenv(threads.ENVIRONMENT_SWITCH, "0")
    with threads.sharing_cpus("cpu"):
        assert threads._governor.depth == 0
        assert threads.adapt() == 2


def test_nested_blocks_restore_the_outermost_count(scripted, two_threads):
    with threads.sharing_cpus("cpu"):
        scripted(0.0, 0.0, 0.0)
        threads.adapt()
        with threads.sharing_cpus("cpu"):
            scripted(1.0, 2.0, 1.0)
            assert threads.adapt() == 1
        assert torch.get_num_threads() == 1  # the inner block's end changes nothing
    assert torch.get_num_threads() == 2


def busy_on(cpu: int) -> subprocess.Popen:
    """A process that keeps one CPU busy, pinned to ``cpu``."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))


def test_a_real_busy_process_is_seen_and_the_count_comes_back(monkeypatch, two_threads):
    """Against the real machine: a busy process pinned to one of two CPUs that this process
    counts as its own leaves it one thread, within a few looks; after the block, two again."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        cpus = [cpus[0], cpus[0]]
    monkeypatch.setattr(threads, "usable_cpus", lambda: cpus)
    monkeypatch.delenv(threads.ENVIRONMENT_SWITCH, raising=False)
    a = torch.randn(256, 256)
    competitor = busy_on(cpus[0])
    try:
        time.sleep(0.3)
        seen = []
        with threads.sharing_cpus("cpu"):
            end = time.perf_counter() + 4 * threads.INTERVAL + 1
            while time.perf_counter() < end:
                a @ a
                seen.append(threads.adapt())
        assert seen[-1] == 1, sorted(set(seen))
    finally:
        competitor.kill()
        competitor.wait()
    assert torch.get_num_threads() == 2


def test_fit_counts_each_epochs_steps_at_each_thread_count(digits):
    model = models.build("mlp", 10, 1, 0.25, image_size=8)
    recipe = train.Recipe(epochs=2, batch_size=64, schedule="constant")
    history = train.fit(model, digits[0], recipe, progress=False, device="cpu")
    steps = len(train.Loader(digits[0], 64, train=True))
    for epoch in history.epochs:
        assert sum(epoch["threads"].values()) == steps
        assert all(1 <= int(n) <= torch.get_num_threads() for n in epoch["threads"])
